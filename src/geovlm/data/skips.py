"""Accounting for samples that cannot be used: why each was skipped, how many, and when to stop.

A bad record is never patched up; it becomes one :class:`SkipRecord`. The dataset raises
:class:`SampleSkipped` for it, the training loop adds it to a :class:`SkipCounter`, and one
:class:`BadDataBudget` decides, for every stage, when too much of a corpus is bad
(:class:`DataQualityError`). The trainer and ``geovlm data check`` use them without the dataset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from geovlm.data.images import IMAGE_SKIP_REASONS

MALFORMED = "malformed"
TOO_LONG = "too_long"
SKIP_REASONS: tuple[str, ...] = (MALFORMED, *IMAGE_SKIP_REASONS, TOO_LONG)
# What every "too many bad samples" error tells the user to do.
FIX_HINT = ("run `geovlm data check DATA.json --images DIR` to list every bad record, then fix or remove them "
            "(or raise max_bad_fraction)")


class DataQualityError(RuntimeError):
    """Too many samples of a corpus are unusable (see :class:`BadDataBudget`)."""


@dataclass(frozen=True)
class BadDataBudget:
    """The one rule for "too much of the data is bad", shared by the records read at load time, the
    samples the trainer draws and the RL prompts: at most ``max_fraction`` of them may be unusable."""

    max_fraction: float = 0.05

    def allows(self, bad: int, out_of: int) -> bool:
        return bad <= self.max_fraction * out_of

    def check(self, bad: int, seen: int, breakdown: str, *, noun: str = "samples", horizon: int | None = None,
              where: str = "") -> None:
        """Raise :class:`DataQualityError` when ``bad`` of ``seen`` is over the budget, or, given a
        ``horizon`` (everything the run will see by the next full check), as soon as ``bad`` is over the
        budget of the horizon: from then on no number of good items can bring the share back under it.
        ``breakdown`` names the reasons with examples; ``where`` qualifies the counts (" across all ranks")."""
        limit = f"max_bad_fraction={100 * self.max_fraction:g}%"
        if seen <= 0:
            raise DataQualityError(f"no {noun}{where}: nothing to train on ({breakdown or 'the data holds no records'})")
        if horizon is None or horizon <= seen:
            if self.allows(bad, seen):
                return
            what = f"{bad} of {seen} {noun}{where} ({100 * bad / seen:.1f}%) were unusable, more than {limit}"
        else:
            if self.allows(bad, horizon):
                return
            what = (f"{bad} of the {seen} {noun} drawn so far{where} were unusable: more than {limit} of the "
                    f"{horizon} this epoch draws, whatever the rest holds, so training stops now")
        raise DataQualityError(f"{what}: {breakdown}; {FIX_HINT}")


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

        counter = SkipCounter()
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

    def breakdown(self) -> str:
        """``reason=count (e.g. id ..., path ...)`` for each reason, comma-separated."""
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
        return f"{self.total} of {total_seen} {noun}{share} were unusable: {self.breakdown()}"

    def check_budget(self, total_seen: int | None = None, max_bad_fraction: float = 0.05) -> None:
        """Raise :class:`DataQualityError` when more than ``max_bad_fraction`` of ``total_seen`` (default:
        :attr:`seen`) were bad: :class:`BadDataBudget` over this counter."""
        total_seen = self.seen if total_seen is None else total_seen
        if total_seen > 0 or self.total:
            BadDataBudget(max_bad_fraction).check(self.total, total_seen, self.breakdown())
