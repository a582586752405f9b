"""One way in for every command: load a model and its processor from a folder or hub id."""

from __future__ import annotations

import os
from typing import Any

import torch

from geovlm.convert.seed import convert_seed_checkpoint, read_seed_config
from geovlm.modeling import GeoVLM, GeoVLMConfig
from geovlm.processing.processor import GeoVLMProcessor


def load_pretrained(
    path: str | os.PathLike, *, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None
) -> tuple[GeoVLM, GeoVLMProcessor]:
    """`(model, processor)` from a GeoVLM folder or hub id, or from a seed-code checkpoint folder."""
    if os.path.isdir(path) and read_seed_config(path) is not None:
        model, processor = convert_seed_checkpoint(path)
        if dtype is not None:
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    elif os.path.isfile(os.path.join(path, "adapter_config.json")):
        model, processor = load_adapter_folder(path, dtype=dtype)
    else:
        model = GeoVLM.from_pretrained(path, dtype=dtype)
        processor = GeoVLMProcessor.from_pretrained(path)
    if device is not None:
        model.to(device)
    model.processor = processor  # lets `model.chat(...)` / `model.answer(...)` work directly
    return model.eval(), processor


def load_adapter_folder(path: str | os.PathLike, *, dtype: torch.dtype | str | None = None):
    """A LoRA run saved as adapters: its base GeoVLM (recorded in adapter_config.json) + the adapters,
    merged for inference."""
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
    if not base_path:
        raise ValueError(f"{path}/adapter_config.json does not name its base model")
    base = GeoVLM.from_pretrained(base_path, dtype=dtype)
    model = PeftModel.from_pretrained(base, path).merge_and_unload()
    return model, GeoVLMProcessor.from_pretrained(path)


def build_tiny(**config_overrides: Any) -> tuple[GeoVLM, GeoVLMProcessor]:
    """A randomly initialised tiny GeoVLM with the real Qwen2.5 tokenizer, built offline."""
    from geovlm.processing.tokenizer import load_qwen_tokenizer

    config = GeoVLMConfig.from_preset("tiny", **config_overrides)
    model = GeoVLM(config)
    processor = GeoVLMProcessor.from_tokenizer(load_qwen_tokenizer(), config)
    return model, processor

