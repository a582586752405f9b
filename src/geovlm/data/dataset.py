"""Training datasets over LLaVA-format corpora, with exact accounting of every sample that cannot be used.

One map-style :class:`GeoVLMDataset` serves every corpus we train on (LLaVA-CC3M-Pretrain-595K,
Geo170K, LLaVA-Instruct, the synthetic engine's output) and mixes several of them with weights. Build it
with :func:`build_dataset`::

    dataset = build_dataset([("dataset/Geo170K/qa_tuning.json", "dataset/Geo170K/images", 1.0)], processor,
                            max_length=1024)

A sample is ``{"input_ids", "labels", "pixel_values" (n_images, 3, H, W) or None, "id", "num_images",
"skipped"}``. Prompts and labels come from :func:`geovlm.processing.conversation.encode_conversation` (ChatML through the
tokenizer's template; labels on every assistant reply and its ``<|im_end|>``), images from
:func:`geovlm.data.images.load_image`.

Bad samples. A record can be unusable for four kinds of reasons: it is malformed (found when the file is
read), its image is missing / unreadable / truncated / too large (found when the image is loaded), or it
is too long to truncate without cutting an image span or losing every supervised token. Such a sample
is never patched up (no blank image, no invented answer). ``__getitem__(i)`` must still return something,
and we chose *substitution* over returning ``None``:

* when sample ``i`` is bad, ``__getitem__(i)`` records one :class:`SkipRecord` for ``i`` and returns
  instead the first usable sample in a probe sequence that depends only on ``(seed, i)``;
* the skip travels inside the sample (``"skipped"``), the collator gathers them into the batch, and the
  training loop aggregates them in a :class:`SkipCounter` -- DataLoader workers cannot update an object
  in the parent process, but whatever they put in a batch reaches it.

Why not ``None`` + a collator that drops it: batches would shrink and could end up empty. An empty
batch cannot go through the model, and under DDP a rank that skips its step hangs every other rank at
the gradient all-reduce; a shrunken batch also changes the effective batch size silently. Substitution
keeps every batch full and made only of real samples. Counts stay exact: a bad index is counted exactly
when it is drawn (once per draw), and bad records met while probing for a substitute are *not* counted
then -- they are counted when their own index is drawn. So over one epoch each bad record is counted
once, and ``counts / samples drawn`` is the true bad fraction. The probe is pseudo-random rather than
``i+1, i+2, ...`` because corpora are sorted by folder: a missing folder makes thousands of consecutive
records bad, and a linear probe would hand the one record after them thousands of times per epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geovlm.constants import IGNORE_INDEX
from geovlm.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SKIP_REASONS,
    ImageLoadError,
    load_image,
    resolve_image_path,
)
from geovlm.data.records import Record, RecordError, read_records_lenient
from geovlm.processing.conversation import conversation_lengths, encode_conversation, to_messages

logger = logging.getLogger(__name__)

MALFORMED = "malformed"
TOO_LONG = "too_long"
SKIP_REASONS: tuple[str, ...] = (MALFORMED, *IMAGE_SKIP_REASONS, TOO_LONG)

# Random probes for a substitute before falling back to a linear scan (which always terminates).
_RANDOM_PROBES = 32
# Skips logged at WARNING per process; later ones go to DEBUG so a bad corpus cannot flood the log.
_WARN_LIMIT = 50
_LENGTHS_CACHE_VERSION = 1


class DataQualityError(RuntimeError):
    """Too many samples of a corpus are unusable (see :meth:`SkipCounter.check_budget`)."""


# --- skip accounting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkipRecord:
    """One unusable sample: why, which record, which file (the image, or the data file)."""

    reason: str
    id: str
    path: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class SampleSkipped(Exception):
    """Raised by :meth:`GeoVLMDataset.load` for a sample that cannot be used."""

    def __init__(self, record: SkipRecord) -> None:
        self.record = record
        super().__init__(f"{record.reason}: id={record.id!r} path={record.path!r} {record.detail}".rstrip())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.record,))


class SkipCounter(Mapping[str, int]):
    """Reason -> number of skipped samples, plus up to ``max_examples`` examples per reason.

    It is a read-only mapping of the counts (so ``dict(counter)`` and ``sorted(counter.items())`` work) and
    it is picklable. Feed it the ``"skipped"`` entry of each collated batch::

        counter = dataset.skip_counter()  # starts with the malformed records found at load time
        for batch in loader:
            counter.update(batch.pop("skipped"), seen=len(batch["input_ids"]))
        counter.check_budget(max_bad_fraction=0.05)

    ``seen`` counts samples drawn (good and bad); counts are per draw, so a bad record drawn in two epochs
    counts twice, in step with ``seen``.
    """

    def __init__(self, max_examples: int = 5) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[SkipRecord]] = {}
        self.max_examples = max_examples
        self.seen = 0

    # Mapping interface over the counts.
    def __getitem__(self, reason: str) -> int:
        return self.counts[reason]

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts)

    def __len__(self) -> int:
        return len(self.counts)

    def __repr__(self) -> str:
        return f"SkipCounter({dict(self.counts)}, seen={self.seen})"

    @property
    def total(self) -> int:
        """Number of skipped samples, all reasons together."""
        return sum(self.counts.values())

    def add(self, record: SkipRecord | Mapping[str, str]) -> None:
        if not isinstance(record, SkipRecord):
            record = SkipRecord(**record)
        self.counts[record.reason] += 1
        examples = self.examples.setdefault(record.reason, [])
        if len(examples) < self.max_examples:
            examples.append(record)

    def update(self, records: Iterable[SkipRecord | Mapping[str, str]] | None, seen: int = 0) -> None:
        """Add skip records (a batch's ``"skipped"`` list) and ``seen`` more samples drawn."""
        for record in records or ():
            self.add(record)
        self.seen += seen

    def merge(self, other: SkipCounter) -> None:
        """Add another counter's counts, examples and ``seen`` (e.g. from another rank)."""
        for reason, count in other.counts.items():
            self.counts[reason] += count
            examples = self.examples.setdefault(reason, [])
            examples.extend(other.examples.get(reason, [])[: max(0, self.max_examples - len(examples))])
        self.seen += other.seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "counts": dict(self.counts),
            "examples": {reason: [r.as_dict() for r in rs] for reason, rs in self.examples.items()},
        }

    def _reasons(self) -> list[str]:
        known = [r for r in SKIP_REASONS if self.counts[r]]
        return known + sorted(r for r in self.counts if r not in SKIP_REASONS and self.counts[r])

    def _breakdown(self) -> str:
        parts = []
        for reason in self._reasons():
            text = f"{reason}={self.counts[reason]}"
            if self.examples.get(reason):
                first = self.examples[reason][0]
                text += f" (e.g. id {first.id!r}, path {first.path!r})"
            parts.append(text)
        return ", ".join(parts)

    def report(self, total_seen: int | None = None, noun: str = "samples") -> str:
        """One line: how many samples were unusable, by reason, with an example of each."""
        total_seen = self.seen if total_seen is None else total_seen
        if not self.total:
            return f"all {total_seen} {noun} were usable"
        share = f" ({100 * self.total / total_seen:.1f}%)" if total_seen else ""
        return f"{self.total} of {total_seen} {noun}{share} were unusable: {self._breakdown()}"

    def check_budget(self, total_seen: int | None = None, max_bad_fraction: float = 0.05) -> None:
        """Raise :class:`DataQualityError` when more than ``max_bad_fraction`` of the samples were bad.

        ``total_seen`` defaults to :attr:`seen`. The trainer should call this once enough samples have
        been drawn for the fraction to mean something (e.g. at each log step after the first few hundred
        samples, and at the end of each epoch).
        """
        total_seen = self.seen if total_seen is None else total_seen
        if total_seen <= 0 or self.total / total_seen <= max_bad_fraction:
            return
        raise DataQualityError(
            f"{self.total} of {total_seen} samples ({100 * self.total / total_seen:.1f}%) were unusable, "
            f"more than max_bad_fraction={100 * max_bad_fraction:g}%: {self._breakdown()}; run "
            "`geovlm data check DATA.json --images DIR` to list every bad record, then fix or remove them "
            "(or raise max_bad_fraction)"
        )


