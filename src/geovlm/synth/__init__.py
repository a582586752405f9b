"""Synthetic geometry: constructions with exact answers, drawn with Pillow, written as Geo170K-style data.

    from geovlm.synth import generate_problem, iter_problems
    p = generate_problem(seed=0, index=3, family="circle_theorems", difficulty="one_step", style="diagram")
    print(p.prompt, p.solution, p.value)   # question with choices, reasoning ending "Answer:X", exact value
    p.render(224).save("diagram.png")

`write_dataset` (and `geovlm synth`) write a whole dataset; see `geovlm.synth.writer`.
"""

from __future__ import annotations

from .exact import Exact
from .families import FAMILIES
from .figure import Figure, Given, Measure
from .generate import DEFAULT_DIFFICULTY, generate_problem, iter_problems
from .problem import DIFFICULTIES, STYLES, Problem
from .writer import write_dataset

__all__ = [
    "DEFAULT_DIFFICULTY",
    "DIFFICULTIES",
    "FAMILIES",
    "STYLES",
    "Exact",
    "Figure",
    "Given",
    "Measure",
    "Problem",
    "generate_problem",
    "iter_problems",
    "write_dataset",
]
