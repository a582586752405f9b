"""Isosceles and equilateral triangles: base and apex angles, exterior angles, heights."""

from __future__ import annotations

import math
import random

from ..exact import Exact
from ..figure import AngleMark, Figure, Given, ParallelMark, Segment, Tick, angle, length, perimeter
from ..geometry import extend, lerp
from .base import MULTI_STEP, Construction, Family, cm, deg, letters, nice_int, triangle_word

NAME = "isosceles"


def _isosceles(rng: random.Random, base_deg: float, names: list[str], half_base: float | None = None) -> dict:
    """Apex on top, base BC on the x-axis; half_base fixes the scale when lengths are given."""
    a, b, c = names[:3]
    w = half_base if half_base is not None else rng.uniform(2.5, 4.0)
    return {a: (0.0, w * math.tan(math.radians(base_deg))), b: (-w, 0.0), c: (w, 0.0)}


def _equal_sides(rng: random.Random) -> tuple[list[str], str, str]:
    """Five point names (apex, base, base, spare, spare), the triangle's name and the setup."""
    names = letters(rng, 5)
    a, b, c = names[:3]
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    return names, tri, f"in {tri}, {a}{b} = {a}{c}"


def _base_or_apex(rng: random.Random) -> Construction:
    (a, b, c, _, _), tri, setup = _equal_sides(rng)
    fig_ticks = [Tick(a, b), Tick(a, c)]
    segs = [Segment(a, b), Segment(b, c), Segment(c, a)]
    if rng.random() < 0.5:
        apex = 2 * rng.randint(10, 70)
        base = (180 - apex) // 2
        return Construction(
            kind="base_from_apex",
            figure=Figure(_isosceles(rng, base, [a, b, c]), [a, b, c], segs, ticks=fig_ticks),
            setup=setup,
            description=f"isosceles triangle {a}{b}{c} with {a}{b} = {a}{c}",
            givens=[Given(f"∠{a}", angle(b, a, c), Exact(apex))],
            target=angle(a, b, c),
            target_name=f"∠{b}",
            ask=f"the degree of ∠{b}",
            value=Exact(base),
            steps=[
                f"{a}{b} = {a}{c}, so ∠{b} = ∠{c}.",
                f"∠{b} = (180° - ∠{a}) / 2 = (180° - {deg(apex)}) / 2 = {deg(base)}.",
            ],
            mistakes=[Exact(180 - apex), Exact(apex)],
            upper=90,
        )
    base = nice_int(rng, 25, 80)
    apex = 180 - 2 * base
    return Construction(
        kind="apex_from_base",
        figure=Figure(_isosceles(rng, base, [a, b, c]), [a, b, c], segs, ticks=fig_ticks),
        setup=setup,
        description=f"isosceles triangle {a}{b}{c} with {a}{b} = {a}{c}",
        givens=[Given(f"∠{b}", angle(a, b, c), Exact(base))],
        target=angle(b, a, c),
        target_name=f"∠{a}",
        ask=f"the degree of ∠{a}",
        value=Exact(apex),
        steps=[
            f"{a}{b} = {a}{c}, so ∠{c} = ∠{b} = {deg(base)}.",
            f"∠{a} = 180° - ∠{b} - ∠{c} = 180° - 2 × {deg(base)} = {deg(apex)}.",
        ],
        mistakes=[Exact(180 - base), Exact(90 - base) if base < 90 else Exact(apex + 10)],
        upper=180,
    )


def _equilateral_perimeter(rng: random.Random) -> Construction:
    a, b, c = letters(rng, 3)
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    s = rng.randint(2, 15)
    return Construction(
        kind="equilateral_perimeter",
        figure=Figure(
            _isosceles(rng, 60, [a, b, c], half_base=s / 2),
            [a, b, c],
            [Segment(a, b), Segment(b, c), Segment(c, a)],
            ticks=[Tick(a, b), Tick(b, c), Tick(c, a)],
        ),
        setup=f"{tri} is equilateral",
        description=f"equilateral triangle {a}{b}{c}",
        givens=[Given(f"{a}{b}", length(a, b), Exact(s))],
        target=perimeter(a, b, c),
        target_name=f"the perimeter of {tri}",
        ask=f"the perimeter of {tri}",
        value=Exact(3 * s),
        steps=[
            f"All sides of an equilateral triangle are equal, so the perimeter is 3 × {cm(s)} = {cm(3 * s)}."
        ],
        mistakes=[Exact(2 * s), Exact(4 * s)],
        mark_target=False,
    )


