"""Similar triangles cut off by a line parallel to a side: side ratios, lengths, area ratios."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from ..exact import Exact
from ..figure import Figure, Given, Measure, ParallelMark, Segment, area, length
from ..geometry import lerp, triangle_from_sides
from .base import MULTI_STEP, Construction, Family, cm, letters, triangle_word

NAME = "similar_triangles"


def _sides(rng: random.Random, ab: float, ac: float) -> float:
    """A third side BC that makes a well-shaped triangle with AB and AC."""
    lo, hi = abs(ab - ac) + 0.35 * min(ab, ac), ab + ac - 0.35 * min(ab, ac)
    return rng.uniform(lo, hi)


def _split(rng: random.Random, top: int) -> tuple[int, int]:
    """AD and DB with AD / AB between 1/4 and 3/4: a cut too near A or B is hard to see."""
    while True:
        ad, db = rng.randint(1, top), rng.randint(1, top)
        if 1 / 3 <= ad / db <= 3:
            return ad, db


def well_shaped(bc: float, ac: float, ab: float, least: float = 25.0) -> bool:
    """Whether the triangle with these sides exists and has no angle under `least` degrees."""
    sides = sorted((bc, ac, ab))
    if sides[0] + sides[1] <= sides[2]:
        return False
    for x, y, z in ((bc, ac, ab), (ac, ab, bc), (ab, bc, ac)):
        cos = (y * y + z * z - x * x) / (2 * y * z)
        if math.degrees(math.acos(max(-1.0, min(1.0, cos)))) < least:
            return False
    return True


def _setup(rng: random.Random, ad: int, db: int, ae: Fraction, bc: float | None = None):
    a, b, c, d, e = letters(rng, 5)
    k = Fraction(ad, ad + db)  # callers keep k within [1/4, 3/4] (see _split) so DE stays visible
    ac = ae / k
    ab = ad + db
    if bc is None:
        for _ in range(50):
            bc = _sides(rng, ab, float(ac))
            if well_shaped(bc, float(ac), ab):
                break
    pa, pb, pc = triangle_from_sides(bc, float(ac), ab)
    pts = {a: pa, b: pb, c: pc}
    pts[d], pts[e] = lerp(pts[a], pts[b], float(k)), lerp(pts[a], pts[c], float(k))
    tri = f"{triangle_word(rng)}{a}{b}{c}"
    fig = Figure(
        pts,
        [a, b, c, d, e],
        [Segment(a, b), Segment(b, c), Segment(c, a), Segment(d, e)],
        parallels=[ParallelMark(d, e), ParallelMark(b, c)] if rng.random() < 0.5 else [],
    )
    return (a, b, c, d, e), fig, tri, k


def _find_ec(rng: random.Random) -> Construction:
    while True:
        (ad, db), ae = _split(rng, 9), Fraction(rng.randint(2, 12))
        ec = ae * db / ad
        ac = float(ae + ec)
        if not 0.55 < ac / (ad + db) < 1.8:
            continue  # AB and AC of very different lengths make a sliver
        if ec.denominator == 1 or (ec.denominator <= 4 and rng.random() < 0.25):
            break
    (a, b, c, d, e), fig, tri, _ = _setup(rng, ad, db, ae)
    value = Exact(ec)
    return Construction(
        kind="side_split",
        figure=fig,
        setup=f"in {tri}, {d} is on {a}{b}, {e} is on {a}{c}, and {d}{e} ∥ {b}{c}",
        description=f"triangle {a}{b}{c} with a segment {d}{e} parallel to {b}{c}",
        givens=[
            Given(f"{a}{d}", length(a, d), Exact(ad)),
            Given(f"{d}{b}", length(d, b), Exact(db)),
            Given(f"{a}{e}", length(a, e), Exact(ae)),
        ],
        target=length(e, c),
        target_name=f"{e}{c}",
        ask=f"the length of {e}{c}",
        value=value,
        steps=[
            f"{d}{e} ∥ {b}{c}, so {a}{d} / {d}{b} = {a}{e} / {e}{c}.",
            f"So {e}{c} = {a}{e} × {d}{b} / {a}{d} = {ae} × {db} / {ad} = {cm(value)}.",
        ],
        mistakes=[Exact(ae * ad) / db, Exact(ae * (ad + db)) / ad],
        mark_target=False,
    )


def _find_de(rng: random.Random, multi: bool) -> Construction:
    while True:
        (ad, db), ae = _split(rng, 8), rng.randint(2, 10)
        ab = ad + db
        ac = ae * ab / ad
        # BC is given, so it must be a whole number that closes a well-shaped triangle.
        lo, hi = math.floor(abs(ab - ac) + 0.3 * min(ab, ac)) + 1, math.ceil(ab + ac - 0.3 * min(ab, ac)) - 1
        if lo > hi:
            continue
        bc = rng.randint(lo, hi)
        de = Fraction(bc * ad, ab)
        if not well_shaped(bc, ac, ab):
            continue
        if de.denominator <= 2 or (de.denominator <= 4 and rng.random() < 0.3):
            break
    (a, b, c, d, e), fig, tri, k = _setup(rng, ad, db, Fraction(ae), bc=float(bc))
    value = Exact(de)
    givens = [Given(f"{a}{d}", length(a, d), Exact(ad))]
    givens.append(
        Given(f"{d}{b}", length(d, b), Exact(db)) if multi else Given(f"{a}{b}", length(a, b), Exact(ab))
    )
    givens.append(Given(f"{b}{c}", length(b, c), Exact(bc)))
    steps = [f"{a}{b} = {a}{d} + {d}{b} = {ad} + {db} = {cm(ab)}."] if multi else []
    steps += [
        f"{d}{e} ∥ {b}{c}, so △{a}{d}{e} ∽ △{a}{b}{c} and {d}{e} / {b}{c} = {a}{d} / {a}{b}.",
        f"So {d}{e} = {b}{c} × {a}{d} / {a}{b} = {bc} × {ad} / {ab} = {cm(value)}.",
    ]
    return Construction(
        kind="parallel_side_from_parts" if multi else "parallel_side",
        figure=fig,
        setup=f"in {tri}, {d} is on {a}{b}, {e} is on {a}{c}, and {d}{e} ∥ {b}{c}",
        description=f"triangle {a}{b}{c} with a segment {d}{e} parallel to {b}{c}",
        givens=givens,
        target=length(d, e),
        target_name=f"{d}{e}",
        ask=f"the length of {d}{e}",
        value=value,
        steps=steps,
        mistakes=[Exact(Fraction(bc * ad, db)), Exact(Fraction(bc * db, ab))],
        mark_target=False,
    )


def _ratio(rng: random.Random, squared: bool) -> Construction:
    ad, db = _split(rng, 7)
    # AE only shapes the drawing here: pick it so that AC is comparable to AB.
    ae = Fraction(ad) * Fraction(rng.randint(6, 14), 10)
    (a, b, c, d, e), fig, tri, k = _setup(rng, ad, db, ae)
    ab = ad + db
    if squared:
        value = Exact(k * k)
        return Construction(
            kind="area_ratio",
            figure=fig,
            setup=f"in {tri}, {d} is on {a}{b}, {e} is on {a}{c}, and {d}{e} ∥ {b}{c}",
            description=f"triangle {a}{b}{c} with a segment {d}{e} parallel to {b}{c}",
            givens=[Given(f"{a}{d}", length(a, d), Exact(ad)), Given(f"{d}{b}", length(d, b), Exact(db))],
            target=Measure("quotient", parts=(area(a, d, e), area(a, b, c))),
            target_name=f"S△{a}{d}{e} : S△{a}{b}{c}",
            ask=f"the value of S△{a}{d}{e} / S△{a}{b}{c}",
            value=value,
            steps=[
                f"{a}{b} = {a}{d} + {d}{b} = {ad} + {db} = {ab}, so {a}{d} / {a}{b} = {Exact(k)}.",
                f"{d}{e} ∥ {b}{c}, so △{a}{d}{e} ∽ △{a}{b}{c}.",
                f"The ratio of their areas is the square of the ratio of sides: ({Exact(k)})² = {value}.",
            ],
            mistakes=[Exact(k), Exact(Fraction(ad * ad, db * db)) if ad != db else Exact(k) / 2],
            upper=1,
            mark_target=False,
        )
    value = Exact(k)
    return Construction(
        kind="side_ratio",
        figure=fig,
        setup=f"in {tri}, {d} is on {a}{b}, {e} is on {a}{c}, and {d}{e} ∥ {b}{c}",
        description=f"triangle {a}{b}{c} with a segment {d}{e} parallel to {b}{c}",
        givens=[Given(f"{a}{d}", length(a, d), Exact(ad)), Given(f"{d}{b}", length(d, b), Exact(db))],
        target=Measure("ratio", (a, e, a, c)),
        target_name=f"{a}{e} : {a}{c}",
        ask=f"the value of {a}{e} / {a}{c}",
        value=value,
        steps=[
            f"{d}{e} ∥ {b}{c}, so {a}{e} / {a}{c} = {a}{d} / {a}{b}.",
            f"{a}{b} = {ad} + {db} = {ab}, so {a}{e} / {a}{c} = {ad} / {ab} = {value}.",
        ],
        mistakes=[Exact(Fraction(ad, db)), Exact(Fraction(db, ab))],
        upper=1,
        mark_target=False,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return rng.choice([lambda r: _find_de(r, True), lambda r: _ratio(r, True)])(rng)
    return rng.choice([_find_ec, lambda r: _find_de(r, False), lambda r: _ratio(r, False)])(rng)


FAMILY = Family(NAME, "similar triangles (parallel line)", build)