# --- sources --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """One corpus file, its image root (default: the file's folder) and its mixing weight.

    ``weight`` w repeats the corpus ``floor(w)`` times and adds a seeded subsample of
    ``round((w - floor(w)) * n)`` of its records: 1.0 is each record once, 2.5 each twice plus half of
    them a third time, 0.1 a tenth of them.
    """

    path: str
    image_root: str | None = None
    weight: float = 1.0

    @property
    def images(self) -> str:
        return self.image_root if self.image_root is not None else str(Path(self.path).parent)


SourceLike = SourceSpec | str | os.PathLike | Sequence[Any] | Mapping[str, Any] | Any


def as_source(item: SourceLike) -> SourceSpec:
    """Accept a path, a ``(path, image_root[, weight])`` tuple, a mapping with ``path``/``images``/
    ``weight`` (``image_root`` also accepted), or an object with those attributes (``TrainConfig``'s
    ``DataSource``)."""
    if isinstance(item, SourceSpec):
        spec = item
    elif isinstance(item, (str, os.PathLike)):
        spec = SourceSpec(os.fspath(item))
    elif isinstance(item, Mapping):
        images = item.get("images", item.get("image_root"))
        spec = SourceSpec(os.fspath(item["path"]), _opt_path(images), float(item.get("weight", 1.0)))
    elif isinstance(item, Sequence):
        if not 1 <= len(item) <= 3:
            raise ValueError(f"a source tuple is (path, image_root, weight), got {item!r}")
        images = item[1] if len(item) > 1 else None
        weight = item[2] if len(item) > 2 else 1.0
        spec = SourceSpec(os.fspath(item[0]), _opt_path(images), float(weight))
    else:
        images, weight = getattr(item, "images", None), getattr(item, "weight", 1.0)
        spec = SourceSpec(os.fspath(item.path), _opt_path(images), float(weight))
    if not math.isfinite(spec.weight) or spec.weight <= 0:
        raise ValueError(f"source {spec.path}: weight must be a positive number, got {spec.weight}")
    return spec


def _opt_path(value: Any) -> str | None:
    return None if value is None else os.fspath(value)


def expand_weight(num_records: int, weight: float, rng: random.Random) -> list[int]:
    """Record positions for one source: ``floor(weight)`` full passes plus a sorted seeded subsample."""
    whole = int(weight)
    extra = round((weight - whole) * num_records)
    return list(range(num_records)) * whole + sorted(rng.sample(range(num_records), extra))


# --- encoding shared with `geovlm data check` -----------------------------------------------------------


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


# --- the dataset ----------------------------------------------------------------------------------------


@dataclass
class _Source:
    spec: SourceSpec
    records: list[Record]
    image_paths: list[Path | None]
    num_read: int  # records in the file, malformed ones included


class GeoVLMDataset(Dataset):
    """Map-style dataset over one or more LLaVA-format corpora (see the module docstring).

    Args:
        sources: ``(path, image_root, weight)`` tuples, :class:`SourceSpec` s, mappings or
            ``DataSource`` objects; see :func:`as_source`.
        processor: a :class:`GeoVLMProcessor`.
        max_length: tokens per sample, image span included; longer samples are truncated from the end
            (or skipped as ``too_long``). ``None``: no limit.
        max_pixels / pad_to_square: passed to :func:`load_image`.
        system_prompt: ``...`` (default) uses ``processor.system_prompt``; ``None`` for no system turn.
        seed: fixes the weight subsamples and the substitutes for bad samples.
        cache_dir: where token lengths are cached (default ``$GEOVLM_CACHE/lengths``, ``GEOVLM_CACHE``
            defaulting to ``~/.cache/geovlm``); ``cache_lengths=False`` keeps them in memory only.
    """

    def __init__(
        self,
        sources: Iterable[SourceLike],
        processor: Any,
        *,
        max_length: int | None = 1024,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        pad_to_square: bool = True,
        system_prompt: Any = ...,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        cache_lengths: bool = True,
    ) -> None:
        if max_length is not None and max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.processor = processor
        self.max_length = max_length
        self.max_pixels = max_pixels
        self.pad_to_square = pad_to_square
        self.system_prompt = processor.system_prompt if system_prompt is ... else system_prompt
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.cache_lengths = cache_lengths
        self.load_skips = SkipCounter()  # malformed records found while reading the files
        self._known_bad: dict[tuple[int, int], SkipRecord] = {}  # per process; avoids re-decoding
        self._logged = 0

        specials = special_token_strings(processor.tokenizer)
        self._sources = [self._read_source(as_source(s), specials) for s in sources]
        if not self._sources:
            raise ValueError("no data sources given")
        source_ids: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        for k, source in enumerate(self._sources):
            rng = random.Random(f"geovlm-mix:{seed}:{k}")
            picked = expand_weight(len(source.records), source.spec.weight, rng)
            source_ids.append(np.full(len(picked), k, dtype=np.int32))
            positions.append(np.asarray(picked, dtype=np.int64))
        self._source_of = np.concatenate(source_ids)
        self._position = np.concatenate(positions)
        self._lengths: list[int] | None = None
        if self.load_skips.total:
            logger.warning("%s", self.load_skips.report(self.num_records_read, noun="records"))
        if not len(self):
            raise DataQualityError(
                f"no usable records in {', '.join(s.spec.path for s in self._sources)}"
                + (
                    f": {self.load_skips.report(self.num_records_read, noun='records')}"
                    if self.load_skips
                    else ""
                )
            )

    def _read_source(self, spec: SourceSpec, specials: Sequence[str]) -> _Source:
        records, errors = read_records_lenient(spec.path)  # whole-file problems raise RecordError
        for err in errors:
            self._note_malformed(spec, err)
        kept: list[Record] = []
        image_paths: list[Path | None] = []
        for record in records:
            try:
                image_paths.append(validate_record(record, spec.images, specials))
            except RecordError as err:
                self._note_malformed(spec, err)
                continue
            kept.append(record)
        return _Source(spec, kept, image_paths, num_read=len(records) + len(errors))

    def _note_malformed(self, spec: SourceSpec, err: RecordError) -> None:
        record_id = err.record_id or f"{err.source}:line {err.line}"
        self._log_limited("skipping malformed record: %s", err)
        self.load_skips.add(SkipRecord(MALFORMED, record_id, spec.path, f"{err.problem} [{err.code}]"))

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self._position)

    @property
    def num_records_read(self) -> int:
        """Records in all files, malformed ones included (weights not applied)."""
        return sum(s.num_read for s in self._sources)

    def skip_counter(self) -> SkipCounter:
        """A fresh counter for a training run, holding the malformed records found at load time
        (they count as seen: ``seen`` starts at their number)."""
        counter = SkipCounter()
        counter.merge(self.load_skips)
        counter.seen = self.load_skips.total
        return counter

    def record(self, idx: int) -> Record:
        return self._sources[self._source_of[idx]].records[self._position[idx]]

    @property
    def lengths(self) -> list[int]:
        """Token count of each sample (image span included, capped at ``max_length``), from the text
        alone: no image is opened. Computed once per file and cached on disk, for length-grouped
        sampling; a bad sample's length is its record's (it will be replaced by a substitute)."""
        if self._lengths is None:
            per_source = [self._source_lengths(s) for s in self._sources]
            cap = self.max_length if self.max_length is not None else math.inf
            pairs = zip(self._source_of.tolist(), self._position.tolist(), strict=True)
            self._lengths = [int(min(per_source[k][p], cap)) for k, p in pairs]
        return self._lengths

    def _source_lengths(self, source: _Source) -> list[int]:
        key = self._lengths_key(source)
        cache_file = self.cache_dir / "lengths" / f"{key}.json"
        if self.cache_lengths:
            try:
                cached = json.loads(cache_file.read_text())
                if cached.get("key") == key and len(cached["lengths"]) == len(source.records):
                    return cached["lengths"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        lengths = text_lengths(source.records, self.processor, self.system_prompt)
        if self.cache_lengths:
            _write_json_atomic(cache_file, {"key": key, "source": source.spec.path, "lengths": lengths})
        return lengths

    def _lengths_key(self, source: _Source) -> str:
        stat = os.stat(source.spec.path)
        tok = self.processor.tokenizer
        ident = {
            "version": _LENGTHS_CACHE_VERSION,
            "file": os.path.abspath(source.spec.path),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "tokenizer": [type(tok).__name__, getattr(tok, "name_or_path", ""), len(tok)],
            "added": sorted(tok.get_added_vocab().items()),
            "template": self.processor.chat_template,
            "span": self.processor.image_span,
            "system": self.system_prompt,
            "records": len(source.records),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]

    # ------------------------------------------------------------------ samples
    def load(self, idx: int) -> dict[str, Any]:
        """Sample ``idx`` itself, or :class:`SampleSkipped` with the reason it cannot be used."""
        k, pos = int(self._source_of[idx]), int(self._position[idx])
        known = self._known_bad.get((k, pos))
        if known is not None:
            raise SampleSkipped(known)
        source = self._sources[k]
        record, image_path = source.records[pos], source.image_paths[pos]
        try:
            sample = self._build(record, image_path, source.spec.path)
        except SampleSkipped as skip:
            self._known_bad[(k, pos)] = skip.record
            self._log_skip(skip.record)
            raise
        return sample

    def _build(self, record: Record, image_path: Path | None, data_path: str) -> dict[str, Any]:
        # Token work first: it is cheap, and a too-long sample never costs an image decode.
        ids, labels, num_images = encode_record(
            record, self.processor, max_length=self.max_length, system_prompt=self.system_prompt,
            path=data_path,
        )  # fmt: skip
        pixel_values = None
        if image_path is not None:
            try:
                image = load_image(image_path, max_pixels=self.max_pixels, pad_to_square=self.pad_to_square)
            except ImageLoadError as err:
                raise SampleSkipped(SkipRecord(err.reason, record.id, str(image_path), err.detail)) from None
            pixel_values = self.processor(images=[image], return_tensors="pt")["pixel_values"]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "num_images": num_images,
            "id": record.id,
        }

    def __getitem__(self, idx: int) -> dict[str, Any]:
        """Sample ``idx``, or -- when it is bad -- a deterministic real substitute carrying one skip record
        for ``idx`` in ``"skipped"`` (see the module docstring for why)."""
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for a dataset of {len(self)} samples")
        try:
            return {**self.load(idx), "skipped": []}
        except SampleSkipped as skip:
            bad = skip.record
        return {**self._substitute(idx), "skipped": [bad.as_dict()]}

    def substitute_candidates(self, idx: int) -> Iterator[int]:
        """The probe order for a substitute of ``idx``: seeded random picks, then every index in turn."""
        n = len(self)
        rng = random.Random(f"geovlm-substitute:{self.seed}:{idx}")
        for _ in range(min(_RANDOM_PROBES, n)):
            candidate = rng.randrange(n)
            if candidate != idx:
                yield candidate
        for step in range(1, n):
            yield (idx + step) % n

    def _substitute(self, idx: int) -> dict[str, Any]:
        for candidate in self.substitute_candidates(idx):
            try:
                return self.load(candidate)
            except SampleSkipped:
                continue  # counted when its own index is drawn, not here
        raise DataQualityError(
            f"none of the {len(self)} samples can be used (e.g. {self._known_bad_example()}); run "
            "`geovlm data check DATA.json --images DIR` to list every bad record"
        )

    def _known_bad_example(self) -> str:
        record = next(iter(self._known_bad.values()), None)
        if record is None:
            return "nothing loaded"
        return f"{record.reason}: id {record.id!r}, path {record.path!r}"

    def _log_skip(self, record: SkipRecord) -> None:
        self._log_limited(
            "skipping sample id=%r path=%r: %s %s", record.id, record.path, record.reason, record.detail
        )

    def _log_limited(self, message: str, *args: Any) -> None:
        self._logged += 1
        logger.log(logging.WARNING if self._logged <= _WARN_LIMIT else logging.DEBUG, message, *args)
        if self._logged == _WARN_LIMIT:
            logger.warning("further skipped records in this process are logged at DEBUG level only")


def build_dataset(sources: Iterable[SourceLike], processor: Any, **kwargs: Any) -> GeoVLMDataset:
    """A :class:`GeoVLMDataset` over ``sources`` mixed with their weights; see its arguments."""
    return GeoVLMDataset(sources, processor, **kwargs)


# --- text-only lengths ----------------------------------------------------------------------------------


def text_lengths(
    records: Sequence[Record], processor: Any, system_prompt: Any = ..., batch_size: int = 1024
) -> list[int]:
    """Token counts of whole conversations (image spans included), without truncation (see
    :func:`geovlm.processing.conversation.conversation_lengths`; equal to :func:`encode_conversation`'s)."""
    return conversation_lengths(processor, [to_messages(record.turns) for record in records], system_prompt,
                                batch_size)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("GEOVLM_CACHE") or Path.home() / ".cache" / "geovlm")


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as err:  # a read-only cache only costs speed
        logger.warning("could not cache token lengths in %s: %s", path, err)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
