"""Perception questions: answers that are only in the pixels (shape, counts, marks, labels).

They need no reasoning, so a tiny model trained from scratch can learn them from the image, and a
model that ignores the image is at chance: the text is one of a few fixed templates, the choices
come from the same pool whatever the answer (shape names, letters of the figure, nearby numbers)
and their order is random (except in `four_shapes`, whose four names keep one order; the answer's
letter is still uniform).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .caption import join
from .choices import categorical_choices, numeric_choices, place
from .exact import Exact
from .families import FAMILIES
from .families.base import MULTI_STEP, ONE_STEP, Construction
from .families.shapes import FOUR_SHAPES, FOUR_SHAPES_NAME, SHAPES, shape_figure
from .figure import Figure, Given, Measure
from .questions import decorate

SHAPE_REASONS = {
    "triangle": "a closed outline with three straight sides, so it is a triangle",
    "square": "a closed outline with four equal sides and four right angles, so it is a square",
    "rectangle": "a closed outline with four right angles, two long and two short sides, so it is a rectangle",
    "pentagon": "a closed outline with five straight sides, so it is a pentagon",
    "hexagon": "a closed outline with six straight sides, so it is a hexagon",
    "circle": "a round closed curve, so it is a circle",
}


@dataclass
class Perceived:
    """A perception question before it becomes a `Problem`."""

    kind: str
    figure: Figure
    description: str  # for the caption
    question: str
    choice_values: list[Exact | str]
    answer_index: int
    value: Exact | str
    steps: list[str]
    target: Measure | None
    unit: str = ""
    givens: list[Given] = field(default_factory=list)


def _shape(rng: random.Random, pool: tuple[str, ...], fixed_order: bool) -> Perceived:
    shape = rng.choice(pool)
    if fixed_order:
        values, index = list(pool), pool.index(shape)
    else:
        values, index = categorical_choices(rng, shape, pool)
    return Perceived(
        kind="shape",
        figure=shape_figure(rng, shape),
        description=f"a {shape}",
        question=rng.choice(
            (
                "Which shape is drawn in the figure?",
                "What shape is shown in the figure?",
                "Which of the following is the shape in the diagram?",
            )
        ),
        choice_values=list(values),
        answer_index=index,
        value=shape,
        steps=[f"The figure shows {SHAPE_REASONS[shape]}."],
        target=None,
    )


def _count_points(c: Construction, figure: Figure, rng: random.Random) -> Perceived:
    n = len(figure.labelled)
    values, index = numeric_choices(rng, Exact(n), "", style="diagram")
    return Perceived(
        kind="count_points",
        figure=figure,
        description=c.description,
        question=rng.choice(
            (
                "How many labelled points are there in the figure?",
                "How many points are labelled with letters in the diagram?",
            )
        ),
        choice_values=list(values),
        answer_index=index,
        value=Exact(n),
        steps=[f"The labelled points are {join(sorted(figure.labelled))}, so there are {n} of them."],
        target=Measure("count", tuple(figure.labelled)),
    )


def _count_sides(c: Construction, figure: Figure, rng: random.Random) -> Perceived:
    poly = figure.polygon
    n = len(poly)
    values, index = numeric_choices(rng, Exact(n), "", style="diagram")
    if set(poly) <= set(figure.labelled):
        sides = join([poly[i] + poly[(i + 1) % n] for i in range(n)])
        steps = [f"Going around the polygon, its sides are {sides}, so it has {n} sides."]
    else:
        steps = [f"Counting around the outline gives {n} sides."]
    return Perceived(
        kind="count_sides",
        figure=figure,
        description=c.description,
        question="How many sides does the polygon in the figure have?",
        choice_values=list(values),
        answer_index=index,
        value=Exact(n),
        steps=steps,
        target=Measure("count", poly),
    )


def _right_angle_at(c: Construction, figure: Figure, rng: random.Random) -> Perceived:
    mark = next(m for m in figure.angles if m.right)
    # Only letters of this figure: a letter that is not drawn would be an easy one to rule out.
    others = [p for p in figure.labelled if p != mark.v]
    values, index = place(rng, mark.v, rng.sample(others, 3))
    return Perceived(
        kind="right_angle_at",
        figure=figure,
        description=c.description,
        question=rng.choice(
            (
                "At which point is the right-angle mark drawn?",
                "Which vertex carries the right-angle mark in the figure?",
            )
        ),
        choice_values=list(values),
        answer_index=index,
        value=mark.v,
        steps=[
            f"The small square of the right-angle mark is at {mark.v}, between {mark.v}{mark.p} and {mark.v}{mark.q}."
        ],
        target=Measure("angle", (mark.p, mark.v, mark.q)),
    )


def _value_at(c: Construction, figure: Figure, rng: random.Random) -> Perceived:
    g = rng.choice(c.givens)
    unit = g.measure.unit
    # The other values written in the same figure are the most natural distractors: reading the
    # wrong label is the mistake this question tests. Nearby values fill the rest.
    others = list(
        dict.fromkeys(
            h.value
            for h in c.givens
            if h.value != g.value and h.measure.unit == unit and h.value.form() == g.value.form()
        )
    )[:2]
    nearby, _ = numeric_choices(rng, g.value, unit, style="diagram")
    others += [v for v in nearby if v != g.value and v not in others][: 3 - len(others)]
    values, index = place(rng, g.value, others)
    if g.measure.kind == "angle":
        templates = (
            f"What is the degree of {g.name} marked in the figure?",
            f"Which value is written at {g.name} in the figure?",
        )
    else:
        templates = (
            f"What length is marked on {g.name} in the figure?",
            f"Which value is written on {g.name} in the figure?",
        )
    label = next((m.label for m in figure.angles if m.name == g.name and m.label), None) or next(
        (s.text for s in figure.side_labels if s.p + s.q == g.name), str(g.value)
    )
    return Perceived(
        kind="value_at",
        figure=figure,
        description=c.description,
        question=rng.choice(templates),
        choice_values=list(values),
        answer_index=index,
        value=g.value,
        steps=[f"The label written at {g.name} reads {label}."],
        target=g.measure,
        unit=unit,
        givens=[g],
    )


def perceive(family: str, rng: random.Random) -> Perceived:
    """A perception question about a figure of `family`, drawn with its values shown."""
    if family == "shapes":
        return _shape(rng, SHAPES, fixed_order=False)
    if family == FOUR_SHAPES_NAME:
        return _shape(rng, FOUR_SHAPES, fixed_order=True)
    build = FAMILIES[family].build
    for _ in range(30):
        c = build(rng, rng.choice((ONE_STEP, MULTI_STEP)))
        figure = decorate(c, "diagram", rng)
        kinds = ["count_points", "value_at" if c.givens else "count_points"]
        if len([m for m in figure.angles if m.right]) == 1 and len(figure.labelled) >= 4:
            kinds += ["right_angle_at"] * 2  # rarer figures, so weighted up
        if len(figure.polygon) >= 4:
            kinds.append("count_sides")
        kind = rng.choice(kinds)
        if kind == "right_angle_at":
            return _right_angle_at(c, figure, rng)
        if kind == "count_sides":
            return _count_sides(c, figure, rng)
        if kind == "value_at":
            return _value_at(c, figure, rng)
        if len(figure.labelled) >= 2:
            return _count_points(c, figure, rng)
    raise RuntimeError(f"no perception question found for {family}")
