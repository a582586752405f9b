"""The problem families, one module each; `FAMILIES` maps a family's name to it."""

from __future__ import annotations

from . import (
    areas,
    circles,
    intersecting,
    isosceles,
    parallel,
    polygons,
    right_triangles,
    shapes,
    similar,
    triangle_angles,
)
from .base import MULTI_STEP, ONE_STEP, PERCEPTION, Construction, Family

FAMILIES: dict[str, Family] = {
    m.FAMILY.name: m.FAMILY
    for m in (
        triangle_angles,
        isosceles,
        parallel,
        intersecting,
        circles,
        right_triangles,
        areas,
        similar,
        polygons,
        shapes,
    )
}
FAMILIES[shapes.FOUR_SHAPES_NAME] = shapes.FOUR_SHAPES_FAMILY

__all__ = ["FAMILIES", "MULTI_STEP", "ONE_STEP", "PERCEPTION", "Construction", "Family"]
