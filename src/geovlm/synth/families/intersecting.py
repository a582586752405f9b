"""Two intersecting lines: vertical angles, linear pairs, a perpendicular, a bisector."""

from __future__ import annotations

import random

from ..exact import Exact
from ..figure import AngleMark, Figure, Given, Segment, angle
from ..geometry import polar
from .base import MULTI_STEP, Construction, Family, deg, letters, nice_int

NAME = "intersecting_lines"


def _lines(rng: random.Random, x: int, names: list[str]) -> dict:
    """AB and CD crossing at O with ∠AOC = x (C above AB, on A's side when x < 90)."""
    a, b, c, d = names[:4]
    return {
        "O": (0.0, 0.0),
        a: polar(rng.uniform(2.5, 3.5), 180),
        b: polar(rng.uniform(2.5, 3.5), 0),
        c: polar(rng.uniform(2.5, 3.5), 180 - x),
        d: polar(rng.uniform(2.5, 3.5), -x),
    }


def _one_step(rng: random.Random) -> Construction:
    names = letters(rng, 4)
    a, b, c, d = names
    x = nice_int(rng, 25, 155)
    while x == 90:
        x = nice_int(rng, 25, 155)
    angles = {  # name -> (points, value)
        f"∠{a}O{c}": ((a, "O", c), x),
        f"∠{b}O{d}": ((b, "O", d), x),
        f"∠{b}O{c}": ((b, "O", c), 180 - x),
        f"∠{a}O{d}": ((a, "O", d), 180 - x),
    }
    vertical = {f"∠{a}O{c}": f"∠{b}O{d}", f"∠{b}O{c}": f"∠{a}O{d}"}
    vertical.update({v: k for k, v in vertical.items()})
    gname = rng.choice(sorted(angles))
    if rng.random() < 0.5:
        kind, tname = "vertical", vertical[gname]
    else:
        kind = "linear_pair"
        tname = rng.choice([n for n in angles if n != gname and n != vertical[gname]])
    gval, tval = angles[gname][1], angles[tname][1]
    steps = (
        [f"{gname} and {tname} are vertical angles, so {tname} = {gname} = {deg(gval)}."]
        if kind == "vertical"
        else [
            f"{gname} and {tname} form a linear pair, so {tname} = 180° - {gname} = "
            f"180° - {deg(gval)} = {deg(tval)}."
        ]
    )
    return Construction(
        kind=kind,
        figure=Figure(_lines(rng, x, names), [a, b, c, d, "O"], [Segment(a, b), Segment(c, d)]),
        setup=f"lines {a}{b} and {c}{d} intersect at point O",
        description=f"two lines {a}{b} and {c}{d} crossing at O",
        givens=[Given(gname, angle(*angles[gname][0]), Exact(gval))],
        target=angle(*angles[tname][0]),
        target_name=tname,
        ask=f"the degree of {tname}",
        value=Exact(tval),
        steps=steps,
        mistakes=[
            Exact(180 - tval),
            Exact(abs(90 - tval)) if tval != 90 and tval != 45 else Exact(tval + 10),
        ],
        upper=180,
    )


