"""One way in for every command: load a model and its processor from a folder or hub id, or build a tiny
one offline."""

from __future__ import annotations

import os
from typing import Any

import torch

from geovlm.convert.seed import convert_seed_checkpoint, read_seed_config
from geovlm.modeling import GeoVLM, GeoVLMConfig, GeoVLMProcessor
from geovlm.processing.build import processor_for


def load_pretrained(
    path: str | os.PathLike, *, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None
) -> tuple[GeoVLM, GeoVLMProcessor]:
    """`(model, processor)` from a GeoVLM folder or hub id (this release's or an earlier one's), a LoRA
    adapter folder, or a seed-code checkpoint folder. The model is in eval mode. A local folder of any
    other model is refused before anything is built (its config would give a default-size GeoVLM)."""
    check_folder_kind(path)
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
    return model.eval(), processor


def check_folder_kind(path: str | os.PathLike) -> None:
    """ValueError, naming what the folder holds, unless it is a GeoVLM, seed-code or adapter folder."""
    import json

    folder = os.fspath(path)
    if not os.path.isdir(folder) or os.path.isfile(os.path.join(folder, "adapter_config.json")):
        return  # a hub id, or LoRA adapters (their base is checked when it loads)
    config_path = os.path.join(folder, "config.json")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{folder} has no config.json: not a model folder") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{config_path} cannot be read: {err}") from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in (GeoVLMConfig.model_type, "vlm_model"):
        raise ValueError(f"{folder} holds a {kind or 'model of unknown type'!s} model "
                         f"(architectures: {config.get('architectures') if isinstance(config, dict) else None}), "
                         "not a GeoVLM one; build a GeoVLM from it with GeoVLM.from_backbones or geovlm pretrain --llm")


def load_adapter_folder(path: str | os.PathLike, *, dtype: torch.dtype | str | None = None):
    """A LoRA run saved as adapters: its base GeoVLM (recorded in adapter_config.json) + the adapters,
    merged for inference."""
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
    if not base_path:
        raise ValueError(f"{path}/adapter_config.json does not name its base model")
    base = GeoVLM.from_pretrained(base_path, dtype=dtype)
    peft_model = PeftModel.from_pretrained(base, path)
    # LoRA's B matrices start at zero: all-zero ones mean the adapter's weights did not fit this layout
    # (peft only warns), e.g. adapters saved before the LLaVA layout.
    lora_b = [p for name, p in peft_model.named_parameters() if "lora_B" in name]
    if lora_b and not any(bool(p.detach().any()) for p in lora_b):
        raise ValueError(f"the LoRA adapters in {path} did not load into the model (an earlier layout?); "
                         "merge them with the release that wrote them, or retrain")
    return peft_model.merge_and_unload(), GeoVLMProcessor.from_pretrained(path)


def build_tiny(preset: str = "tiny", *, vision: dict[str, Any] | None = None, text: dict[str, Any] | None = None,
               head_std: float | None = None, system_prompt: Any = ..., **config_overrides: Any
               ) -> tuple[GeoVLM, GeoVLMProcessor]:
    """A randomly initialised GeoVLM of a preset's size (tiny by default) with the real Qwen2.5 tokenizer,
    built offline: the one factory that tests, benchmarks and the quickstart use. `vision`/`text`
    override backbone config fields, other keywords GeoVLM config fields. `head_std` unties `lm_head`
    from the embeddings and draws it with that std: a random tied head gives nearly flat logits, and
    greedy text worth comparing needs clear winners."""
    if head_std is not None:
        text = {**(text or {}), "tie_word_embeddings": False}
    config = GeoVLMConfig.from_preset(preset, vision=vision, text=text, **config_overrides)
    model = GeoVLM(config)
    if head_std is not None:
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, head_std)
    processor = processor_for(config)
    if system_prompt is not ...:
        processor.system_prompt = system_prompt
    return model, processor
