"""What each stage trains: freeze everything, then unfreeze the parts a recipe names."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from geovlm.modeling import GeoVLM
from geovlm.train.config import TrainConfig


def apply_recipe(model: GeoVLM, config: TrainConfig) -> nn.Module:
    """Set `requires_grad` for the stage and return the model to train (a PEFT wrapper for LoRA).

    pretrain: projector only. sft: projector + `lm_trainable` part of the LM (+ vision if asked).
    """
    model.requires_grad_(False)
    model.model.projector.requires_grad_(True)
    if config.train_vision:
        model.model.vision_tower.requires_grad_(True)
    decoder = model.model.language_model
    if config.lm_trainable == "all":
        decoder.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    elif config.lm_trainable == "last_n":
        layers = decoder.layers
        if config.lm_last_n_layers > len(layers):
            raise ValueError(f"lm_last_n_layers={config.lm_last_n_layers} but the LM has {len(layers)} layers")
        for layer in layers[-config.lm_last_n_layers :]:
            layer.requires_grad_(True)
        decoder.norm.requires_grad_(True)  # the final norm feeds every prediction
    elif config.lm_trainable == "lora":
        return wrap_lora(model, config)
    if config.freeze_embeddings:
        # 151,936 rows: their dense gradient and optimizer update dominate a small model's step.
        model.get_input_embeddings().requires_grad_(False)
        model.get_output_embeddings().requires_grad_(False)
    return model


def wrap_lora(model: GeoVLM, config: TrainConfig) -> nn.Module:
    """LoRA adapters on the LM's linear layers; the projector (and vision, if asked) train fully."""
    from peft import LoraConfig, get_peft_model

    names = "|".join(config.lora_target_modules)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        # Only the language model's layers: the vision tower has q/k/v projections too.
        target_modules=rf".*language_model\..*\.({names})",
        modules_to_save=["projector"] + (["vision_tower"] if config.train_vision else []),
    )
    return get_peft_model(model, lora)


def count_parameters(model: nn.Module) -> OrderedDict[str, dict[str, int]]:
    """Trainable and total parameter counts per top-level part (vision, projector, LM, LoRA)."""
    parts: OrderedDict[str, dict[str, int]] = OrderedDict(
        (name, {"trainable": 0, "total": 0}) for name in ("vision_tower", "projector", "language_model", "lora")
    )
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # tied weights count once
            continue
        seen.add(id(param))
        part = "lora" if "lora_" in name else next(
            (p for p in ("vision_tower", "projector") if f"{p}." in name), "language_model"
        )
        parts[part]["total"] += param.numel()
        if param.requires_grad:
            parts[part]["trainable"] += param.numel()
    if not parts["lora"]["total"]:
        del parts["lora"]
    return parts


def format_parameter_table(counts: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'part':<16}{'trainable':>14}{'total':>14}"]
    for part, c in counts.items():
        lines.append(f"{part:<16}{c['trainable']:>14,}{c['total']:>14,}")
    trainable = sum(c["trainable"] for c in counts.values())
    total = sum(c["total"] for c in counts.values())
    lines.append(f"{'all':<16}{trainable:>14,}{total:>14,}  ({100 * trainable / max(total, 1):.2f}% trainable)")
    return "\n".join(lines)
