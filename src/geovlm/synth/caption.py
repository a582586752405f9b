"""Captions for the alignment file: what the diagram shows, read off the figure itself."""

from __future__ import annotations

import math
import random

from .figure import Figure

CAPTION_PROMPTS = (
    "Describe the diagram.",
    "Describe this geometry figure in detail.",
    "What is shown in the figure?",
    "List the points, segments and marked values in the diagram.",
    "Give a short description of the geometric figure.",
    "Explain what the figure shows.",
)


def join(items: list[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(figure: Figure, description: str) -> str:
    """A plain description of everything drawn: points, segments, circles, marks and labels."""
    out = [f"The figure shows {description}." if description else "The figure shows a geometric diagram."]
    if figure.labelled:
        out.append(f"The labelled points are {join(sorted(figure.labelled))}.")
    named = [s for s in figure.segments if s.p in figure.labelled and s.q in figure.labelled]
    if named:
        out.append(f"The segments drawn are {join([s.p + s.q for s in named])}.")
    dashed = [s.p + s.q for s in figure.segments if s.dashed]
    if dashed:
        out.append(f"{join(dashed)} {'is' if len(dashed) == 1 else 'are'} drawn dashed.")
    for c in figure.circles:
        centre = figure.points[c.center]
        on = [
            p
            for p in figure.labelled
            if p != c.center
            and abs(math.dist(figure.points[p], centre) - c.radius) < 1e-6 * max(1.0, c.radius)
        ]
        name = f"circle {c.center}" if c.center in figure.labelled else "a circle"
        out.append(
            f"{name[0].upper()}{name[1:]} passes through {join(on)}."
            if on
            else f"{name[0].upper()}{name[1:]} is drawn."
        )
    rights = [m.v for m in figure.angles if m.right]
    if rights:
        out.append(f"A right-angle mark is drawn at {join(rights)}.")
    arcs = [m for m in figure.angles if not m.right and not m.label and m.arcs > 1]
    if len(arcs) >= 2:
        out.append(f"Matching arcs mark {join([m.name or '∠' + m.p + m.v + m.q for m in arcs])} as equal.")
    for m in figure.angles:
        name = m.name or f"∠{m.p}{m.v}{m.q}"
        if m.label == "?":
            out.append(f"{name} is marked with a question mark.")
        elif m.label:
            out.append(f"{name} is labelled {m.label}.")
        elif not m.right and m.arcs == 1:
            out.append(f"An arc marks {name}.")
    for s in figure.side_labels:
        out.append(
            f"{s.p}{s.q} is marked with a question mark."
            if s.text == "?"
            else f"{s.p}{s.q} is labelled {s.text}."
        )
    for count in sorted({t.count for t in figure.ticks}):
        group = [t.p + t.q for t in figure.ticks if t.count == count]
        if len(group) >= 2:
            out.append(f"Tick marks show that {' = '.join(group)}.")
    for count in sorted({p.count for p in figure.parallels}):
        group = [p.p + p.q for p in figure.parallels if p.count == count]
        if len(group) >= 2:
            out.append(f"Arrow marks show that {' ∥ '.join(group)}.")
    return " ".join(out)


def caption_prompt(rng: random.Random) -> str:
    return rng.choice(CAPTION_PROMPTS)
