"""`Problem`: one finished question with its diagram, choices, exact answer and solution."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .exact import Exact
from .figure import Figure, Given, Measure
from .geometry import Point

if TYPE_CHECKING:
    from PIL import Image

LETTERS = "ABCD"
STYLES = ("text", "diagram")
DIFFICULTIES = ("perception", "one_step", "multi_step")


@dataclass
class Problem:
    """A four-choice geometry question whose answer is exact and whose diagram is drawn on demand.

    `value` is the exact answer (`Exact`, or a name such as "pentagon" or "C" for perception
    questions); `choice_values` hold the four choices in letter order, `choices` the same as
    printed. `givens` and `target` say, by point names, what is given and what is asked, so the
    answer can be checked against `figure.points`.
    """

    id: str
    seed: int
    index: int
    family: str
    kind: str
    difficulty: str
    style: str
    question: str
    choices: list[str]
    choice_values: list[Exact | str]
    answer: str
    value: Exact | str
    unit: str
    solution: str
    caption: str
    caption_prompt: str
    figure: Figure
    givens: list[Given] = field(default_factory=list)
    target: Measure | None = None

    @property
    def points(self) -> dict[str, Point]:
        return self.figure.points

    @property
    def prompt(self) -> str:
        """The question with its choices, as GeoQA writes it and as the model sees it."""
        lines = [f"{letter}:{choice}" for letter, choice in zip(LETTERS, self.choices, strict=True)]
        return f"{self.question}\nChoices:\n" + "\n".join(lines)

    @property
    def value_text(self) -> str:
        return str(self.value)

    def render(self, size: int = 224, line_scale: float = 1.0) -> Image.Image:
        """The diagram as an RGB image of size × size pixels (same layout for every call).
        `line_scale` thickens lines, e.g. for tiny models that see the image at a few dozen pixels."""
        from .render import render_figure

        return render_figure(
            self.figure, size, random.Random(f"geovlm.synth/{self.seed}/{self.index}/render"), line_scale
        )

    def signature(self) -> tuple:
        """What makes two problems "the same question", whatever their letters and rendering.

        Reasoning problems are the same when family, kind, given values and answer agree;
        perception problems are about the drawing itself, so their coordinates count too.
        """
        key: tuple = (self.family, self.kind, tuple(str(g.value) for g in self.givens), str(self.value))
        if self.difficulty == "perception":
            key += (tuple(sorted((k, round(x, 6), round(y, 6)) for k, (x, y) in self.figure.points.items())),)
        return key

    def image_path(self) -> str:
        """The diagram's file name, relative to the image folder (OUT/images), as Geo170K's records are."""
        return f"{self.id}.png"

    def qa_record(self) -> dict:
        """A training record in the LLaVA / Geo170K conversation format, with our extra keys."""
        return {
            "id": self.id,
            "image": self.image_path(),
            "conversations": [
                {"from": "human", "value": f"<image>\n{self.prompt}"},
                {"from": "gpt", "value": self.solution},
            ],
            "family": self.family,
            "style": self.style,
            "difficulty": self.difficulty,
            "answer": self.answer,
            "value": self.value_text,
        }

    def alignment_record(self) -> dict:
        return {
            "id": f"{self.id}-caption",
            "image": self.image_path(),
            "conversations": [
                {"from": "human", "value": f"<image>\n{self.caption_prompt}"},
                {"from": "gpt", "value": self.caption},
            ],
            "family": self.family,
            "style": self.style,
            "difficulty": self.difficulty,
        }

    def test_records(self, question_id: int) -> tuple[dict, dict]:
        """(test_questions.jsonl line, test_answers.jsonl line) in G-LLaVA's GeoQA format."""
        question = {"question_id": question_id, "image": self.image_path(), "text": self.prompt}
        answer = {
            "question_id": question_id,
            "text": self.answer,
            "family": self.family,
            "style": self.style,
            "difficulty": self.difficulty,
            "value": self.value_text,
        }
        return question, answer
