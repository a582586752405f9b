"""The LLaVA conversation record format shared by every corpus (LLaVA-CC3M-Pretrain-595K, Geo170K, ...).

A record on disk::

    {"id": "...",                       # optional; defaults to "<file name>:<index>"
     "image": "relative/path.png",      # optional; a list holding one path is accepted too
     "conversations": [{"from": "human", "value": "<image>\\nWhat is x?"},
                       {"from": "gpt", "value": "x = 3"}, ...],
     ...}                               # other keys (family, style, ...) are kept in Record.extra

:func:`parse_record` validates one record and returns a :class:`Record` with normalised roles
(``system``/``user``/``assistant``) and a normalised ``<image>`` tag; anything wrong raises
:class:`RecordError` naming the file, the record index and id, and the problem.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geovlm.constants import IMAGE_TAG, ROLE_ALIASES
from geovlm.data.jsonfile import JSONFileError, iter_json_items

SYSTEM = "system"
USER = "user"
ASSISTANT = "assistant"

# ROLE_ALIASES (geovlm.constants) is matched case-insensitively after stripping spaces.

_KNOWN_KEYS = frozenset({"id", "image", "conversations"})

_Fail = Callable[[str, str], "RecordError"]  # (message, code) -> error to raise


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Record:
    id: str
    image: str | None  # path relative to the corpus image root, as written in the file
    turns: tuple[Turn, ...]
    source: str  # file name the record came from
    index: int  # position of the record in that file (0-based; blank JSONL lines not counted)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # unknown keys, e.g. family/style


class RecordError(ValueError):
    """A malformed record (or a malformed line/file). ``code`` is a short machine-readable kind."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        index: int | None = None,
        record_id: str | None = None,
        line: int | None = None,
        code: str = "invalid",
    ) -> None:
        self.source = source
        self.index = index
        self.record_id = record_id
        self.line = line
        self.code = code
        self.problem = message
        where = source
        if line is not None:
            where += f", line {line}"
        if index is not None:
            where += f", record {index}"
        if record_id is not None:
            where += f" (id={record_id!r})"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable across worker processes despite the keyword-only constructor.
        kwargs = {
            "source": self.source,
            "index": self.index,
            "record_id": self.record_id,
            "line": self.line,
            "code": self.code,
        }
        return (_rebuild_record_error, (self.problem, kwargs))


def _rebuild_record_error(message: str, kwargs: dict[str, Any]) -> RecordError:
    return RecordError(message, **kwargs)


def normalize_image_tag(text: str) -> str:
    """Normalise the whitespace around each ``<image>`` tag without moving the tag.

    Spaces and newlines directly before and after a tag are replaced by exactly one newline, and by
    nothing at the start or end of the text: ``"<image>Q"``, ``"<image> \\n Q"`` -> ``"<image>\\nQ"``;
    ``"Q <image>"`` -> ``"Q\\n<image>"``; ``"A <image> B"`` -> ``"A\\n<image>\\nB"``. Text without a tag
    is returned unchanged.
    """
    pieces = text.split(IMAGE_TAG)
    if len(pieces) == 1:
        return text
    last = len(pieces) - 1
    out = ""
    for i, piece in enumerate(pieces):
        if i > 0:
            piece = piece.lstrip()  # whitespace right after a tag
            out += ("\n" if out else "") + IMAGE_TAG
        if i < last:
            piece = piece.rstrip()  # whitespace right before the next tag
        if piece:
            out += ("\n" if out else "") + piece
    return out


def parse_record(obj: Any, *, source: str, index: int, line: int | None = None) -> Record:
    """Validate one decoded JSON record and return it as a :class:`Record`.

    Rules: an object with a non-empty ``conversations`` list; each turn an object with string ``from``
    and ``value``; known roles; after an optional leading system turn, user and assistant turns
    alternate, starting with user and ending with assistant; no empty turn. With an ``image`` the user
    turns hold exactly one ``<image>`` tag -- when there is none, ``<image>\\n`` is put at the front of
    the first user turn, as LLaVA does; without an image there must be no tag. Tags only ever appear in
    user turns.
    """
    default_id = f"{source}:{index}"

    def fail(message: str, code: str, record_id: str = default_id) -> RecordError:
        return RecordError(message, source=source, index=index, record_id=record_id, line=line, code=code)

    if not isinstance(obj, dict):
        raise fail(f"expected a JSON object, got {type(obj).__name__}", "not_object")

    raw_id = obj.get("id")
    if raw_id is None or raw_id == "":
        record_id = default_id
    elif isinstance(raw_id, str) or (isinstance(raw_id, int) and not isinstance(raw_id, bool)):
        record_id = str(raw_id)  # some corpora use integer ids
    else:
        raise fail(f"'id' must be a string or integer, got {type(raw_id).__name__}", "bad_id")

    image = _parse_image(obj.get("image"), lambda msg: fail(msg, "bad_image", record_id))
    turns = _parse_turns(obj.get("conversations"), lambda msg, code: fail(msg, code, record_id))
    turns = _place_image_tag(turns, image, lambda msg, code: fail(msg, code, record_id))

    extra = {k: v for k, v in obj.items() if k not in _KNOWN_KEYS}
    return Record(id=record_id, image=image, turns=turns, source=source, index=index, extra=extra)


