"""Triangle angle sum: the third angle, exterior angles, bisectors and altitudes."""

from __future__ import annotations

import random

from ..exact import Exact
from ..figure import AngleMark, Figure, Given, Segment, angle
from ..geometry import add, extend, foot, intersect, sub, triangle_from_angles, unit
from .base import MULTI_STEP, Construction, Family, deg, letters, nice_int, triangle_word

NAME = "triangle_angle_sum"


def _triangle(rng: random.Random, a_deg: int, b_deg: int, names: list[str]) -> tuple[dict, str]:
    a, b, c = names[:3]
    pa, pb, pc = triangle_from_angles(a_deg, b_deg, base=rng.uniform(5.0, 8.0))
    return {a: pa, b: pb, c: pc}, f"{triangle_word(rng)}{a}{b}{c}"


def _third_angle(rng: random.Random) -> Construction:
    a, b, c = letters(rng, 3)
    vc = nice_int(rng, 25, 120)
    va = nice_int(rng, 25, 155 - vc)
    vb = 180 - va - vc
    pts, tri = _triangle(rng, va, vb, [a, b, c])
    return Construction(
        kind="third_angle",
        figure=Figure(pts, [a, b, c], [Segment(a, b), Segment(b, c), Segment(c, a)]),
        setup=f"in {tri}",
        description=f"triangle {a}{b}{c}",
        givens=[Given(f"∠{a}", angle(b, a, c), Exact(va)), Given(f"∠{b}", angle(a, b, c), Exact(vb))],
        target=angle(a, c, b),
        target_name=f"∠{c}",
        ask=f"the degree of ∠{c}",
        value=Exact(vc),
        steps=[
            f"In {tri}, ∠{a} + ∠{b} + ∠{c} = 180°.",
            f"So ∠{c} = 180° - {deg(va)} - {deg(vb)} = {deg(vc)}.",
        ],
        mistakes=[Exact(va + vb), Exact(180 - va)],
        upper=180,
    )


def _exterior(rng: random.Random, find_exterior: bool) -> Construction:
    a, b, c, d = letters(rng, 4)
    if find_exterior:
        ext = nice_int(rng, 60, 150)
        va = nice_int(rng, 25, ext - 25)
    else:
        vb = nice_int(rng, 25, 100)
        va = nice_int(rng, 25, min(120, 155 - vb))
        ext = va + vb
    vb = ext - va
    pts, tri = _triangle(rng, va, vb, [a, b, c])
    pts[d] = extend(pts[b], pts[c], rng.uniform(2.0, 3.5))
    fig = Figure(pts, [a, b, c, d], [Segment(a, b), Segment(b, d), Segment(c, a)])
    setup = f"in {tri}, point {d} is on the extension of {b}{c}"
    rule = f"∠{a}{c}{d} is an exterior angle of {tri}, so ∠{a}{c}{d} = ∠{a} + ∠{b}"
    if find_exterior:
        return Construction(
            kind="exterior_angle",
            figure=fig,
            setup=setup,
            description=f"triangle {a}{b}{c} with side {b}{c} extended to {d}",
            givens=[Given(f"∠{a}", angle(b, a, c), Exact(va)), Given(f"∠{b}", angle(a, b, c), Exact(vb))],
            target=angle(a, c, d),
            target_name=f"∠{a}{c}{d}",
            ask=f"the degree of ∠{a}{c}{d}",
            value=Exact(ext),
            steps=[f"{rule} = {deg(va)} + {deg(vb)} = {deg(ext)}."],
            mistakes=[Exact(180 - ext), Exact(abs(va - vb)) if va != vb else Exact(ext + 10)],
            upper=180,
        )
    return Construction(
        kind="exterior_to_interior",
        figure=fig,
        setup=setup,
        description=f"triangle {a}{b}{c} with side {b}{c} extended to {d}",
        givens=[Given(f"∠{a}{c}{d}", angle(a, c, d), Exact(ext)), Given(f"∠{a}", angle(b, a, c), Exact(va))],
        target=angle(a, b, c),
        target_name=f"∠{b}",
        ask=f"the degree of ∠{b}",
        value=Exact(vb),
        steps=[f"{rule}.", f"So ∠{b} = ∠{a}{c}{d} - ∠{a} = {deg(ext)} - {deg(va)} = {deg(vb)}."],
        mistakes=[Exact(180 - ext), Exact(180 - ext - va) if 180 - ext - va > 0 else Exact(vb + 20)],
        upper=180,
    )


def _exterior_then_sum(rng: random.Random) -> Construction:
    a, b, c, e = letters(rng, 4)
    vc = nice_int(rng, 25, 110)
    va = nice_int(rng, 25, 155 - vc)
    vb = 180 - va - vc
    pts, tri = _triangle(rng, va, vb, [a, b, c])
    pts[e] = extend(pts[c], pts[b], rng.uniform(2.0, 3.5))
    return Construction(
        kind="exterior_then_sum",
        figure=Figure(pts, [a, b, c, e], [Segment(e, c), Segment(c, a), Segment(a, b)]),
        setup=f"in {tri}, point {e} is on the extension of {c}{b}",
        description=f"triangle {a}{b}{c} with side {c}{b} extended to {e}",
        givens=[
            Given(f"∠{a}{b}{e}", angle(a, b, e), Exact(180 - vb)),
            Given(f"∠{a}", angle(b, a, c), Exact(va)),
        ],
        target=angle(a, c, b),
        target_name=f"∠{c}",
        ask=f"the degree of ∠{c}",
        value=Exact(vc),
        steps=[
            f"∠{a}{b}{c} and ∠{a}{b}{e} are supplementary, so ∠{a}{b}{c} = 180° - {deg(180 - vb)} = {deg(vb)}.",
            f"In {tri}, ∠{c} = 180° - ∠{a} - ∠{a}{b}{c} = 180° - {deg(va)} - {deg(vb)} = {deg(vc)}.",
        ],
        mistakes=[Exact(180 - vb - va) if 180 - vb - va != vc else Exact(vc + 10), Exact(180 - vc)],
        upper=180,
    )


