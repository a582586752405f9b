"""What a diagram contains (points, segments, circles, marks, labels) and what a question measures.

A `Figure` lives in construction coordinates (lengths in cm, y up); the renderer decides where it
lands on the canvas. A `Measure` names a quantity by point names only, so a test can recompute
it from the coordinates without knowing how the family built them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .exact import Exact
from .geometry import Point

# Measure kinds and what they mean (all recomputable from `Figure.points`):
#   angle (P, V, Q)          the angle PVQ in degrees, between 0 and 180
#   length (P, Q)            |PQ|
#   ratio (P, Q, R, S)       |PQ| / |RS|
#   area (P1, ..., Pn)       area of the polygon P1...Pn
#   perimeter (P1, ..., Pn)  perimeter of the closed polygon P1...Pn
#   circle_area (O, P)       area of the circle with centre O through P
#   circumference (O, P)     circumference of that circle
#   difference               parts[0] - parts[1]
#   quotient                 parts[0] / parts[1]
MEASURE_UNITS = {
    "angle": "°",
    "length": "cm",
    "ratio": "",
    "area": "cm²",
    "perimeter": "cm",
    "circle_area": "cm²",
    "circumference": "cm",
    "quotient": "",
}


@dataclass(frozen=True)
class Measure:
    kind: str
    points: tuple[str, ...] = ()
    parts: tuple[Measure, ...] = ()

    @property
    def unit(self) -> str:
        if self.kind == "difference":
            return self.parts[0].unit
        return MEASURE_UNITS[self.kind]


def angle(p: str, v: str, q: str) -> Measure:
    return Measure("angle", (p, v, q))


def length(p: str, q: str) -> Measure:
    return Measure("length", (p, q))


def perimeter(*names: str) -> Measure:
    return Measure("perimeter", names)


def area(*names: str) -> Measure:
    return Measure("area", names)


@dataclass(frozen=True)
class Given:
    """A value the problem hands to the solver: in the text ("text" style) or in the diagram."""

    name: str  # how the text calls it: "∠A", "AB"
    measure: Measure
    value: Exact


@dataclass(frozen=True)
class Segment:
    p: str
    q: str
    dashed: bool = False


@dataclass(frozen=True)
class Circle:
    center: str
    radius: float


@dataclass(frozen=True)
class AngleMark:
    """An arc (or a right-angle square) at vertex v between rays v→p and v→q."""

    p: str
    v: str
    q: str
    name: str = ""  # "∠A", used by captions
    label: str = ""  # "50°", "?" or "" for a bare arc
    arcs: int = 1
    right: bool = False


@dataclass(frozen=True)
class Tick:
    """Equal-length ticks across segment pq (count strokes)."""

    p: str
    q: str
    count: int = 1


@dataclass(frozen=True)
class ParallelMark:
    """Arrowheads on segment pq, pointing from p to q (count chevrons)."""

    p: str
    q: str
    count: int = 1


@dataclass(frozen=True)
class SideLabel:
    p: str
    q: str
    text: str


@dataclass(frozen=True)
class Fill:
    """A shaded region: a polygon (points) or a circle (center, radius), painted in order."""

    points: tuple[str, ...] = ()
    center: str = ""
    radius: float = 0.0
    shade: int = 205  # grey level; 255 erases what an earlier fill painted


@dataclass
class Figure:
    points: dict[str, Point]
    labelled: list[str]
    segments: list[Segment] = field(default_factory=list)
    circles: list[Circle] = field(default_factory=list)
    angles: list[AngleMark] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    parallels: list[ParallelMark] = field(default_factory=list)
    side_labels: list[SideLabel] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    polygon: tuple[str, ...] = ()  # the outline a "which shape" question is about
    shape: str = ""  # that outline's name ("circle" for a lone circle)

    def copy(self) -> Figure:
        return Figure(
            points=dict(self.points),
            labelled=list(self.labelled),
            segments=list(self.segments),
            circles=list(self.circles),
            angles=list(self.angles),
            ticks=list(self.ticks),
            parallels=list(self.parallels),
            side_labels=list(self.side_labels),
            fills=list(self.fills),
            polygon=self.polygon,
            shape=self.shape,
        )