def read_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Yield the records of a ``.json`` (a list of records) or ``.jsonl`` (one record a line) file.

    JSONL is streamed line by line and blank lines are skipped. The first malformed record or line
    raises :class:`RecordError`; use :func:`read_records_lenient` to skip and collect them instead.
    """
    for item in _iter_file(path):
        if isinstance(item, RecordError):
            raise item
        yield item


def read_records_lenient(path: str | os.PathLike[str]) -> tuple[list[Record], list[RecordError]]:
    """Read every record of ``path``, collecting malformed records (and JSONL lines) as errors.

    Problems with the file as a whole -- an unreadable ``.json`` document, a top level that is not a
    list, an unknown file type -- still raise, so a broken corpus file is never mistaken for an empty
    one.
    """
    records: list[Record] = []
    errors: list[RecordError] = []
    for item in _iter_file(path):
        (errors if isinstance(item, RecordError) else records).append(item)  # type: ignore[arg-type]
    return records, errors


# --- internals ---------------------------------------------------------------------------------------


def _parse_image(value: Any, fail: Callable[[str], RecordError]) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != 1:
            raise fail(f"'image' list must hold exactly one path, got {len(value)}")
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise fail(f"'image' must be a non-empty string path, got {value!r}")
    return value


def _parse_turns(conversations: Any, fail: _Fail) -> tuple[Turn, ...]:
    if conversations is None:
        raise fail("no 'conversations' field", "no_conversations")
    if not isinstance(conversations, list):
        raise fail(f"'conversations' must be a list, got {type(conversations).__name__}", "bad_conversations")
    if not conversations:
        raise fail("'conversations' is empty", "empty_conversations")

    turns: list[Turn] = []
    for n, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise fail(f"turn {n} must be an object, got {type(turn).__name__}", "bad_turn")
        speaker, value = turn.get("from"), turn.get("value")
        if not isinstance(speaker, str):
            raise fail(f"turn {n}: 'from' must be a string, got {speaker!r}", "bad_turn")
        if not isinstance(value, str):
            raise fail(f"turn {n}: 'value' must be a string, got {type(value).__name__}", "bad_turn")
        role = ROLE_ALIASES.get(speaker.strip().lower())
        if role is None:
            raise fail(f"turn {n}: unknown role {speaker!r}", "unknown_role")
        turns.append(Turn(role=role, content=value))

    # Expected order: [system] user assistant user assistant ... (ending on assistant).
    start = 1 if turns[0].role == SYSTEM else 0
    for n, turn in enumerate(turns[start:], start=start):
        expected = USER if (n - start) % 2 == 0 else ASSISTANT
        if turn.role != expected:
            raise fail(f"turn order: turn {n} is {turn.role}, expected {expected}", "bad_turn_order")
    if not any(t.role == ASSISTANT for t in turns):
        raise fail("no assistant (gpt) turn", "no_assistant")
    if turns[-1].role != ASSISTANT:
        raise fail(f"last turn {len(turns) - 1} is an unanswered user turn", "bad_turn_order")
    return tuple(turns)


def _place_image_tag(turns: tuple[Turn, ...], image: str | None, fail: _Fail) -> tuple[Turn, ...]:
    for n, turn in enumerate(turns):
        if turn.role != USER and IMAGE_TAG in turn.content:
            raise fail(
                f"{IMAGE_TAG} tags may only appear in user turns (turn {n} is {turn.role})",
                "misplaced_image_tag",
            )
    n_tags = sum(t.content.count(IMAGE_TAG) for t in turns)
    if image is None and n_tags:
        raise fail(f"{n_tags} {IMAGE_TAG} tag(s) but no 'image' field", "image_tag_without_image")
    if n_tags > 1:
        raise fail(f"{n_tags} {IMAGE_TAG} tags for one image", "too_many_image_tags")

    first_user = next(n for n, t in enumerate(turns) if t.role == USER)
    out = []
    for n, turn in enumerate(turns):
        content = turn.content
        if image is not None and n_tags == 0 and n == first_user:
            content = IMAGE_TAG + "\n" + content  # LLaVA's convention for untagged image records
        if turn.role == USER:
            content = normalize_image_tag(content)
        if not content.strip():
            raise fail(f"turn {n} ({turn.role}) is empty", "empty_turn")
        out.append(Turn(turn.role, content))
    return tuple(out)


def _iter_file(path: str | os.PathLike[str]) -> Iterator[Record | RecordError]:
    """Yield records and per-record errors; raise RecordError for problems with the whole file."""
    p = Path(path)
    layout = {".json": "json", ".jsonl": "jsonl"}.get(p.suffix.lower())
    if layout is None:
        raise RecordError(
            f"unsupported file type {p.suffix!r}; expected .json or .jsonl", source=p.name, code="bad_file"
        )
    try:
        for item in iter_json_items(p, layout):
            if item.error is not None:
                yield RecordError(item.error, source=p.name, index=item.index, line=item.line, code="bad_json")
                continue
            try:
                yield parse_record(item.value, source=p.name, index=item.index, line=item.line)
            except RecordError as err:
                yield err
    except JSONFileError as exc:  # the file as a whole
        raise RecordError(str(exc), source=p.name, line=exc.line, code=exc.code) from exc
