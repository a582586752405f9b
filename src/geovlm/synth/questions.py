"""Turn a solved construction into a question: value labels, question text, choices, solution."""

from __future__ import annotations

import random

from .caption import join
from .families.base import Construction, fmt
from .figure import AngleMark, Figure, Given, SideLabel

OPENINGS = (
    "As shown in the figure, ",
    "As shown in the figure, ",
    "In the figure, ",
    "As shown in the diagram, ",
)


def value_label(g: Given, rng: random.Random) -> str:
    """How a given value is written in the diagram: "50°", "6cm" or "6 cm"."""
    if g.measure.unit == "°":
        return f"{g.value}°"
    sep = " " if rng.random() < 0.5 else ""
    text = str(g.value)
    return f"{text}{sep}{g.measure.unit}" if g.measure.unit else text


def decorate(c: Construction, style: str, rng: random.Random) -> Figure:
    """The construction's figure plus what this style shows: values (diagram) or bare arcs (text)."""
    fig = c.figure.copy()
    for g in c.givens:
        kind, pts = g.measure.kind, g.measure.points
        if kind == "angle":
            if style == "diagram":
                fig.angles.append(AngleMark(*pts, name=g.name, label=value_label(g, rng)))
            elif rng.random() < 0.5:
                fig.angles.append(AngleMark(*pts, name=g.name))
        elif kind == "length" and style == "diagram":
            fig.side_labels.append(SideLabel(pts[0], pts[1], value_label(g, rng)))
    if c.mark_target and rng.random() < (0.35 if style == "diagram" else 0.2):
        if c.target.kind == "angle":
            fig.angles.append(AngleMark(*c.target.points, name=c.target_name, label="?"))
        elif c.target.kind == "length":
            fig.side_labels.append(SideLabel(*c.target.points, "?"))
    return fig


def question_text(c: Construction, style: str, rng: random.Random) -> str:
    opening = rng.choice(OPENINGS)
    setup = c.diagram_setup if style == "diagram" and c.diagram_setup else c.setup
    parts = [setup]
    if c.givens and style == "text":
        parts.append(", ".join(f"{g.name} = {fmt(g.value, g.measure.unit)}" for g in c.givens))
    elif c.givens:
        names = join([g.name for g in c.givens])
        verb = "is" if len(c.givens) == 1 else "are"
        parts.append(
            rng.choice(
                (
                    f"{names} {verb} as marked in the figure",
                    "with the values marked in the figure",
                    f"with {names} given in the figure",
                )
            )
        )
    return f"{opening}{', '.join(parts)}, then {c.ask} is ()"


def solution_text(c: Construction, style: str, letter: str) -> str:
    """Short step-by-step reasoning that ends with Geo170K's `Answer:X` line."""
    lines: list[str] = []
    if style == "diagram" and c.givens:
        lines.append(
            "From the figure, " + join([f"{g.name} = {fmt(g.value, g.measure.unit)}" for g in c.givens]) + "."
        )
    if style == "diagram" and c.reading:
        lines.append(c.reading)
    lines += c.steps
    lines.append(f"Therefore, the answer is: {letter}.")
    return " ".join(lines) + f"\nAnswer:{letter}"
