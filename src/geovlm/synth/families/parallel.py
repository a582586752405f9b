"""Parallel lines cut by a transversal: corresponding, alternate and co-interior angles."""

from __future__ import annotations

import math
import random

from ..exact import Exact
from ..figure import AngleMark, Figure, Given, ParallelMark, Segment, angle
from ..geometry import Point, polar, sub
from .base import MULTI_STEP, Construction, Family, deg, letters, nice_int

NAME = "parallel_lines"

# The four angles at each crossing, by position relative to the transversal (up = towards E).
# At G (on the upper line AB) and at H (on the lower line CD); UR and LL equal x, UL and LR 180 - x.
POSITIONS = ("UR", "UL", "LL", "LR")
INTERIOR = {"G": ("LL", "LR"), "H": ("UR", "UL")}
RIGHT_SIDE = {"UR", "LR"}


def _layout(rng: random.Random, x: int, names: list[str]) -> dict[str, Point]:
    a, b, c, d, e, f, g, h = names[:8]
    gap = rng.uniform(2.6, 3.6)
    pg = (0.0, gap)
    ph = sub(pg, polar(gap / math.sin(math.radians(x)), x))
    left, right = min(pg[0], ph[0]), max(pg[0], ph[0])
    return {
        a: (left - rng.uniform(1.6, 2.6), gap),
        b: (right + rng.uniform(1.6, 2.6), gap),
        c: (left - rng.uniform(1.6, 2.6), 0.0),
        d: (right + rng.uniform(1.6, 2.6), 0.0),
        e: polar(rng.uniform(1.3, 2.0), x, pg),
        f: polar(rng.uniform(1.3, 2.0), x + 180, ph),
        g: pg,
        h: ph,
    }


def _angle_at(names: list[str], at: str, pos: str) -> tuple[tuple[str, str, str], str]:
    """The angle at crossing `at` ("G" or "H") in position `pos`: its points and its name."""
    a, b, c, d, e, f, g, h = names[:8]
    if at == "G":
        pts = {"UR": (e, g, b), "UL": (a, g, e), "LL": (a, g, h), "LR": (b, g, h)}[pos]
    else:
        pts = {"UR": (g, h, d), "UL": (c, h, g), "LL": (c, h, f), "LR": (d, h, f)}[pos]
    return pts, "∠" + "".join(pts)


def _value(x: int, pos: str) -> int:
    return x if pos in ("UR", "LL") else 180 - x


def _relation(pos_g: str, pos_h: str) -> str | None:
    """The textbook name of the pair (angle at G, angle at H), or None for a two-step pair."""
    if pos_g == pos_h:
        return "corresponding"
    inner_g, inner_h = pos_g in INTERIOR["G"], pos_h in INTERIOR["H"]
    same_side = (pos_g in RIGHT_SIDE) == (pos_h in RIGHT_SIDE)
    if inner_g and inner_h:
        return "co-interior" if same_side else "alternate interior"
    return None


def _transversal(rng: random.Random, one_step: bool) -> Construction:
    names = letters(rng, 8)
    a, b, c, d, e, f, g, h = names
    x = nice_int(rng, 35, 145)
    while x == 90:
        x = nice_int(rng, 35, 145)
    pairs = [(pg, ph) for pg in POSITIONS for ph in POSITIONS if (_relation(pg, ph) is not None) == one_step]
    pos_g, pos_h = rng.choice(pairs)
    relation = _relation(pos_g, pos_h)
    given_at_g = rng.random() < 0.5
    (gp, gname), (tp, tname) = _angle_at(names, "G", pos_g), _angle_at(names, "H", pos_h)
    gval, tval = _value(x, pos_g), _value(x, pos_h)
    if not given_at_g:
        gp, gname, tp, tname, gval, tval = tp, tname, gp, gname, tval, gval
    if relation is not None:
        if gval == tval:
            steps = [f"{a}{b} ∥ {c}{d}, so {tname} = {gname} = {deg(gval)} ({relation} angles)."]
        else:
            steps = [
                f"{a}{b} ∥ {c}{d}, so {tname} + {gname} = 180° ({relation} angles).",
                f"{tname} = 180° - {deg(gval)} = {deg(tval)}.",
            ]
        kind = relation.replace(" ", "_").replace("-", "_")
    else:
        # Move the given angle to the target's position at its own crossing, then across.
        at_given = "G" if given_at_g else "H"
        pos_target = pos_h if given_at_g else pos_g
        mid_pts, mid_name = _angle_at(names, at_given, pos_target)
        if mid_name == gname:
            raise AssertionError("a two-step pair has different positions")
        same = _value(x, pos_target) == gval
        first = (
            f"{mid_name} = {gname} = {deg(gval)} (vertical angles)."
            if same
            else f"{mid_name} = 180° - {gname} = 180° - {deg(gval)} = {deg(180 - gval)} (a linear pair)."
        )
        steps = [first, f"{a}{b} ∥ {c}{d}, so {tname} = {mid_name} = {deg(tval)} (corresponding angles)."]
        kind = "two_step_pair"
    show_parallel = rng.random() < 0.6
    return Construction(
        kind=kind,
        figure=Figure(
            _layout(rng, x, names),
            names,
            [Segment(a, b), Segment(c, d), Segment(e, f)],
            parallels=[ParallelMark(a, b), ParallelMark(c, d)] if show_parallel else [],
        ),
        setup=f"{a}{b} ∥ {c}{d}, and line {e}{f} meets {a}{b} at {g} and {c}{d} at {h}",
        description=f"two parallel lines {a}{b} and {c}{d} cut by the line {e}{f} at {g} and {h}",
        givens=[Given(gname, angle(*gp), Exact(gval))],
        target=angle(*tp),
        target_name=tname,
        ask=f"the degree of {tname}",
        value=Exact(tval),
        steps=steps,
        mistakes=[
            Exact(180 - tval),
            Exact(abs(90 - tval)) if tval != 90 and tval != 45 else Exact(tval + 15),
        ],
        upper=180,
    )


