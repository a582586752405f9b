"""GeoVLM: a small vision-language model (SigLIP + Qwen2.5) that solves geometry problems from diagrams."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Resolved on first use, so that `geovlm synth --help` and friends need not import torch.
_EXPORTS = {
    "GeoVLMConfig": "geovlm.modeling",
    "GeoVLM": "geovlm.modeling",
    "GeoVLMForConditionalGeneration": "geovlm.modeling",
    "GeoVLMModel": "geovlm.modeling",
    "GeoVLMProcessor": "geovlm.modeling",
    "load_qwen_tokenizer": "geovlm.processing.tokenizer",
    "load_pretrained": "geovlm.loading",
    "build_tiny": "geovlm.loading",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'geovlm' has no attribute {name!r}")
