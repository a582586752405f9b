"""Checkpoints made by the seed code (`model_type: "vlm_model"`) → self-contained GeoVLM folders.

The seed saved a `PreTrainedModel` holding a full `SiglipModel` (`vision_model.*`), a
`Qwen2ForCausalLM` (`llm_model.*`, tied `lm_head` omitted) and two linear layers
(`linear1`, `linear2`); its config only names the backbones (`vision_model_path`,
`llm_model_path`). Its merge concatenates k consecutive raster-order patches and its prompts put
`<|image_pad|>` × N where `<image>` stood, with no vision start/end markers. The converted model
keeps all of that (`merge_mode="sequential"`, pads-only processor), so it is prompted as trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from geovlm.constants import DEFAULT_SYSTEM_PROMPT

SEED_MODEL_TYPE = "vlm_model"
SEED_SYSTEM_PROMPT = DEFAULT_SYSTEM_PROMPT  # the seed prompted with Qwen's default
# Seed key prefix → GeoVLM key prefix. Keys matching none of these (the SigLIP text tower,
# logit_scale/bias, the pooling head) are unused by the seed's forward and dropped.
KEY_MAP = (
    ("vision_model.vision_model.head.", None),
    ("vision_model.vision_model.", "model.vision_tower."),
    ("llm_model.model.", "model.language_model."),
    ("llm_model.lm_head.", "lm_head."),
    ("linear1.", "model.projector.linear_1."),
    ("linear2.", "model.projector.linear_2."),
)


def read_seed_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The seed config dict if `folder` holds a seed checkpoint, else None."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    return config if config.get("model_type") == SEED_MODEL_TYPE else None


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights from `model.safetensors`, a sharded safetensors index, or `pytorch_model.bin`."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(folder / shard))
        return state
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no model.safetensors, safetensors index or pytorch_model.bin in {folder}")


def map_seed_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mapped = {}
    for key, tensor in state.items():
        for prefix, target in KEY_MAP:
            if key.startswith(prefix):
                if target is not None:
                    mapped[target + key[len(prefix) :]] = tensor
                break
    return mapped


def qwen_tokenizer_for(llm: str | os.PathLike, text_config: Any) -> Any:
    """The LLM folder's tokenizer when it has Qwen2.5's special tokens; else (no tokenizer files, or
    another tokenizer) the exact offline Qwen2.5 tokenizer, said so, when the vocabulary size fits."""
    from transformers import AutoTokenizer

    from geovlm.processing.tokenizer import QWEN_SPECIAL_TOKENS, QWEN_VOCAB_SIZE, load_qwen_tokenizer

    problem = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(llm)
        wrong = [t for t in ("<|im_start|>", "<|im_end|>", "<|image_pad|>")
                 if tokenizer.convert_tokens_to_ids(t) != QWEN_SPECIAL_TOKENS[t]]
        if not wrong:
            return tokenizer
        problem = f"its tokenizer lacks Qwen2.5's {', '.join(wrong)}"
    except Exception as err:  # missing or broken tokenizer files fail in many ways
        problem = f"it has no usable tokenizer ({type(err).__name__})"
    if getattr(text_config, "vocab_size", None) != QWEN_VOCAB_SIZE:
        raise ValueError(f"{llm}: {problem}, and its vocabulary ({getattr(text_config, 'vocab_size', None)}) is "
                         f"not Qwen2.5's {QWEN_VOCAB_SIZE}; pass --llm with the tokenizer the seed model was trained with")
    print(f"[geovlm] {llm}: {problem}; using the exact offline Qwen2.5 tokenizer instead")
    return load_qwen_tokenizer()


def convert_seed_checkpoint(
    seed_dir: str | os.PathLike,
    *,
    vision: str | os.PathLike | None = None,
    llm: str | os.PathLike | None = None,
) -> tuple[Any, Any]:
    """Build `(GeoVLM, GeoVLMProcessor)` from a seed checkpoint.

    `vision` / `llm` override the backbone locations recorded in the seed config (hub ids or
    folders); they supply the backbone configs, the tokenizer and the image processor.
    """
    from transformers import AutoConfig, AutoImageProcessor, SiglipImageProcessorPil

    from geovlm.modeling import GeoVLM, GeoVLMConfig
    from geovlm.processing.build import processor_for

    seed_config = read_seed_config(seed_dir)
    if seed_config is None:
        raise ValueError(f"{seed_dir} is not a seed checkpoint (config.json with model_type '{SEED_MODEL_TYPE}')")
    vision = vision or seed_config.get("vision_model_path")
    llm = llm or seed_config.get("llm_model_path")
    if not vision or not llm:
        raise ValueError("the seed config does not name its backbones; pass vision= and llm=")

    vision_config = AutoConfig.from_pretrained(vision)
    vision_config = getattr(vision_config, "vision_config", vision_config)  # full SiglipModel config
    text_config = AutoConfig.from_pretrained(llm)
    state = map_seed_keys(load_state_dict(seed_dir))
    in_width = state["model.projector.linear_1.weight"].shape[1]
    factor, remainder = divmod(in_width, vision_config.hidden_size)
    if remainder:
        raise ValueError(f"linear1 input width {in_width} is not a multiple of the vision width {vision_config.hidden_size}")

    config = GeoVLMConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        merge_mode="sequential",
        merge_factor=factor,
        vision_start_token_id=None,
        vision_end_token_id=None,
    )
    pads = seed_config.get("image_pad_num")
    if pads is not None and pads != config.num_image_tokens:
        raise ValueError(f"seed config says {pads} image pads but the tower gives {config.num_image_tokens} tokens")

    model = GeoVLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ValueError(f"seed weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()

    tokenizer = qwen_tokenizer_for(llm, text_config)
    try:
        image_processor = AutoImageProcessor.from_pretrained(vision)
    except (OSError, ValueError):
        size = vision_config.image_size
        image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    processor = processor_for(config, tokenizer, image_processor, system_prompt=SEED_SYSTEM_PROMPT)
    return model.eval(), processor
