"""Polygon angles: regular polygons (interior, exterior, a diagonal) and quadrilateral angle sums."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..exact import Exact
from ..figure import Figure, Given, Segment, angle
from ..geometry import Point, add, extend, polar
from .base import ALPHABET, MULTI_STEP, Construction, Family, deg, nice_int

NAME = "polygon_angles"

POLYGON_NAMES = {5: "pentagon", 6: "hexagon", 8: "octagon", 9: "nonagon", 10: "decagon", 12: "dodecagon"}


def _regular(rng: random.Random, n: int) -> tuple[list[str], dict[str, Point]]:
    names = list(ALPHABET[:n])
    r, t0 = rng.uniform(2.5, 3.5), rng.uniform(0, 360)
    turn = rng.choice([-1, 1])
    return names, {p: polar(r, t0 + turn * 360 * i / n) for i, p in enumerate(names)}


@dataclass
class _RegularPolygon:
    """A drawn regular polygon and the wording the three questions about it share."""

    n: int
    names: list[str]
    pts: dict[str, Point]

    @property
    def shape(self) -> str:
        return POLYGON_NAMES[self.n]

    @property
    def poly(self) -> str:
        return "".join(self.names)

    @property
    def interior(self) -> int:
        return 180 * (self.n - 2) // self.n

    @property
    def labelled(self) -> list[str]:
        return self.names if self.n <= 10 else self.names[:3] + self.names[-1:]

    @property
    def sides(self) -> list[Segment]:
        return [Segment(self.names[i], self.names[(i + 1) % self.n]) for i in range(self.n)]

    @property
    def setup(self) -> str:
        if self.n <= 8:
            return f"{self.poly} is a regular {self.shape}"
        return f"{self.poly} is a regular polygon with {shape_words(self.n)} sides"

    # The diagram style must not name the polygon (nor list its vertices): counting sides is the task.
    hidden = "the polygon is regular"

    @property
    def reading(self) -> str:
        return f"The polygon in the figure has {self.n} sides, so it is a regular {self.shape}."

    def figure(self, labels: list[str], segments: list[Segment]) -> Figure:
        return Figure(self.pts, labels, segments, polygon=tuple(self.names), shape=self.shape)


def _regular_angle(rng: random.Random, multi: bool) -> Construction:
    n = rng.choice([5, 6, 9, 10, 12] if multi else [5, 6, 8, 9, 10, 12])
    polygon = _RegularPolygon(n, *_regular(rng, n))
    if multi:
        return _regular_diagonal(polygon)
    if rng.random() < 0.4:
        return _regular_exterior(polygon, rng)
    return _regular_interior(polygon)


def _regular_diagonal(g: _RegularPolygon) -> Construction:
    a, b, c = g.names[:3]
    return Construction(
        kind="regular_diagonal",
        figure=g.figure(g.labelled, [*g.sides, Segment(a, c)]),
        setup=g.setup,
        diagram_setup=g.hidden,
        reading=g.reading,
        description=f"regular {g.shape} {g.poly} with the diagonal {a}{c}",
        givens=[],
        target=angle(b, a, c),
        target_name=f"∠{b}{a}{c}",
        ask=f"the degree of ∠{b}{a}{c}",
        value=Exact(180 // g.n),
        steps=[
            f"Each interior angle of a regular {g.shape} is 180° × ({g.n} - 2) / {g.n} = {deg(g.interior)}.",
            f"{a}{b} = {b}{c}, so ∠{b}{a}{c} = (180° - {deg(g.interior)}) / 2 = {deg(180 // g.n)}.",
        ],
        mistakes=[Exact(360 // g.n), Exact(g.interior // 2)],
        upper=180,
        mark_target=False,
    )


def _regular_exterior(g: _RegularPolygon, rng: random.Random) -> Construction:
    a, b, c = g.names[:3]
    p = ALPHABET[g.n]
    g.pts[p] = extend(g.pts[a], g.pts[b], rng.uniform(1.5, 2.2))
    return Construction(
        kind="regular_exterior",
        figure=g.figure([*g.labelled, p], [*g.sides, Segment(b, p)]),
        setup=f"{g.setup}, and {p} is on the extension of {a}{b}",
        diagram_setup=f"{g.hidden}, and {p} is on the extension of {a}{b}",
        reading=g.reading,
        description=f"regular {g.shape} {g.poly} with side {a}{b} extended to {p}",
        givens=[],
        target=angle(c, b, p),
        target_name=f"∠{c}{b}{p}",
        ask=f"the degree of ∠{c}{b}{p}",
        value=Exact(360 // g.n),
        steps=[
            f"The exterior angles of a polygon add up to 360°, and in a regular {g.shape} they are equal.",
            f"So ∠{c}{b}{p} = 360° / {g.n} = {deg(360 // g.n)}.",
        ],
        mistakes=[Exact(g.interior), Exact(180 // g.n)],
        upper=180,
    )


def _regular_interior(g: _RegularPolygon) -> Construction:
    a, b, c = g.names[:3]
    n, total = g.n, 180 * (g.n - 2)
    return Construction(
        kind="regular_interior",
        figure=g.figure(g.labelled, g.sides),
        setup=g.setup,
        diagram_setup=g.hidden,
        reading=g.reading,
        description=f"regular {g.shape} {g.poly}",
        givens=[],
        target=angle(a, b, c),
        target_name=f"∠{a}{b}{c}",
        ask=f"the degree of ∠{a}{b}{c}",
        value=Exact(g.interior),
        steps=[
            f"The interior angles of a {g.shape} add up to (n - 2) × 180° = ({n} - 2) × 180° = {deg(total)}.",
            f"They are equal, so ∠{a}{b}{c} = {deg(total)} / {n} = {deg(g.interior)}.",
        ],
        mistakes=[
            Exact(360 // n),
            Exact(180 - 180 // n) if 180 - 180 // n != g.interior else Exact(g.interior + 10),
        ],
        upper=180,
    )


def shape_words(n: int) -> str:
    return {9: "nine", 10: "ten", 12: "twelve"}[n]


def quadrilateral(rng: random.Random, angles: list[int]) -> list[Point] | None:
    """A convex quadrilateral with these interior angles (counter-clockwise), or None if none is
    well-shaped: the first two sides are drawn, the last two follow from closing the outline."""
    heading, turns = 0.0, []
    for v in angles[1:]:
        turns.append(heading)
        heading += 180 - v
    turns.append(heading)
    u = [polar(1.0, h) for h in turns]
    det = u[2][0] * u[3][1] - u[2][1] * u[3][0]
    for _ in range(40):
        l0, l1 = rng.uniform(2.0, 6.0), rng.uniform(2.0, 6.0)
        # Solve l2·u2 + l3·u3 = -(l0·u0 + l1·u1) for the last two sides.
        rx, ry = -(l0 * u[0][0] + l1 * u[1][0]), -(l0 * u[0][1] + l1 * u[1][1])
        l2 = (rx * u[3][1] - ry * u[3][0]) / det
        l3 = (u[2][0] * ry - u[2][1] * rx) / det
        sides = (l0, l1, l2, l3)
        if min(sides) > 1.8 and max(sides) < 3 * min(sides):
            pts = [(0.0, 0.0)]
            for length, d in zip(sides[:3], u[:3], strict=True):
                pts.append(add(pts[-1], (length * d[0], length * d[1])))
            return pts
    return None


def _quadrilateral(rng: random.Random, multi: bool) -> Construction:
    while True:
        va, vb, vc = (nice_int(rng, 55, 130) for _ in range(3))
        vd = 360 - va - vb - vc
        corners = quadrilateral(rng, [va, vb, vc, vd]) if 55 <= vd <= 130 else None
        if corners is not None:
            break
    start = rng.randrange(len(ALPHABET) - 5) if rng.random() < 0.4 else 0
    a, b, c, d, e = ALPHABET[start : start + 5]
    pts = dict(zip((a, b, c, d), corners, strict=True))
    name = f"{a}{b}{c}{d}"
    segs = [Segment(a, b), Segment(b, c), Segment(c, d), Segment(d, a)]
    givens = [
        Given(f"∠{a}", angle(d, a, b), Exact(va)),
        Given(f"∠{b}", angle(a, b, c), Exact(vb)),
        Given(f"∠{c}", angle(b, c, d), Exact(vc)),
    ]
    first = f"The angles of quadrilateral {name} add up to 360°, so ∠{a}{d}{c} = 360° - {deg(va)} - {deg(vb)} - {deg(vc)} = {deg(vd)}."
    if multi:
        pts[e] = extend(pts[c], pts[d], rng.uniform(1.8, 2.6))
        return Construction(
            kind="quadrilateral_exterior",
            figure=Figure(pts, [a, b, c, d, e], [Segment(a, b), Segment(b, c), Segment(c, e), Segment(d, a)]),
            setup=f"in quadrilateral {name}, {e} is on the extension of {c}{d}",
            description=f"quadrilateral {name} with side {c}{d} extended to {e}",
            givens=givens,
            target=angle(a, d, e),
            target_name=f"∠{a}{d}{e}",
            ask=f"the degree of ∠{a}{d}{e}",
            value=Exact(180 - vd),
            steps=[first, f"∠{a}{d}{e} = 180° - ∠{a}{d}{c} = 180° - {deg(vd)} = {deg(180 - vd)}."],
            mistakes=[Exact(vd), Exact(abs(180 - va - vb)) if va + vb != 180 else Exact(vd + 20)],
            upper=180,
        )
    return Construction(
        kind="quadrilateral_sum",
        figure=Figure(pts, [a, b, c, d], segs, polygon=(a, b, c, d), shape="quadrilateral"),
        setup=f"in quadrilateral {name}",
        description=f"quadrilateral {name}",
        givens=givens,
        target=angle(a, d, c),
        target_name=f"∠{d}",
        ask=f"the degree of ∠{d}",
        value=Exact(vd),
        steps=[first],
        mistakes=[Exact(180 - vd), Exact(540 - va - vb - vc) if 540 - va - vb - vc < 180 else Exact(vd + 20)],
        upper=180,
    )


def build(rng: random.Random, difficulty: str) -> Construction:
    multi = difficulty == MULTI_STEP
    if rng.random() < 0.5:
        return _regular_angle(rng, multi)
    return _quadrilateral(rng, multi)


FAMILY = Family(NAME, "polygon angles", build)
