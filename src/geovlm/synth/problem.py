"""`Problem`: one finished question with its diagram, choices, exact answer and solution."""

from __future__ import annotations

import dataclasses
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
    free_answer: bool = False  # no choices: the reply must state the exact value (see `free_form`)

    @property
    def points(self) -> dict[str, Point]:
        return self.figure.points

    @property
    def answer_type(self) -> str:
        """"number" for a free-answer question (gold: the exact value), else "choice" (gold: the letter)."""
        return "number" if self.free_answer else "choice"

    @property
    def gold(self) -> str:
        """What a reply must state: the letter, or the exact value with its unit (free answer)."""
        return self.value_label if self.free_answer else self.answer

    @property
    def value_label(self) -> str:
        from .families.base import fmt

        return fmt(self.value, self.unit) if isinstance(self.value, Exact) else str(self.value)

    def free_form(self) -> Problem:
        """The same problem without choices, for rewards that a guess cannot collect: the solution
        ends with `Answer: <exact value>`. Perception questions (their answer is a name, not a value)
        keep their choices."""
        if self.difficulty == "perception" or not isinstance(self.value, Exact):
            return self
        label = self.value_label
        reasoning = self.solution.rsplit("Therefore, the answer is:", 1)[0].strip()
        solution = (reasoning + " " if reasoning else "") + f"Therefore, the answer is {label}.\nAnswer: {label}"
        return dataclasses.replace(self, free_answer=True, solution=solution)

    @property
    def prompt(self) -> str:
        """The question with its choices, as GeoQA writes it and as the model sees it (the question
        alone for a free-answer problem)."""
        if self.free_answer:
            return self.question
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
            "answer": self.gold,
            "answer_type": self.answer_type,
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
            "text": self.gold,
            "answer_type": self.answer_type,
            "family": self.family,
            "style": self.style,
            "difficulty": self.difficulty,
            "value": self.value_text,
        }
        return question, answer
