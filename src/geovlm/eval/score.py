"""Score model generations against GeoQA answers, in G-LLaVA's file formats.

Answers: JSONL (or a JSON list) of {"question_id", "text": gold letter} with optional
"family", "style", "difficulty" and "value" (exact value for numeric mode: "60", "2*sqrt(3)").
Predictions: {"question_id", "prompt"?, "text": full generation, ...}, as G-LLaVA's
model_vqa writes them.

Where G-LLaVA's scripts/geo_acc_calculate.py divides by the number of *predictions* (and crashes
with KeyError on an unknown id), we divide by the number of *gold* questions, count a missing
prediction as wrong, and reject unknown or duplicate ids with a clear error. On a complete,
clean predictions file the two accuracies are identical.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from geovlm.data.jsonfile import read_json_objects
from geovlm.eval.extract import (
    CHOICES,
    extract_choice,
    extract_choice_lenient,
    extract_number,
    numbers_match,
    parse_number,
)

__all__ = [
    "BREAKDOWN_FIELDS",
    "AnswerRecord",
    "MODES",
    "GroupScore",
    "PredictionRecord",
    "ScoreReport",
    "gold_answers",
    "is_correct",
    "question_id_of",
    "read_answers",
    "read_predictions",
    "score",
]

Mode = Literal["choice", "number"]
MODES: tuple[str, ...] = ("choice", "number")
QuestionId = int | str
BREAKDOWN_FIELDS = ("family", "style", "difficulty")
NO_GROUP = "(none)"  # breakdown label for answers that lack the field


@dataclass(frozen=True)
class AnswerRecord:
    question_id: QuestionId
    text: str | None = None  # gold letter
    value: str | None = None  # exact value, for numeric mode
    family: str | None = None
    style: str | None = None
    difficulty: str | None = None
    where: str = "<memory>"  # "file:line", for error messages

    def group(self, name: str) -> str:
        value = getattr(self, name)
        return NO_GROUP if value is None else value


@dataclass(frozen=True)
class PredictionRecord:
    question_id: QuestionId
    text: str
    prompt: str | None = None
    where: str = "<memory>"


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


def question_id_of(item: Mapping[str, Any], where: str) -> QuestionId:
    """A record's `question_id`, which must be an integer or a string; ValueError naming `where` otherwise."""
    if "question_id" not in item:
        raise ValueError(f"{where}: missing 'question_id'")
    qid = item["question_id"]
    # bool is an int subclass; true/false as an id is surely a mistake
    if isinstance(qid, bool) or not isinstance(qid, int | str):
        raise ValueError(f"{where}: 'question_id' must be an integer or a string, got {qid!r}")
    return qid


def _optional_str(item: Mapping[str, Any], key: str, where: str, numbers_ok: bool = False) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if numbers_ok and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def _answer_from(item: Mapping[str, Any], where: str) -> AnswerRecord:
    return AnswerRecord(
        question_id=question_id_of(item, where),
        text=_optional_str(item, "text", where),
        value=_optional_str(item, "value", where, numbers_ok=True),
        # a family or difficulty written as a number (difficulty: 2) is still a group label
        family=_optional_str(item, "family", where, numbers_ok=True),
        style=_optional_str(item, "style", where, numbers_ok=True),
        difficulty=_optional_str(item, "difficulty", where, numbers_ok=True),
        where=where,
    )


def _prediction_from(item: Mapping[str, Any], where: str) -> PredictionRecord:
    text = item.get("text")
    if not isinstance(text, str):
        raise ValueError(f"{where}: 'text' must be the generated string, got {text!r}")
    return PredictionRecord(
        question_id=question_id_of(item, where),
        text=text,
        prompt=_optional_str(item, "prompt", where),
        where=where,
    )


def _check_unique(ids: Iterable[tuple[QuestionId, str]], kind: str) -> None:
    seen: dict[QuestionId, str] = {}
    for qid, where in ids:
        if qid in seen:
            raise ValueError(f"{where}: duplicate {kind} for question_id {qid!r} (first at {seen[qid]})")
        seen[qid] = where


def read_answers(path: str | os.PathLike[str]) -> list[AnswerRecord]:
    """Gold answers; raises ValueError naming file and line on malformed or duplicate entries."""
    answers = [_answer_from(item, where) for where, item in read_json_objects(path)]
    if not answers:
        raise ValueError(f"{path}: no answers (the file holds no records)")
    _check_unique(((a.question_id, a.where) for a in answers), "answer")
    return answers


def read_predictions(path: str | os.PathLike[str]) -> list[PredictionRecord]:
    """Model generations; raises ValueError naming file and line on malformed or duplicate entries, and
    on a file with none (an empty file is a failed run, not a 0% score)."""
    predictions = [_prediction_from(item, where) for where, item in read_json_objects(path)]
    if not predictions:
        raise ValueError(f"{path}: no predictions (the file holds no records); nothing to score")
    _check_unique(((p.question_id, p.where) for p in predictions), "prediction")
    return predictions


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def _percent(correct: int, total: int) -> float:
    return 100.0 * correct / total if total else 0.0