def _zigzag(rng: random.Random) -> Construction:
    # E between two parallels: ∠AEC = ∠BAE + ∠DCE (draw EF ∥ AB through E).
    a, b, c, d, e, f = letters(rng, 6)
    alpha = nice_int(rng, 25, 75)
    gamma = nice_int(rng, 25, min(75, 140 - alpha))
    gap = rng.uniform(3.0, 4.0)
    pe = (0.0, gap * rng.uniform(0.4, 0.6))
    pa = sub(pe, polar((gap - pe[1]) / math.sin(math.radians(alpha)), -alpha))
    pc = sub(pe, polar(pe[1] / math.sin(math.radians(gamma)), gamma))
    pts = {
        a: pa,
        b: (max(pa[0], pe[0]) + rng.uniform(2.0, 3.0), gap),
        c: pc,
        d: (max(pc[0], pe[0]) + rng.uniform(2.0, 3.0), 0.0),
        e: pe,
    }
    total = alpha + gamma
    return Construction(
        kind="zigzag",
        figure=Figure(
            pts,
            [a, b, c, d, e],
            [Segment(a, b), Segment(c, d), Segment(a, e), Segment(e, c)],
            parallels=[ParallelMark(a, b), ParallelMark(c, d)] if rng.random() < 0.5 else [],
        ),
        setup=f"{a}{b} ∥ {c}{d} and point {e} lies between the two lines",
        description=f"two parallel lines {a}{b} and {c}{d} with a point {e} between them joined to {a} and {c}",
        givens=[
            Given(f"∠{b}{a}{e}", angle(b, a, e), Exact(alpha)),
            Given(f"∠{d}{c}{e}", angle(d, c, e), Exact(gamma)),
        ],
        target=angle(a, e, c),
        target_name=f"∠{a}{e}{c}",
        ask=f"the degree of ∠{a}{e}{c}",
        value=Exact(total),
        steps=[
            f"Draw {e}{f} ∥ {a}{b} through {e}; then {e}{f} ∥ {c}{d} as well.",
            f"∠{a}{e}{f} = ∠{b}{a}{e} = {deg(alpha)} and ∠{f}{e}{c} = ∠{d}{c}{e} = {deg(gamma)} (alternate angles).",
            f"So ∠{a}{e}{c} = {deg(alpha)} + {deg(gamma)} = {deg(total)}.",
        ],
        mistakes=[Exact(180 - total), Exact(abs(alpha - gamma)) if alpha != gamma else Exact(total + 20)],
        upper=180,
    )


def _bisector(rng: random.Random) -> Construction:
    names = letters(rng, 9)
    a, b, c, d, e, f, g, h, m = names
    # x ≥ 64 keeps M within about 1.7 gaps of H, so the figure stays compact enough to read.
    x = 2 * rng.randint(32, 70)
    while x == 90:
        x = 2 * rng.randint(32, 70)
    pts = _layout(rng, x, names)
    ph = pts[h]
    gap = pts[g][1]
    pts[m] = polar(gap / math.sin(math.radians(x / 2)), x / 2, ph)
    pts[b] = (max(pts[b][0], pts[m][0] + rng.uniform(1.4, 2.2)), gap)
    inner = rng.random() < 0.5
    half = x // 2
    return Construction(
        kind="parallel_bisector",
        figure=Figure(
            pts,
            names,
            [Segment(a, b), Segment(c, d), Segment(e, f), Segment(h, m)],
            angles=[AngleMark(g, h, m, arcs=2), AngleMark(m, h, d, arcs=2)],
        ),
        setup=(
            f"{a}{b} ∥ {c}{d}, line {e}{f} meets {a}{b} at {g} and {c}{d} at {h}, "
            f"and {h}{m} bisects ∠{g}{h}{d} and meets {a}{b} at {m}"
        ),
        description=(
            f"two parallel lines {a}{b} and {c}{d} cut by the line {e}{f} at {g} and {h}, "
            f"with the bisector {h}{m} of ∠{g}{h}{d}"
        ),
        givens=[Given(f"∠{e}{g}{b}", angle(e, g, b), Exact(x))],
        target=angle(g, m, h) if inner else angle(b, m, h),
        target_name=f"∠{g}{m}{h}" if inner else f"∠{b}{m}{h}",
        ask=f"the degree of ∠{g}{m}{h}" if inner else f"the degree of ∠{b}{m}{h}",
        value=Exact(half if inner else 180 - half),
        steps=[
            f"{a}{b} ∥ {c}{d}, so ∠{g}{h}{d} = ∠{e}{g}{b} = {deg(x)} (corresponding angles).",
            f"{h}{m} bisects ∠{g}{h}{d}, so ∠{m}{h}{d} = {deg(x)} / 2 = {deg(half)}.",
            f"{a}{b} ∥ {c}{d}, so ∠{g}{m}{h} = ∠{m}{h}{d} = {deg(half)} (alternate angles)."
            + ("" if inner else f" Then ∠{b}{m}{h} = 180° - {deg(half)} = {deg(180 - half)}."),
        ],
        mistakes=[Exact(x), Exact(180 - x)],
        upper=180,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    if difficulty == MULTI_STEP:
        return rng.choice([lambda r: _transversal(r, False), _zigzag, _bisector])(rng)
    return _transversal(rng, True)


FAMILY = Family(NAME, "parallel lines and a transversal", build)
