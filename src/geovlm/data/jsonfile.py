"""The one reader of JSON record files: a ``.json`` list or ``.jsonl`` lines, item by item, located.

Corpora, questions, gold answers and predictions all come in these two layouts. A JSONL line that does
not parse is one bad item (reported with its line, the rest of the file still read), so a caller decides
whether that is a skip, an error, or -- for a predictions file cut by a kill mid-write -- expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Layout = Literal["json", "jsonl", "auto"]


class JSONFileError(ValueError):
    """The file as a whole cannot be read (invalid JSON document, not UTF-8, not a list)."""

    def __init__(self, message: str, *, line: int | None = None, code: str = "bad_json") -> None:
        super().__init__(message)
        self.line = line
        self.code = code


@dataclass(frozen=True)
class JSONItem:
    value: Any  # the parsed value; None when `error` is set
    index: int  # position among the file's items, from 0
    line: int | None  # 1-based line of a JSONL item; None inside a JSON list
    error: str | None = None  # why this JSONL line could not be parsed

    def where(self, path: str | os.PathLike) -> str:
        """``path:line`` for JSONL, ``path: item N`` (from 1) for a list."""
        return f"{path}:{self.line}" if self.line is not None else f"{path}: item {self.index + 1}"


def iter_json_items(path: str | os.PathLike, layout: Layout = "auto") -> Iterator[JSONItem]:
    """Items of ``path``. ``auto`` reads a list when the first non-blank character is ``[``, else lines."""
    p = Path(path)
    if layout == "auto":
        layout = "json" if _first_char(p) == b"[" else "jsonl"
    yield from (_json_list(p) if layout == "json" else _json_lines(p))


def read_json_objects(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """``(location, object)`` pairs of a file whose every item must be a JSON object (questions, answers,
    predictions).

    Locations are :meth:`JSONItem.where`'s, so errors can name them. Raises ValueError (naming the
    location) on the first line that does not parse or item that is not an object."""
    located = []
    try:
        for item in iter_json_items(path):
            if item.error is not None:
                raise ValueError(f"{item.where(path)}: {item.error}")
            if not isinstance(item.value, dict):
                raise ValueError(f"{item.where(path)}: expected a JSON object, got {type(item.value).__name__}")
            located.append((item.where(path), item.value))
    except JSONFileError as err:
        raise ValueError(f"{path}{f':{err.line}' if err.line else ''}: {err}") from None
    return located


def _first_char(p: Path) -> bytes:
    with p.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1]


def _json_list(p: Path) -> Iterator[JSONItem]:
    try:
        with p.open(encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise JSONFileError(f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise JSONFileError(f"not UTF-8 text: {exc}") from None
    if not isinstance(data, list):
        raise JSONFileError(f"expected a JSON list of records, got {type(data).__name__}", code="bad_file")
    for index, value in enumerate(data):
        yield JSONItem(value, index, None)


def _json_lines(p: Path) -> Iterator[JSONItem]:
    index = 0
    with p.open("rb") as f:  # bytes, so one badly encoded line is one bad item, not a dead file
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 byte order mark
            if not raw.strip():
                continue
            try:
                yield JSONItem(json.loads(raw.decode("utf-8")), index, line_no)
            except UnicodeDecodeError as exc:
                yield JSONItem(None, index, line_no, f"not UTF-8 text: {exc}")
            except json.JSONDecodeError as exc:
                yield JSONItem(None, index, line_no, f"invalid JSON: {exc.msg} (column {exc.colno})")
            index += 1