def _perpendicular(rng: random.Random) -> Construction:
    names = letters(rng, 5)
    a, b, c, d, e = names
    x = nice_int(rng, 20, 70)
    pts = _lines(rng, x, names)
    pts[e] = polar(rng.uniform(2.5, 3.5), 90)
    fig = Figure(
        pts,
        [a, b, c, d, e, "O"],
        [Segment(a, b), Segment(c, d), Segment("O", e)],
        angles=[AngleMark(e, "O", b, right=True)],
    )
    common = dict(
        figure=fig,
        setup=f"lines {a}{b} and {c}{d} intersect at point O, and O{e} ⊥ {a}{b}",
        description=f"two lines {a}{b} and {c}{d} crossing at O, with O{e} perpendicular to {a}{b}",
        upper=180,
    )
    roll = rng.random()
    if roll < 0.4:
        return Construction(
            kind="perpendicular_complement",
            givens=[Given(f"∠{b}O{d}", angle(b, "O", d), Exact(x))],
            target=angle(c, "O", e),
            target_name=f"∠{c}O{e}",
            ask=f"the degree of ∠{c}O{e}",
            value=Exact(90 - x),
            steps=[
                f"∠{a}O{c} = ∠{b}O{d} = {deg(x)} (vertical angles).",
                f"O{e} ⊥ {a}{b}, so ∠{a}O{e} = 90°, and ∠{c}O{e} = 90° - {deg(x)} = {deg(90 - x)}.",
            ],
            mistakes=[Exact(180 - x), Exact(90 + x)],
            **common,
        )
    y = 90 - x
    if roll < 0.7:
        return Construction(
            kind="perpendicular_vertical",
            givens=[Given(f"∠{c}O{e}", angle(c, "O", e), Exact(y))],
            target=angle(b, "O", d),
            target_name=f"∠{b}O{d}",
            ask=f"the degree of ∠{b}O{d}",
            value=Exact(x),
            steps=[
                f"O{e} ⊥ {a}{b}, so ∠{a}O{c} = 90° - ∠{c}O{e} = 90° - {deg(y)} = {deg(x)}.",
                f"∠{b}O{d} = ∠{a}O{c} = {deg(x)} (vertical angles).",
            ],
            mistakes=[Exact(180 - x), Exact(90 + y)],
            **common,
        )
    return Construction(
        kind="perpendicular_linear_pair",
        givens=[Given(f"∠{c}O{e}", angle(c, "O", e), Exact(y))],
        target=angle(b, "O", c),
        target_name=f"∠{b}O{c}",
        ask=f"the degree of ∠{b}O{c}",
        value=Exact(180 - x),
        steps=[
            f"O{e} ⊥ {a}{b}, so ∠{a}O{c} = 90° - ∠{c}O{e} = 90° - {deg(y)} = {deg(x)}.",
            f"∠{b}O{c} = 180° - ∠{a}O{c} = 180° - {deg(x)} = {deg(180 - x)}.",
        ],
        mistakes=[Exact(x), Exact(180 - y)],
        **common,
    )


def _bisector(rng: random.Random) -> Construction:
    names = letters(rng, 5)
    a, b, c, d, f = names
    x = 2 * rng.randint(15, 75)
    while x == 90:
        x = 2 * rng.randint(15, 75)
    pts = _lines(rng, x, names)
    half = (180 - x) // 2
    pts[f] = polar(rng.uniform(2.5, 3.5), half)
    given_vertical = rng.random() < 0.5
    gname = f"∠{b}O{d}" if given_vertical else f"∠{a}O{c}"
    steps = [f"∠{b}O{c} = 180° - ∠{a}O{c} = 180° - {deg(x)} = {deg(180 - x)}."]
    if given_vertical:
        steps.insert(0, f"∠{a}O{c} = ∠{b}O{d} = {deg(x)} (vertical angles).")
    steps.append(f"O{f} bisects ∠{b}O{c}, so ∠{b}O{f} = {deg(180 - x)} / 2 = {deg(half)}.")
    far = rng.random() < 0.5
    if far:
        steps.append(f"∠{d}O{f} = ∠{b}O{d} + ∠{b}O{f} = {deg(x)} + {deg(half)} = {deg(x + half)}.")
    return Construction(
        kind="bisector_far" if far else "bisector",
        figure=Figure(
            pts,
            [a, b, c, d, f, "O"],
            [Segment(a, b), Segment(c, d), Segment("O", f)],
            angles=[AngleMark(b, "O", f, arcs=2), AngleMark(f, "O", c, arcs=2)],
        ),
        setup=f"lines {a}{b} and {c}{d} intersect at point O, and O{f} bisects ∠{b}O{c}",
        description=f"two lines {a}{b} and {c}{d} crossing at O, with the bisector O{f} of ∠{b}O{c}",
        givens=[Given(gname, angle(b, "O", d) if given_vertical else angle(a, "O", c), Exact(x))],
        target=angle(d, "O", f) if far else angle(b, "O", f),
        target_name=f"∠{d}O{f}" if far else f"∠{b}O{f}",
        ask=f"the degree of ∠{d}O{f}" if far else f"the degree of ∠{b}O{f}",
        value=Exact(x + half if far else half),
        steps=steps,
        mistakes=[Exact(180 - x), Exact(x // 2)] if not far else [Exact(180 - half), Exact(half)],
        upper=180,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return rng.choice([_perpendicular, _bisector])(rng)
    return _one_step(rng)


FAMILY = Family(NAME, "vertical and supplementary angles", build)
