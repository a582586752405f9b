"""Outline shapes for "which shape is drawn?": the easiest thing to learn from pixels alone."""

from __future__ import annotations

import math
import random

from ..figure import Circle, Figure, Segment
from ..geometry import Point, polar
from .base import PERCEPTION, Construction, Family, letters

NAME = "shapes"
SHAPES = ("triangle", "square", "rectangle", "pentagon", "hexagon", "circle")
# The easiest perception task: four shapes that differ at 64 px, always listed in this order, so
# the answer's letter names the shape (the CPU quickstart's task; a blind reader is still at 25%).
FOUR_SHAPES_NAME = "four_shapes"
FOUR_SHAPES = ("triangle", "square", "rectangle", "circle")


def _polygon(rng: random.Random, n: int, jitter: float) -> list[Point]:
    t0 = rng.uniform(0, 360)
    # A little irregularity (radius ±jitter, angle ±60°·jitter) so that not every pentagon is regular.
    return [
        polar(3.0 * rng.uniform(1 - jitter, 1 + jitter), t0 + 360 * i / n + rng.uniform(-60, 60) * jitter)
        for i in range(n)
    ]


def shape_figure(rng: random.Random, shape: str) -> Figure:
    """A lone outline of `shape`, with vertex labels half of the time."""
    if shape == "circle":
        # A radius or a labelled point at a random angle: otherwise every circle is the same picture
        # (and no held-out circle would be new).
        centre, rim = letters(rng, 2) if rng.random() < 0.5 else ("O", "A")
        pts = {centre: (0.0, 0.0), rim: polar(3.0, rng.uniform(0, 360))}
        radius = rng.random() < 0.5
        labelled = [centre] if rng.random() < 0.5 else []
        if not radius or rng.random() < 0.5:
            labelled.append(rim)
        segments = [Segment(centre, rim)] if radius else []
        return Figure(pts, labelled, segments, circles=[Circle(centre, 3.0)], shape=shape)
    if shape == "triangle":
        while True:
            corners = [polar(3.0, rng.uniform(0, 360)) for _ in range(3)]
            sides = [math.dist(corners[i], corners[(i + 1) % 3]) for i in range(3)]
            s = sum(sides) / 2
            area = math.sqrt(max(s * (s - sides[0]) * (s - sides[1]) * (s - sides[2]), 0.0))
            if area > 4.5:  # not a sliver
                break
    elif shape in ("square", "rectangle"):
        w = 3.0
        h = w if shape == "square" else w * rng.uniform(1.45, 2.2)
        t0 = rng.uniform(0, 90)
        corners = [polar(math.hypot(w, h) / 2, t0 + d) for d in _rect_angles(w, h)]
    else:
        corners = _polygon(rng, 5 if shape == "pentagon" else 6, jitter=rng.uniform(0.0, 0.08))
    names = letters(rng, len(corners))
    pts = dict(zip(names, corners, strict=True))
    n = len(names)
    return Figure(
        pts,
        names if rng.random() < 0.5 else [],
        [Segment(names[i], names[(i + 1) % n]) for i in range(n)],
        polygon=tuple(names),
        shape=shape,
    )


def _rect_angles(w: float, h: float) -> list[float]:
    half = math.degrees(math.atan2(h, w))
    return [half, 180 - half, 180 + half, 360 - half]


def build(rng: random.Random, difficulty: str) -> Construction:
    raise ValueError(f"the shapes families only have perception questions, not {difficulty!r}")


FAMILY = Family(NAME, "which shape is drawn", build, difficulties=(PERCEPTION,))
FOUR_SHAPES_FAMILY = Family(
    FOUR_SHAPES_NAME,
    "which of four shapes, choices in a fixed order",
    build,
    difficulties=(PERCEPTION,),
    in_default_mix=False,  # a warm-up task: asked for by name (the quickstart does)
)