def _bisector(rng: random.Random) -> Construction:
    a, b, c, d = letters(rng, 4)
    vb = 2 * rng.randint(20, 60)
    va = nice_int(rng, 25, 155 - vb)
    vc = 180 - va - vb
    pts, tri = _triangle(rng, va, vb, [a, b, c])
    pa, pb, pc = pts[a], pts[b], pts[c]
    pts[d] = intersect(pa, pc, pb, add(pb, add(unit(sub(pa, pb)), unit(sub(pc, pb)))))
    fig = Figure(
        pts,
        [a, b, c, d],
        [Segment(a, b), Segment(b, c), Segment(c, a), Segment(b, d)],
        angles=[AngleMark(a, b, d, arcs=2), AngleMark(d, b, c, arcs=2)],
    )
    half = vb // 2
    steps = [
        f"In {tri}, ∠{a}{b}{c} = 180° - ∠{a} - ∠{c} = 180° - {deg(va)} - {deg(vc)} = {deg(vb)}.",
        f"{b}{d} bisects ∠{a}{b}{c}, so ∠{a}{b}{d} = ∠{a}{b}{c} / 2 = {deg(half)}.",
    ]
    common = dict(
        figure=fig,
        setup=f"in {tri}, {b}{d} bisects ∠{a}{b}{c} and meets {a}{c} at {d}",
        description=f"triangle {a}{b}{c} with the bisector {b}{d} of ∠{a}{b}{c}",
        givens=[Given(f"∠{a}", angle(b, a, c), Exact(va)), Given(f"∠{c}", angle(a, c, b), Exact(vc))],
        upper=180,
    )
    if rng.random() < 0.5:
        return Construction(
            kind="bisector",
            target=angle(a, b, d),
            target_name=f"∠{a}{b}{d}",
            ask=f"the degree of ∠{a}{b}{d}",
            value=Exact(half),
            steps=steps,
            mistakes=[Exact(vb), Exact(90 - half)],
            **common,
        )
    return Construction(
        kind="bisector_exterior",
        target=angle(b, d, c),
        target_name=f"∠{b}{d}{c}",
        ask=f"the degree of ∠{b}{d}{c}",
        value=Exact(va + half),
        steps=[
            *steps,
            f"∠{b}{d}{c} is an exterior angle of △{a}{b}{d}, so ∠{b}{d}{c} = ∠{a} + ∠{a}{b}{d} = "
            f"{deg(va)} + {deg(half)} = {deg(va + half)}.",
        ],
        mistakes=[Exact(180 - va - half), Exact(va + vb)],
        **common,
    )


def _altitude_bisector(rng: random.Random) -> Construction:
    # The classic: AD ⊥ BC and AE bisects ∠BAC, so ∠DAE = (∠B - ∠C) / 2.
    a, b, c, d, e = letters(rng, 5)
    vc = rng.randint(25, 65)
    vb = vc + 2 * rng.randint(5, min(20, (85 - vc) // 2))
    va = 180 - vb - vc
    pb, pc, pa = triangle_from_angles(vb, vc, base=rng.uniform(6.0, 8.0))
    pd = foot(pa, pb, pc)
    pe = intersect(pb, pc, pa, add(pa, add(unit(sub(pb, pa)), unit(sub(pc, pa)))))
    pts = {a: pa, b: pb, c: pc, d: pd, e: pe}
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    bae = va // 2  # va = 180 - 2·vc - 2k is even
    bad = 90 - vb
    res = (vb - vc) // 2
    return Construction(
        kind="altitude_bisector",
        figure=Figure(
            pts,
            [a, b, c, d, e],
            [Segment(a, b), Segment(b, c), Segment(c, a), Segment(a, d), Segment(a, e)],
            angles=[AngleMark(a, d, b, right=True)],
        ),
        setup=f"in {tri}, {a}{d} ⊥ {b}{c} at {d} and {a}{e} bisects ∠{b}{a}{c}",
        description=f"triangle {a}{b}{c} with the altitude {a}{d} and the angle bisector {a}{e}",
        givens=[Given(f"∠{b}", angle(a, b, c), Exact(vb)), Given(f"∠{c}", angle(a, c, b), Exact(vc))],
        target=angle(d, a, e),
        target_name=f"∠{d}{a}{e}",
        ask=f"the degree of ∠{d}{a}{e}",
        value=Exact(res),
        steps=[
            f"In {tri}, ∠{b}{a}{c} = 180° - {deg(vb)} - {deg(vc)} = {deg(va)}.",
            f"{a}{e} bisects ∠{b}{a}{c}, so ∠{b}{a}{e} = ∠{b}{a}{c} / 2 = {deg(bae)}.",
            f"{a}{d} ⊥ {b}{c}, so ∠{b}{a}{d} = 90° - ∠{b} = 90° - {deg(vb)} = {deg(bad)}.",
            f"∠{d}{a}{e} = ∠{b}{a}{e} - ∠{b}{a}{d} = {deg(bae)} - {deg(bad)} = {deg(res)}.",
        ],
        mistakes=[Exact(vb - vc), Exact(bad)],
        upper=180,
        mark_target=False,  # the angle is thin; a "?" there would crowd the altitude
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return rng.choice([_exterior_then_sum, _bisector, _altitude_bisector])(rng)
    return rng.choice([_third_angle, lambda r: _exterior(r, True), lambda r: _exterior(r, False)])(rng)


FAMILY = Family(NAME, "triangle angle sum", build)
