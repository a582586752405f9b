"""Token counts of whole conversations from their text alone (no image is opened), cached on disk.

Length-grouped sampling needs every sample's length before training starts; tokenizing Geo170K takes a
while, so the counts are kept per corpus file under ``<cache>/lengths/``, keyed by everything that changes
them (the file's size and mtime, the tokenizer, the chat template, the image span, the system prompt).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geovlm.data.records import Record
from geovlm.processing.conversation import conversation_lengths, to_messages

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1


def text_lengths(
    records: Sequence[Record], processor: Any, system_prompt: Any = ..., batch_size: int = 1024
) -> list[int]:
    """Token counts of whole conversations (image spans included), without truncation (see
    :func:`geovlm.processing.conversation.conversation_lengths`; equal to :func:`encode_conversation`'s)."""
    return conversation_lengths(processor, [to_messages(record.turns) for record in records], system_prompt,
                                batch_size)


def cached_text_lengths(
    data_file: str | os.PathLike, records: Sequence[Record], processor: Any, system_prompt: Any,
    cache_dir: Path | None,
) -> list[int]:
    """:func:`text_lengths` of ``records`` (read from ``data_file``), from ``cache_dir`` when it holds
    them; ``cache_dir=None`` computes them without touching the disk."""
    if cache_dir is None:
        return text_lengths(records, processor, system_prompt)
    key = _cache_key(data_file, len(records), processor, system_prompt)
    cache_file = cache_dir / f"{key}.json"
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key and len(cached["lengths"]) == len(records):
            return cached["lengths"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: recompute
    lengths = text_lengths(records, processor, system_prompt)
    _write_json_atomic(cache_file, {"key": key, "source": os.fspath(data_file), "lengths": lengths})
    return lengths


def _cache_key(data_file: str | os.PathLike, num_records: int, processor: Any, system_prompt: Any) -> str:
    stat = os.stat(data_file)
    tok = processor.tokenizer
    ident = {
        "version": _CACHE_VERSION,
        "file": os.path.abspath(data_file),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "tokenizer": [type(tok).__name__, getattr(tok, "name_or_path", ""), len(tok)],
        "added": sorted(tok.get_added_vocab().items()),
        "template": processor.chat_template,
        "span": processor.image_span,
        "system": system_prompt,
        "records": num_records,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


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
