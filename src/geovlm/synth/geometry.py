"""Plane vectors as float tuples: just the helpers the constructions use (no numpy, no objects)."""

from __future__ import annotations

import math

Point = tuple[float, float]


def polar(r: float, deg: float, origin: Point = (0.0, 0.0)) -> Point:
    t = math.radians(deg)
    return (origin[0] + r * math.cos(t), origin[1] + r * math.sin(t))


def add(p: Point, q: Point) -> Point:
    return (p[0] + q[0], p[1] + q[1])


def sub(p: Point, q: Point) -> Point:
    return (p[0] - q[0], p[1] - q[1])


def mul(p: Point, s: float) -> Point:
    return (p[0] * s, p[1] * s)


def lerp(p: Point, q: Point, t: float) -> Point:
    return (p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t)


def dist(p: Point, q: Point) -> float:
    return math.hypot(p[0] - q[0], p[1] - q[1])


def unit(p: Point) -> Point:
    n = math.hypot(*p)
    return (p[0] / n, p[1] / n)


def perp(p: Point) -> Point:
    """p turned 90° counter-clockwise."""
    return (-p[1], p[0])


def extend(p: Point, q: Point, length: float) -> Point:
    """The point `length` beyond q on the ray p→q."""
    return add(q, mul(unit(sub(q, p)), length))


def intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> Point:
    """Intersection of lines p1p2 and q1q2 (they must not be parallel)."""
    d1, d2 = sub(p2, p1), sub(q2, q1)
    den = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(den) < 1e-12:
        raise ValueError("parallel lines")
    t = ((q1[0] - p1[0]) * d2[1] - (q1[1] - p1[1]) * d2[0]) / den
    return add(p1, mul(d1, t))


def foot(p: Point, a: Point, b: Point) -> Point:
    """Foot of the perpendicular from p to line ab."""
    d = sub(b, a)
    t = ((p[0] - a[0]) * d[0] + (p[1] - a[1]) * d[1]) / (d[0] ** 2 + d[1] ** 2)
    return add(a, mul(d, t))


def triangle_from_sides(a: float, b: float, c: float) -> tuple[Point, Point, Point]:
    """Vertices A, B, C (counter-clockwise) with BC = a, CA = b, AB = c, AB on the x-axis."""
    x = (b * b + c * c - a * a) / (2 * c)
    return (0.0, 0.0), (c, 0.0), (x, math.sqrt(max(b * b - x * x, 0.0)))


def triangle_from_angles(angle_a: float, angle_b: float, base: float = 6.0) -> tuple[Point, Point, Point]:
    """Vertices A, B, C with the given angles at A and B (degrees) and AB = base on the x-axis."""
    angle_c = 180.0 - angle_a - angle_b
    b = base * math.sin(math.radians(angle_b)) / math.sin(math.radians(angle_c))
    return (0.0, 0.0), (base, 0.0), polar(b, angle_a)
