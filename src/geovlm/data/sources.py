"""A corpus to train on -- file, image root, mixing weight -- as configs, the CLI and the dataset name it."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataSource:
    """One corpus in the LLaVA conversation format.

    ``weight`` w repeats the corpus ``floor(w)`` times and adds a seeded subsample of
    ``round((w - floor(w)) * n)`` of its records: 1.0 is each record once, 2.5 each twice plus half of
    them a third time, 0.1 a tenth of them.
    """

    path: str  # JSON or JSONL records
    images: str | None = None  # image root; default: the folder of `path`
    weight: float = 1.0  # relative sampling weight when several sources are mixed

    def __post_init__(self) -> None:
        if not isinstance(self.weight, int | float) or isinstance(self.weight, bool) or not math.isfinite(self.weight) \
                or self.weight <= 0:
            raise ValueError(f"source {self.path}: weight must be a positive number, got {self.weight!r}")

    @property
    def image_root(self) -> str:
        """Where the records' image paths are relative to."""
        return self.images if self.images is not None else str(Path(self.path).parent)

    @classmethod
    def coerce(cls, item: Any) -> DataSource:
        """A source from a path, a ``(path, images[, weight])`` tuple or a ``{path, images, weight}``
        mapping (as YAML configs write it); unknown keys are an error, not ignored."""
        if isinstance(item, cls):
            return item
        if isinstance(item, str | os.PathLike):
            return cls(os.fspath(item))
        if isinstance(item, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(item) - known)
            if unknown or "path" not in item:
                problem = f"unknown key(s) {', '.join(map(repr, unknown))}" if unknown else "no 'path'"
                raise ValueError(f"data source {dict(item)!r}: {problem}; a source has {', '.join(sorted(known))}")
            return cls(os.fspath(item["path"]), _optional_path(item.get("images")), item.get("weight", 1.0))
        if isinstance(item, Sequence) and 1 <= len(item) <= 3:
            images = item[1] if len(item) > 1 else None
            return cls(os.fspath(item[0]), _optional_path(images), item[2] if len(item) > 2 else 1.0)
        raise ValueError(f"a data source is a path, a (path, images, weight) tuple or a mapping with "
                         f"path/images/weight, got {item!r}")


def _optional_path(value: Any) -> str | None:
    return None if value is None else os.fspath(value)


def expand_weight(num_records: int, weight: float, rng: random.Random) -> list[int]:
    """Record positions for one source: ``floor(weight)`` full passes plus a sorted seeded subsample."""
    whole = int(weight)
    extra = round((weight - whole) * num_records)
    return list(range(num_records)) * whole + sorted(rng.sample(range(num_records), extra))
