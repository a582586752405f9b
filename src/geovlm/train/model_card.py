"""A model card (README.md) for a trained folder, written from the run's own config and results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from geovlm.train.config import TrainConfig

STAGE_NAMES = {"pretrain": "stage 1 — projector pretraining", "sft": "stage 2 — geometry SFT",
               "rl": "stage 3 — reinforcement learning with verifiable rewards (GRPO)"}


def render_model_card(config: TrainConfig, model_config: Any, eval_results: dict[str, Any] | None = None,
                      trainable: dict[str, dict[str, int]] | None = None) -> str:
    start = config.init_from or (f"random `{config.preset}` preset" if config.preset else
                                 f"`{config.vision}` + `{config.llm}`")
    data = "\n".join(f"- `{s.path}` (images: `{s.image_root}`, weight {s.weight})"
                     for s in config.data) or "- (given in code)"
    lm_part = {"none": "frozen", "all": "all layers", "lora": f"LoRA r={config.lora_r}, alpha={config.lora_alpha}",
               "last_n": f"last {config.lm_last_n_layers} decoder layers + final norm"}[config.lm_trainable]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [geovlm, geometry, vision-language]",
        "license: mit",
        "---",
        "",
        f"# GeoVLM — {STAGE_NAMES[config.stage]}",
        "",
        "A small vision-language model for geometry diagrams: SigLIP vision tower → token merge "
        f"({model_config.merge_mode}, ×{model_config.merge_factor}, {model_config.num_image_tokens} image tokens) → "
        "two-layer projector → Qwen2 language model. The folder carries its code: load it with transformers "
        "alone, `AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)` and "
        "`AutoProcessor.from_pretrained(folder, trust_remote_code=True)` (or `pipeline(\"image-text-to-text\", "
        "model=folder, trust_remote_code=True)`), or with `geovlm.load_pretrained(folder)`.",
        "",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)",
        "processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)",
        "messages = [{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": diagram}, "
        "{\"type\": \"text\", \"text\": \"Find ∠ABC.\"}]}]",
        "inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, "
        "return_dict=True, return_tensors=\"pt\")",
        "output = model.generate(**inputs, max_new_tokens=256, do_sample=False)",
        "print(processor.decode(output[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        "## Training",
        f"- started from: {start}",
        f"- trained: projector; LM {lm_part}; vision tower {'trained' if config.train_vision else 'frozen'}",
        f"- learning rate {config.learning_rate:g} (projector {config.effective_projector_lr:g}, "
        f"vision {config.effective_vision_lr:g}), {config.lr_scheduler} schedule, warm-up {config.warmup_steps:g}",
        f"- batch {config.per_device_batch_size} per device × {config.gradient_accumulation_steps} accumulation; "
        f"{'max_steps ' + str(config.max_steps) if config.max_steps > 0 else str(config.epochs) + ' epoch(s)'}; "
        f"max length {config.max_length}; precision {config.precision}",
        "",
        "## Data",
        data,
    ]
    if trainable:
        lines += ["", "## Parameters", "| part | trainable | total |", "|---|---:|---:|"]
        lines += [f"| {part} | {c['trainable']:,} | {c['total']:,} |" for part, c in trainable.items()]
    if eval_results:
        lines += ["", "## Evaluation", "```json", json.dumps(eval_results, indent=2), "```"]
    lines += ["", "Full run config: `train_config.yaml`.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, config: TrainConfig, model_config: Any, **kwargs: Any) -> Path:
    folder = Path(folder)
    results_path = folder / "eval_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    path = folder / "README.md"
    path.write_text(render_model_card(config, model_config, eval_results=results, **kwargs))
    return path
