"""RL prompts and their gold answers, from LLaVA/Geo170K-format records (and `geovlm synth` output).

A prompt is a record's first user turn (its image and question); the gold answer comes from the record:
the letter for a choice question (the record's `answer` key, else the `Answer:X` its reply ends with),
the exact value for a free-answer one (`answer` with `answer_type: number`, as `geovlm synth
--free-answer` writes, or the record's `value`). Records without an image or a gold answer are skipped,
counted by reason and logged; images are decoded up front, so a bad file never stops a run later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from geovlm.constants import IMAGE_TAG
from geovlm.data.encoding import validate_record
from geovlm.data.images import ImageLoadError, load_image
from geovlm.data.records import ASSISTANT, USER, Record, RecordError, read_records_lenient
from geovlm.data.skips import MALFORMED, SkipCounter, SkipRecord
from geovlm.data.sources import DataSource
from geovlm.eval.extract import CHOICES, extract_choice, parse_number

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RLPrompt:
    id: str
    question: str  # the user's text, without the image tag (the chat template places the image)
    image: str  # the image file
    answer: str  # gold letter or exact value
    answer_type: str  # "choice" | "number"


def gold_answer(record: Record, mode: str = "auto") -> tuple[str, str] | None:
    """(gold, answer_type) of a record under `mode` ("choice", "number" or "auto"), or None."""
    declared = record.extra.get("answer_type")
    answer = record.extra.get("answer")
    replies = [t.content for t in record.turns if t.role == ASSISTANT]
    if mode in ("choice", "auto") and declared in (None, "choice"):
        letter = answer if answer in CHOICES else (extract_choice(replies[-1]) if replies else None)
        if letter in CHOICES:
            return letter, "choice"
    if mode in ("number", "auto"):
        value = answer if declared == "number" else record.extra.get("value")
        if isinstance(value, (str, int, float)) and parse_number(str(value)) is not None:
            return str(value), "number"
    return None


def build_prompts(sources: Iterable[Any], mode: str = "auto", max_pixels: int | None = None,
                  special_tokens: Sequence[str] = ()) -> tuple[list[RLPrompt], SkipCounter]:
    """RL prompts from data sources (see :meth:`DataSource.coerce`); also the skipped records, counted by
    reason. Records go through the rule training applies (`validate_record`: no special token in the
    text, no image path leaving its root), so a prompt can never hold control tokens."""
    prompts: list[RLPrompt] = []
    skipped = SkipCounter()
    for source in map(DataSource.coerce, sources):
        path, root = source.path, source.image_root
        records, errors = read_records_lenient(path)
        for err in errors:
            logger.warning("skipping a malformed record: %s", err)
            skipped.add(SkipRecord(MALFORMED, str(err.record_id or f"line {err.line}"), path, err.problem))
        for record in records:
            reason, prompt = _prompt(record, root, mode, max_pixels, special_tokens)
            if prompt is None:
                skipped.add(SkipRecord(reason, str(record.id), path))
                logger.warning("skipping record %s (%s): %s", record.id, path, reason)
            else:
                prompts.append(prompt)
        skipped.seen += len(records) + len(errors)
    return prompts, skipped


def _prompt(record: Record, root: str, mode: str, max_pixels: int | None, special_tokens: Sequence[str]
            ) -> tuple[str, RLPrompt | None]:
    users = [t.content for t in record.turns if t.role == USER]
    if record.image is None:
        return "no_image", None
    if not users:
        return "no_question", None
    gold = gold_answer(record, mode)
    if gold is None:
        return "no_gold_answer", None
    try:
        path = validate_record(record, root, special_tokens)
    except RecordError as err:
        return err.code, None  # special_token_in_text, bad_image
    try:
        load_image(path, **({"max_pixels": max_pixels} if max_pixels else {}))
    except ImageLoadError as err:
        return err.reason, None
    question = users[0].replace(IMAGE_TAG, "").strip()
    return "", RLPrompt(record.id, question, os.fspath(path), gold[0], gold[1])


def to_dataset(prompts: list[RLPrompt]) -> Any:
    """A `datasets.Dataset` in TRL's conversational form (`prompt`, `image`, plus `answer` and
    `answer_type` for the rewards); images load (as in training: RGB on white, square) when read."""
    from datasets import Dataset

    dataset = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": p.question}] for p in prompts],
        "image_path": [p.image for p in prompts],
        "answer": [p.answer for p in prompts],
        "answer_type": [p.answer_type for p in prompts],
        "id": [p.id for p in prompts],
    })

    def with_images(batch: dict[str, list]) -> dict[str, list]:
        return {**batch, "image": [load_image(path) for path in batch["image_path"]]}

    return dataset.with_transform(with_images)