@dataclass
class GroupScore:
    """Counts for one slice of the questions (all of them, or one family/style/difficulty)."""

    total: int = 0
    correct: int = 0
    unparsed: int = 0  # a prediction exists but no answer could be extracted from it
    missing: int = 0  # no prediction at all for the question
    lenient_correct: int | None = None

    @property
    def accuracy(self) -> float:
        return _percent(self.correct, self.total)

    @property
    def lenient_accuracy(self) -> float | None:
        return None if self.lenient_correct is None else _percent(self.lenient_correct, self.total)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "total": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "unparsed": self.unparsed,
            "missing": self.missing,
        }
        if self.lenient_correct is not None:
            out["lenient_correct"] = self.lenient_correct
            out["lenient_accuracy"] = self.lenient_accuracy
        return out


@dataclass
class ScoreReport:
    """Accuracy over ALL gold questions (missing predictions count wrong), with breakdowns."""

    mode: str
    lenient: bool
    total: int
    correct: int
    accuracy: float  # percent
    unparsed: int
    missing: int
    lenient_correct: int | None = None  # only with lenient=True
    lenient_accuracy: float | None = None
    # field name ("family", ...) -> group label -> counts; only fields some answer carries
    breakdowns: dict[str, dict[str, GroupScore]] = field(default_factory=dict)

    @classmethod
    def from_groups(
        cls, mode: str, lenient: bool, overall: GroupScore, breakdowns: dict[str, dict[str, GroupScore]]
    ) -> ScoreReport:
        return cls(
            mode=mode,
            lenient=lenient,
            total=overall.total,
            correct=overall.correct,
            accuracy=overall.accuracy,
            unparsed=overall.unparsed,
            missing=overall.missing,
            lenient_correct=overall.lenient_correct,
            lenient_accuracy=overall.lenient_accuracy,
            breakdowns=breakdowns,
        )

    @property
    def overall(self) -> GroupScore:
        return GroupScore(self.total, self.correct, self.unparsed, self.missing, self.lenient_correct)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "lenient": self.lenient,
            **self.overall.to_dict(),
            "breakdowns": {
                name: {label: group.to_dict() for label, group in groups.items()}
                for name, groups in self.breakdowns.items()
            },
        }

    def format_table(self) -> str:
        """A compact aligned table; the first line matches G-LLaVA's "Accuracy: xx.xx%"."""
        lines = [f"Accuracy: {self.accuracy:.2f}% ({self.correct}/{self.total}, {self.mode} mode)"]
        if self.lenient_accuracy is not None:
            lines.append(
                f"Lenient accuracy: {self.lenient_accuracy:.2f}% ({self.lenient_correct}/{self.total}, "
                "not comparable with G-LLaVA)"
            )
        header = ["group", "total", "correct", "acc%", "unparsed", "missing"]
        if self.lenient:
            header.append("lenient%")
        rows = [self._row("overall", self.overall)]
        for name, groups in self.breakdowns.items():
            for label in sorted(groups):
                rows.append(self._row(f"{name}={label}", groups[label]))
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = [str(row[0]).ljust(widths[0])] + [
                str(c).rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def _row(self, label: str, group: GroupScore) -> list[str]:
        row = [
            label,
            str(group.total),
            str(group.correct),
            f"{group.accuracy:.2f}",
            str(group.unparsed),
            str(group.missing),
        ]
        if self.lenient:
            lenient = group.lenient_accuracy
            row.append("-" if lenient is None else f"{lenient:.2f}")
        return row


def _as_answers(
    answers: Sequence[AnswerRecord | Mapping[str, Any]] | str | os.PathLike[str],
) -> list[AnswerRecord]:
    if isinstance(answers, str | os.PathLike):
        return read_answers(answers)
    records = [
        a if isinstance(a, AnswerRecord) else _answer_from(a, f"answers[{i}]") for i, a in enumerate(answers)
    ]
    if not records:
        raise ValueError("no answers")
    _check_unique(((a.question_id, a.where) for a in records), "answer")
    return records


def _as_predictions(
    predictions: Sequence[PredictionRecord | Mapping[str, Any]] | str | os.PathLike[str],
) -> list[PredictionRecord]:
    if isinstance(predictions, str | os.PathLike):
        return read_predictions(predictions)
    records = [
        p if isinstance(p, PredictionRecord) else _prediction_from(p, f"predictions[{i}]")
        for i, p in enumerate(predictions)
    ]
    _check_unique(((p.question_id, p.where) for p in records), "prediction")
    return records


def unknown_id_error(where: str, qid: QuestionId, gold_ids: Iterable[QuestionId]) -> ValueError:
    """The error for an id (of a prediction or a question, at `where`) that the answers lack."""
    message = f"{where}: question_id {qid!r} is not in the answers"
    # JSON keeps 7 and "7" apart, as G-LLaVA's dict lookup does; say so when that is the cause
    if any(str(gold) == str(qid) for gold in gold_ids):
        message += " (the answers use a different type for this id: integer vs string)"
    return ValueError(message)


def _gold_value(answer: AnswerRecord) -> float:
    if answer.value is None:
        raise ValueError(
            f"{answer.where}: numeric mode needs a 'value' for question_id {answer.question_id!r}"
        )
    value = parse_number(answer.value)
    if value is None:
        raise ValueError(f"{answer.where}: cannot parse 'value' {answer.value!r} as a number")
    return value


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected 'choice' or 'number'")


def gold_answers(answers: Iterable[AnswerRecord], mode: Mode) -> dict[QuestionId, str | float]:
    """Each answer's gold for `mode` -- its letter, or its parsed exact value -- by question id. Raises
    ValueError naming the first entry that has none, so a bad file fails before anything is counted."""
    _check_mode(mode)
    gold: dict[QuestionId, str | float] = {}
    for answer in answers:
        if mode == "choice":
            if answer.text not in CHOICES:
                raise ValueError(f"{answer.where}: 'text' must be the gold letter A-D, got {answer.text!r}")
            gold[answer.question_id] = answer.text
        else:
            gold[answer.question_id] = _gold_value(answer)
    return gold


def is_correct(reply: str, gold: str | float, mode: Mode = "choice") -> bool:
    """Whether `reply` gives the `gold` answer: the one decision behind `geovlm score`, `geovlm eval` and
    the GRPO accuracy reward, so that a reward of 1 is a point on the scoreboard.

    choice: G-LLaVA's extracted letter (`extract_choice`) equals `gold`, which must be a letter A-D.
    number: the reply's final number (`extract_number`) equals `gold` -- a number, or an exact value
    such as "2*sqrt(3)" -- up to rounding (`numbers_match`). Unparsed replies and unusable golds are
    wrong; an unknown mode is a ValueError."""
    _check_mode(mode)
    if mode == "choice":
        return str(gold) in CHOICES and extract_choice(reply) == str(gold)
    target = gold if isinstance(gold, int | float) and not isinstance(gold, bool) else parse_number(str(gold))
    value = extract_number(reply)
    return value is not None and target is not None and numbers_match(value, target)


def score(
    answers: Sequence[AnswerRecord | Mapping[str, Any]] | str | os.PathLike[str],
    predictions: Sequence[PredictionRecord | Mapping[str, Any]] | str | os.PathLike[str],
    mode: Mode = "choice",
    lenient: bool = False,
) -> ScoreReport:
    """Score predictions (records, dicts or a file path) against answers (likewise).

    mode="choice" compares the G-LLaVA-extracted letter with the gold letter exactly (as G-LLaVA
    does: `pred == gt`); lenient=True additionally reports accuracy with `extract_choice_lenient`.
    mode="number" compares `extract_number` of the generation with the gold 'value'.
    Raises ValueError on unknown modes, unknown or duplicate ids, and unusable gold entries."""
    _check_mode(mode)
    if lenient and mode != "choice":
        raise ValueError("lenient extraction applies to choice mode only")
    gold = _as_answers(answers)
    preds = _as_predictions(predictions)

    by_id = {a.question_id: a for a in gold}
    pred_by_id: dict[QuestionId, PredictionRecord] = {}
    for pred in preds:
        if pred.question_id not in by_id:
            raise unknown_id_error(pred.where, pred.question_id, by_id)
        pred_by_id[pred.question_id] = pred

    # Validate every gold entry before counting, so a bad file fails whatever the predictions are.
    gold_by_id = gold_answers(gold, mode)

    fields = [name for name in BREAKDOWN_FIELDS if any(getattr(a, name) is not None for a in gold)]
    lenient_start = 0 if lenient else None
    overall = GroupScore(lenient_correct=lenient_start)
    breakdowns: dict[str, dict[str, GroupScore]] = {name: {} for name in fields}

    for answer in gold:
        groups = [overall] + [
            breakdowns[name].setdefault(answer.group(name), GroupScore(lenient_correct=lenient_start))
            for name in fields
        ]
        pred = pred_by_id.get(answer.question_id)
        correct = lenient_correct = unparsed = missing = False
        if pred is None:
            missing = True
        else:
            extract = extract_choice if mode == "choice" else extract_number
            unparsed = extract(pred.text) is None
            correct = is_correct(pred.text, gold_by_id[answer.question_id], mode)
            if lenient:
                lenient_correct = extract_choice_lenient(pred.text) == answer.text
        for group in groups:
            group.total += 1
            group.correct += correct
            group.unparsed += unparsed
            group.missing += missing
            if group.lenient_correct is not None:
                group.lenient_correct += lenient_correct

    return ScoreReport.from_groups(mode, lenient, overall, breakdowns)
