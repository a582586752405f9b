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

import logging
import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geovlm.cache import cache_root
from geovlm.data.encoding import encode_record, special_token_strings, validate_record
from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from geovlm.data.lengths import cached_text_lengths
from geovlm.data.records import Record, RecordError, read_records_lenient
from geovlm.data.skips import MALFORMED, DataQualityError, SampleSkipped, SkipCounter, SkipRecord
from geovlm.data.sources import DataSource, expand_weight

logger = logging.getLogger(__name__)

# Random probes for a substitute before falling back to a linear scan (which always terminates).
_RANDOM_PROBES = 32
# Skips logged at WARNING per process; later ones go to DEBUG so a bad corpus cannot flood the log.
_WARN_LIMIT = 10


@dataclass
class _Source:
    spec: DataSource
    records: list[Record]
    image_paths: list[Path | None]
    num_read: int  # records in the file, malformed ones included


class GeoVLMDataset(Dataset):
    """Map-style dataset over one or more LLaVA-format corpora (see the module docstring).

    Args:
        sources: :class:`~geovlm.data.sources.DataSource` s, paths, ``(path, images, weight)`` tuples
            or mappings; see :meth:`DataSource.coerce`.
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
        sources: Iterable[Any],
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
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self.cache_lengths = cache_lengths
        self.load_skips = SkipCounter()  # malformed records found while reading the files
        self._known_bad: dict[tuple[int, int], SkipRecord] = {}  # per process; avoids re-decoding
        self._logged = 0

        specials = special_token_strings(processor.tokenizer)
        self._sources = [self._read_source(DataSource.coerce(s), specials) for s in sources]
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

    def _read_source(self, spec: DataSource, specials: Sequence[str]) -> _Source:
        records, errors = read_records_lenient(spec.path)  # whole-file problems raise RecordError
        for err in errors:
            self._note_malformed(spec, err)
        kept: list[Record] = []
        image_paths: list[Path | None] = []
        for record in records:
            try:
                image_paths.append(validate_record(record, spec.image_root, specials))
            except RecordError as err:
                self._note_malformed(spec, err)
                continue
            kept.append(record)
        return _Source(spec, kept, image_paths, num_read=len(records) + len(errors))

    def _note_malformed(self, spec: DataSource, err: RecordError) -> None:
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
        cache = self.cache_dir / "lengths" if self.cache_lengths else None
        return cached_text_lengths(source.spec.path, source.records, self.processor, self.system_prompt, cache)

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
            logger.warning("further skipped records in this process are counted, not listed (the epoch report and the "
                           "skipped/<reason> logs count them; `geovlm data check` lists them all)")


def build_dataset(sources: Iterable[Any], processor: Any, **kwargs: Any) -> GeoVLMDataset:
    """A :class:`GeoVLMDataset` over ``sources`` mixed with their weights; see its arguments."""
    return GeoVLMDataset(sources, processor, **kwargs)
