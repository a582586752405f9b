"""Where GeoVLM keeps what it can rebuild (the offline tokenizer, token-length tables): one folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$GEOVLM_CACHE``, defaulting to ``~/.cache/geovlm``."""
    return Path(os.environ.get("GEOVLM_CACHE") or Path.home() / ".cache" / "geovlm")