def _exterior(rng: random.Random) -> Construction:
    (a, b, c, d, _), tri, setup = _equal_sides(rng)
    apex = 2 * rng.randint(10, 70)
    base = (180 - apex) // 2
    pts = _isosceles(rng, base, [a, b, c])
    pts[d] = extend(pts[b], pts[c], rng.uniform(2.0, 3.0))
    return Construction(
        kind="isosceles_exterior",
        figure=Figure(
            pts, [a, b, c, d], [Segment(a, b), Segment(b, d), Segment(c, a)], ticks=[Tick(a, b), Tick(a, c)]
        ),
        setup=f"{setup}, point {d} is on the extension of {b}{c}",
        description=f"isosceles triangle {a}{b}{c} (with {a}{b} = {a}{c}) with side {b}{c} extended to {d}",
        givens=[Given(f"∠{a}", angle(b, a, c), Exact(apex))],
        target=angle(a, c, d),
        target_name=f"∠{a}{c}{d}",
        ask=f"the degree of ∠{a}{c}{d}",
        value=Exact(180 - base),
        steps=[
            f"{a}{b} = {a}{c}, so ∠{a}{c}{b} = ∠{b} = (180° - {deg(apex)}) / 2 = {deg(base)}.",
            f"∠{a}{c}{d} = 180° - ∠{a}{c}{b} = 180° - {deg(base)} = {deg(180 - base)}.",
        ],
        mistakes=[Exact(base), Exact(180 - apex)],
        upper=180,
    )


def _parallel(rng: random.Random) -> Construction:
    (a, b, c, d, e), tri, setup = _equal_sides(rng)
    apex = 2 * rng.randint(12, 60)
    base = (180 - apex) // 2
    pts = _isosceles(rng, base, [a, b, c])
    t = rng.uniform(0.4, 0.65)
    pts[d], pts[e] = lerp(pts[a], pts[b], t), lerp(pts[a], pts[c], t)
    first = f"{a}{b} = {a}{c}, so ∠{b} = ∠{a}{c}{b} = (180° - {deg(apex)}) / 2 = {deg(base)}."
    second = f"{d}{e} ∥ {b}{c}, so ∠{a}{d}{e} = ∠{b} = {deg(base)} (corresponding angles)."
    inner = rng.random() < 0.5
    return Construction(
        kind="isosceles_parallel",
        figure=Figure(
            pts,
            [a, b, c, d, e],
            [Segment(a, b), Segment(b, c), Segment(c, a), Segment(d, e)],
            ticks=[Tick(a, b), Tick(a, c)],
            parallels=[ParallelMark(d, e), ParallelMark(b, c)],
        ),
        setup=f"{setup}, {d} is on {a}{b}, {e} is on {a}{c} and {d}{e} ∥ {b}{c}",
        description=f"isosceles triangle {a}{b}{c} with {a}{b} = {a}{c} and a segment {d}{e} parallel to {b}{c}",
        givens=[Given(f"∠{a}", angle(b, a, c), Exact(apex))],
        target=angle(a, d, e) if inner else angle(b, d, e),
        target_name=f"∠{a}{d}{e}" if inner else f"∠{b}{d}{e}",
        ask=f"the degree of ∠{a}{d}{e}" if inner else f"the degree of ∠{b}{d}{e}",
        value=Exact(base if inner else 180 - base),
        steps=[first, second]
        if inner
        else [first, second, f"∠{b}{d}{e} = 180° - {deg(base)} = {deg(180 - base)}."],
        mistakes=[Exact(180 - base if inner else base), Exact(apex)],
        upper=180,
    )


def _equilateral_height(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    s = rng.randint(2, 14)
    pts = _isosceles(rng, 60, [a, b, c], half_base=s / 2)
    pts[d] = lerp(pts[b], pts[c], 0.5)
    height = Exact(s) * Exact.sqrt(3) / 2
    return Construction(
        kind="equilateral_height",
        figure=Figure(
            pts,
            [a, b, c, d],
            [Segment(a, b), Segment(b, c), Segment(c, a), Segment(a, d)],
            angles=[AngleMark(a, d, c, right=True)],
            ticks=[Tick(a, b), Tick(b, c), Tick(c, a)],
        ),
        setup=f"{tri} is equilateral and {a}{d} ⊥ {b}{c} at {d}",
        description=f"equilateral triangle {a}{b}{c} with the height {a}{d}",
        givens=[Given(f"{a}{b}", length(a, b), Exact(s))],
        target=length(a, d),
        target_name=f"{a}{d}",
        ask=f"the length of {a}{d}",
        value=height,
        steps=[
            f"In an equilateral triangle the height {a}{d} bisects {b}{c}, so {b}{d} = {cm(s)} / 2 = {cm(Exact(s) / 2)}.",
            f"In right △{a}{b}{d}, {a}{d} = √({a}{b}² - {b}{d}²) = √({s}² - ({Exact(s) / 2})²) = {cm(height)}.",
        ],
        mistakes=[Exact(s) * Exact.sqrt(3), Exact(s) * Exact.sqrt(5) / 2],
        mark_target=False,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return rng.choice([_exterior, _parallel, _equilateral_height])(rng)
    return _equilateral_perimeter(rng) if rng.random() < 0.25 else _base_or_apex(rng)


FAMILY = Family(NAME, "isosceles and equilateral triangles", build)
