"""One record to ``(input_ids, labels)``, and the rules that decide whether it can be trained on.

Shared by the dataset and ``geovlm data check``, so that the check reports exactly what training would
skip: special tokens in text, image paths leaving their root, image spans that truncation would cut, and
conversations with no supervised token left.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geovlm.constants import IGNORE_INDEX
from geovlm.data.images import resolve_image_path
from geovlm.data.records import Record, RecordError
from geovlm.data.skips import MALFORMED, TOO_LONG, SampleSkipped, SkipRecord
from geovlm.processing.conversation import encode_conversation


def special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """Strings the tokenizer turns into special tokens; corpus text must not contain them."""
    return tuple(sorted(tokenizer.get_added_vocab(), key=len, reverse=True))


def validate_record(
    record: Record, image_root: str | os.PathLike, special_tokens: Sequence[str]
) -> Path | None:
    """Checks that need the image root or the tokenizer (records.py checked the rest).

    Returns the resolved image path (or ``None`` for a text-only record). Raises :class:`RecordError`
    for an image path that leaves the root, or for text holding a special token such as
    ``<|im_end|>`` or ``<|image_pad|>`` -- the tokenizer would read it as a control token and the
    labels and image spans would no longer line up.
    """

    def fail(message: str, code: str) -> RecordError:
        return RecordError(message, source=record.source, index=record.index, record_id=record.id, code=code)

    for n, turn in enumerate(record.turns):
        if "<|" in turn.content:
            for token in special_tokens:
                if token in turn.content:
                    raise fail(f"turn {n} contains the special token {token!r}", "special_token_in_text")
    if record.image is None:
        return None
    try:
        return resolve_image_path(image_root, record.image)
    except ValueError as err:
        raise fail(str(err), "bad_image") from err


def image_spans(input_ids: Sequence[int], processor: Any) -> list[tuple[int, int]]:
    """``(first, last)`` positions (inclusive) of each image span, markers included."""
    pad = processor.image_token_id
    start_id = _token_id(processor, processor.vision_start_token)
    end_id = _token_id(processor, processor.vision_end_token)
    spans: list[tuple[int, int]] = []
    n, i = len(input_ids), 0
    while i < n:
        if input_ids[i] != pad:
            i += 1
            continue
        j = i
        while j + 1 < n and input_ids[j + 1] == pad:
            j += 1
        first = i - 1 if start_id is not None and i > 0 and input_ids[i - 1] == start_id else i
        last = j + 1 if end_id is not None and j + 1 < n and input_ids[j + 1] == end_id else j
        spans.append((first, last))
        i = j + 1
    return spans


def _token_id(processor: Any, token: str | None) -> int | None:
    return None if token is None else processor.tokenizer.convert_tokens_to_ids(token)


def min_keep_length(input_ids: Sequence[int], labels: Sequence[int], processor: Any) -> int:
    """The shortest prefix that keeps every image span whole and at least one supervised token.

    Truncating to ``max_length >= min_keep_length`` is safe; below it the sample must be skipped.
    """
    spans = image_spans(input_ids, processor)
    first_supervised = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
    if first_supervised is None:
        return len(input_ids) + 1  # no prefix works: nothing is supervised at all
    return max(first_supervised + 1, max((last + 1 for _, last in spans), default=0))


def sample_problem(
    input_ids: Sequence[int], labels: Sequence[int], num_images: int, processor: Any, max_length: int | None
) -> tuple[str, str] | None:
    """Why an encoded conversation cannot be trained on -- ``(reason, detail)`` -- or ``None`` if it can
    (possibly after truncation to ``max_length``). Shared by the dataset and ``geovlm data check`` so
    that the check reports exactly what training would skip."""
    n_pads = sum(1 for t in input_ids if t == processor.image_token_id)
    if n_pads != num_images * processor.num_image_tokens:
        detail = f"{n_pads} image pad tokens for {num_images} image(s) of {processor.num_image_tokens} tokens"
        return MALFORMED, detail
    keep = min_keep_length(input_ids, labels, processor)
    if keep > len(input_ids):
        return MALFORMED, "no supervised token"
    if max_length is not None and len(input_ids) > max_length and keep > max_length:
        cuts_image = any(last >= max_length for _, last in image_spans(input_ids, processor))
        what = "an image span" if cuts_image else "every supervised token"
        return TOO_LONG, f"{len(input_ids)} tokens; cutting to max_length={max_length} would cut {what}"
    return None


def encode_record(
    record: Record, processor: Any, *, max_length: int | None, system_prompt: Any = ..., path: str = ""
) -> tuple[list[int], list[int], int]:
    """``(input_ids, labels, num_images)`` for ``record``, truncated from the end to ``max_length``.

    Raises :class:`SampleSkipped` as :func:`sample_problem` decides (``too_long`` or ``malformed``);
    ``path`` (the data file) goes into the skip record.
    """
    enc = encode_conversation(processor, record.turns, system_prompt=system_prompt)
    problem = sample_problem(enc.input_ids, enc.labels, enc.num_images, processor, max_length)
    if problem is not None:
        raise SampleSkipped(SkipRecord(problem[0], record.id, path or record.source, problem[1]))
    ids, labels = enc.input_ids, enc.labels
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels, enc.num_images
