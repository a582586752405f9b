"""Scan a whole corpus before training: every record that training would skip, and the token lengths.

:func:`check_corpus` applies the same rules as :class:`~geovlm.data.dataset.GeoVLMDataset` (record
validation, image loading, :func:`~geovlm.data.encoding.sample_problem` for length and labels) to every
record, in a process pool, and returns a :class:`CheckReport`. It backs ``geovlm data check`` and
``geovlm data stats``.

Every image is decoded exactly as training decodes it (``verify=True``, the default), so truncated and
corrupt bodies are found; ``verify=False`` (``geovlm data check --headers-only``) only reads each header
(missing, unreadable header, too large), which is faster but lets a cut file pass, and says so.
A corpus with no records at all is not usable (``CheckReport.ok`` is False): training would have nothing
to read.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geovlm.data.encoding import (
    image_spans,
    min_keep_length,
    sample_problem,
    special_token_strings,
    validate_record,
)
from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, probe_image
from geovlm.data.records import Record, RecordError, read_records_lenient
from geovlm.data.skips import MALFORMED, SKIP_REASONS
from geovlm.processing.conversation import encode_conversation

PERCENTILES = (50, 90, 95, 99)
CANDIDATE_MAX_LENGTHS = (256, 512, 768, 1024, 1536, 2048, 4096)
HISTOGRAM_EDGES = (0, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


@dataclass(frozen=True)
class _Options:
    check_images: bool
    verify: bool
    max_pixels: int
    max_length: int | None
    system_prompt: Any


@dataclass
class _RecordResult:
    position: int  # among the parsed records, in file order
    total: int  # tokens with the image span(s)
    text: int  # tokens without them
    min_keep: int  # shortest safe truncation (see min_keep_length)
    errors: list[dict[str, Any]]


@dataclass
class CheckReport:
    """What :func:`check_corpus` found. ``errors`` holds one dict per problem (a record can have two)."""

    data_file: str
    image_root: str
    max_length: int | None
    max_pixels: int
    images_checked: bool
    verify: bool
    num_records: int  # in the file, malformed ones included
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Per parsed record, in file order (not in the JSON: a 595K-record corpus would make it huge).
    total_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    text_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    min_keep: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def empty(self) -> bool:
        """No records at all: nothing to train on."""
        return self.num_records == 0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.empty

    @property
    def counts(self) -> dict[str, int]:
        """Problems by reason, in the order of SKIP_REASONS."""
        counter = Counter(e["reason"] for e in self.errors)
        order = [r for r in SKIP_REASONS if counter[r]] + sorted(r for r in counter if r not in SKIP_REASONS)
        return {r: counter[r] for r in order}

    @property
    def bad_records(self) -> int:
        return len({(e["id"], e.get("index"), e.get("line")) for e in self.errors})

    def percentiles(self, values: np.ndarray) -> dict[str, int | None]:
        if len(values) == 0:
            return {**{f"p{q}": None for q in PERCENTILES}, "max": None}
        out: dict[str, int | None] = {
            f"p{q}": int(np.percentile(values, q, method="inverted_cdf")) for q in PERCENTILES
        }
        out["max"] = int(values.max())
        return out

    def truncation(self, max_length: int | None) -> dict[str, int | None]:
        """How many parsed records fit, would be truncated (keeping every image span and a supervised
        token), or would be dropped as too long, at ``max_length``."""
        n = len(self.total_lengths)
        if max_length is None:
            return {"max_length": None, "fit": n, "truncated": 0, "dropped": 0}
        fit = int((self.total_lengths <= max_length).sum())
        long = self.total_lengths > max_length
        dropped = int((long & (self.min_keep > max_length)).sum())
        truncated = int(long.sum()) - dropped
        return {"max_length": max_length, "fit": fit, "truncated": truncated, "dropped": dropped}

    def length_table(self) -> list[dict[str, int | None]]:
        candidates = set(CANDIDATE_MAX_LENGTHS) | ({self.max_length} if self.max_length else set())
        return [self.truncation(m) for m in sorted(candidates)]

    def histogram(self) -> list[dict[str, Any]]:
        """Counts of total lengths in bins ``from..to`` (inclusive; the last bin is open: ``to`` None)."""
        top = max(HISTOGRAM_EDGES[-1], int(self.total_lengths.max(initial=0))) + 1
        counts, _ = np.histogram(self.total_lengths, bins=[*HISTOGRAM_EDGES, top])
        uppers: list[int | None] = [hi - 1 for hi in HISTOGRAM_EDGES[1:]] + [None]
        bins = zip(HISTOGRAM_EDGES, uppers, counts, strict=True)
        return [{"from": lo, "to": hi, "count": int(c)} for lo, hi, c in bins]

    def to_dict(self, stats: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data_file": self.data_file,
            "image_root": self.image_root,
            "records": self.num_records,
            "parsed": len(self.total_lengths),
            "bad_records": self.bad_records,
            "ok": self.ok,
            "images_checked": self.images_checked,
            "verify": self.verify,
            "max_pixels": self.max_pixels,
            "counts": self.counts,
            "errors": self.errors,
            "lengths": {
                "with_image": self.percentiles(self.total_lengths),
                "text_only": self.percentiles(self.text_lengths),
            },
            "truncation": self.truncation(self.max_length),
        }
        if stats:
            out["length_table"] = self.length_table()
            out["histogram"] = self.histogram()
        return out

    # ------------------------------------------------------------------ text
    def format_lengths(self) -> list[str]:
        cols = [*(f"p{q}" for q in PERCENTILES), "max"]
        lines = ["token lengths      " + "".join(f"{c:>8}" for c in cols)]
        for name, values in (("with image span", self.total_lengths), ("text only", self.text_lengths)):
            pct = self.percentiles(values)
            lines.append(f"  {name:<17}" + "".join(f"{'-' if pct[c] is None else pct[c]:>8}" for c in cols))
        return lines

    def format(self, show: int = 20) -> str:
        """The human-readable report of ``geovlm data check`` (at most ``show`` errors listed)."""
        images = (
            "not checked"
            if not self.images_checked
            else (
                "every image decoded, as training does"
                if self.verify
                else "headers only (--headers-only): NOT decoded, so truncated or corrupt files pass unseen"
            )
        )
        malformed = self.counts.get(MALFORMED, 0)
        lines = [
            f"data: {self.data_file}",
            f"images: {self.image_root} -- {images}",
            f"records: {self.num_records} ({len(self.total_lengths)} parsed, {malformed} malformed)",
            *self.format_lengths(),
        ]
        t = self.truncation(self.max_length)
        if self.max_length is not None:
            lines.append(
                f"max_length={self.max_length}: {t['fit']} fit, {t['truncated']} would be truncated "
                f"(image spans kept), {t['dropped']} too long (skipped)"
            )
        if self.empty:
            lines.append(f"error: no records in {self.data_file}: training would have nothing to read")
            return "\n".join(lines)
        if not self.errors:
            lines.append("no errors: every record is usable")
            return "\n".join(lines)
        breakdown = ", ".join(f"{r}={n}" for r, n in self.counts.items())
        lines.append(f"errors: {len(self.errors)} in {self.bad_records} record(s): {breakdown}")
        width = max(len(r) for r in self.counts)
        for e in self.errors[:show]:
            where = f" line {e['line']}" if e.get("line") is not None else ""
            lines.append(f"  {e['reason']:<{width}}  id={e['id']!r}{where} path={e['path']!r}: {e['detail']}")
        if len(self.errors) > show:
            lines.append(f"  ... and {len(self.errors) - show} more (--json lists all of them)")
        return "\n".join(lines)

    def format_stats(self) -> str:
        """The length distribution a user needs to choose ``max_length`` (``geovlm data stats``)."""
        lines = [f"data: {self.data_file}", f"records: {self.num_records} ({len(self.total_lengths)} parsed)"]
        lines += self.format_lengths()
        hist = self.histogram()
        used = [i for i, h in enumerate(hist) if h["count"]] or [0]
        top = max(h["count"] for h in hist) or 1
        lines.append("length histogram (with image span):")
        for h in hist[used[0] : used[-1] + 1]:  # from the first to the last non-empty bin
            label = f"{h['from']}-{h['to']}" if h["to"] is not None else f"{h['from']}+"
            lines.append(f"  {label:>11} {h['count']:>9}  {'#' * round(40 * h['count'] / top)}")
        lines.append("max_length        fit  truncated    dropped")
        for row in self.length_table():
            cells = (row["max_length"], row["fit"], row["truncated"], row["dropped"])
            lines.append("  {:>8} {:>9} {:>10} {:>10}".format(*cells))
        return "\n".join(lines)


def default_processor(model: str | os.PathLike | None = None) -> Any:
    """The processor of a GeoVLM folder, or one built offline from the ``tiny`` preset (49 image tokens)."""
    from geovlm.modeling import GeoVLMConfig, GeoVLMProcessor
    from geovlm.processing.build import processor_for

    if model is not None:
        return GeoVLMProcessor.from_pretrained(model)
    return processor_for(GeoVLMConfig.from_preset("tiny"))


def check_corpus(
    data_file: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    processor: Any = None,
    *,
    max_length: int | None = 1024,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_images: bool = True,
    verify: bool = True,
    system_prompt: Any = ...,
    workers: int = 1,
    progress: bool | None = None,
) -> CheckReport:
    """Check every record of ``data_file`` (images under ``image_root``, default: the file's folder).

    ``workers > 1`` spreads the records over a process pool. ``progress``: a tqdm bar on stderr (``None``:
    only when stderr is a terminal). Whole-file problems (not JSON, not a list) raise
    :class:`~geovlm.data.records.RecordError`.
    """
    from tqdm import tqdm

    processor = processor if processor is not None else default_processor()
    image_root = os.fspath(image_root) if image_root is not None else str(Path(data_file).parent)
    data_path = os.fspath(data_file)
    records, record_errors = read_records_lenient(data_path)
    errors: list[dict[str, Any]] = [_malformed(err, data_path) for err in record_errors]

    specials = special_token_strings(processor.tokenizer)
    items: list[tuple[Record, str | None]] = []
    for record in records:
        try:
            path = validate_record(record, image_root, specials)
        except RecordError as err:
            errors.append(_malformed(err, data_path))
            continue
        items.append((record, None if path is None else str(path)))

    options = _Options(
        check_images=check_images,
        verify=verify,
        max_pixels=max_pixels,
        max_length=max_length,
        system_prompt=processor.system_prompt if system_prompt is ... else system_prompt,
    )
    tasks = [(position, record, path, data_path) for position, (record, path) in enumerate(items)]
    results: list[_RecordResult] = []
    disable = None if progress is None else not progress  # tqdm's None: only on a terminal
    with tqdm(total=len(tasks), desc="checking", unit="rec", disable=disable, file=sys.stderr) as bar:
        for result in _run(tasks, processor, options, workers):
            results.append(result)
            bar.update()
    results.sort(key=lambda r: r.position)
    for result in results:
        errors.extend(result.errors)
    errors.sort(key=_error_order)

    return CheckReport(
        data_file=data_path,
        image_root=image_root,
        max_length=max_length,
        max_pixels=max_pixels,
        images_checked=check_images,
        verify=verify,
        num_records=len(records) + len(record_errors),
        errors=errors,
        total_lengths=np.array([r.total for r in results], dtype=np.int64),
        text_lengths=np.array([r.text for r in results], dtype=np.int64),
        min_keep=np.array([r.min_keep for r in results], dtype=np.int64),
    )


def _error_order(error: dict[str, Any]) -> tuple[int, int]:
    index = error.get("index")
    return (index if index is not None else -1, error.get("line") or 0)


def _malformed(err: RecordError, data_path: str) -> dict[str, Any]:
    return {
        "reason": MALFORMED,
        "id": err.record_id or f"{err.source}:line {err.line}",
        "index": err.index,
        "line": err.line,
        "path": data_path,
        "code": err.code,
        "detail": err.problem,
    }


# --- the per-record work, in the pool -------------------------------------------------------------------

_state: tuple[Any, _Options, int] | None = None  # (processor, options, tokens per image span)


def _init_worker(processor: Any, options: _Options) -> None:
    global _state
    span = len(processor.tokenizer.encode(processor.image_span, add_special_tokens=False))
    _state = (processor, options, span)


def _run(
    tasks: Sequence[tuple[int, Record, str | None, str]], processor: Any, options: _Options, workers: int
) -> Iterable[_RecordResult]:
    if workers <= 1 or len(tasks) < 2 * workers:
        _init_worker(processor, options)
        yield from map(_check_one, tasks)
        return
    # fork shares the processor without pickling it (as DataLoader workers do); elsewhere spawn.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the forked workers tokenize one by one
    chunksize = max(1, min(256, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(processor, options),
    ) as pool:
        yield from pool.map(_check_one, tasks, chunksize=chunksize)


def _check_one(task: tuple[int, Record, str | None, str]) -> _RecordResult:
    assert _state is not None, "worker not initialised"
    processor, options, span = _state
    position, record, image_path, data_path = task
    errors: list[dict[str, Any]] = []

    def error(reason: str, path: str, detail: str) -> None:
        errors.append({
            "reason": reason, "id": record.id, "index": record.index, "line": None,
            "path": path, "code": None, "detail": detail,
        })  # fmt: skip

    enc = encode_conversation(processor, record.turns, system_prompt=options.system_prompt)
    problem = sample_problem(enc.input_ids, enc.labels, enc.num_images, processor, options.max_length)
    if problem is not None:
        error(problem[0], data_path, problem[1])
    if image_path is not None and options.check_images:
        try:
            if options.verify:  # decode exactly as training does
                load_image(image_path, max_pixels=options.max_pixels, pad_to_square=False)
            else:
                probe_image(image_path, options.max_pixels)
        except ImageLoadError as err:
            error(err.reason, image_path, err.detail)
    total = len(enc.input_ids)
    n_spans = len(image_spans(enc.input_ids, processor))
    return _RecordResult(
        position=position,
        total=total,
        text=total - n_spans * span,
        min_keep=min_keep_length(enc.input_ids, enc.labels, processor),
        errors=errors,
    )
