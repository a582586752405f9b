"""Checkpoints made by the seed code (`model_type: "vlm_model"`) → self-contained GeoVLM folders.

The seed saved a `PreTrainedModel` holding a full `SiglipModel` (`vision_model.*`), a
`Qwen2ForCausalLM` (`llm_model.*`, tied `lm_head` omitted) and two linear layers
(`linear1`, `linear2`); its config only names the backbones (`vision_model_path`,
`llm_model_path`). Its merge concatenates k consecutive raster-order patches and its prompts put
`<|image_pad|>` × N where `<image>` stood, with no vision start/end markers. The converted model
keeps all of that (`merge_mode="sequential"`, pads-only processor), so it is prompted as trained.
"""

from __future__ import annotations

import os
from typing import Any

from geovlm.constants import DEFAULT_SYSTEM_PROMPT
from geovlm.convert.folders import check_weights_fit, load_state_dict, read_config_json, stored_tensors

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
    """The seed config dict if `folder` holds a seed checkpoint, None if it holds no config or another
    model's; ValueError, naming the file, if its config.json cannot be read or is not a JSON object."""
    try:
        config = read_config_json(folder)
    except FileNotFoundError:
        return None
    return config if config.get("model_type") == SEED_MODEL_TYPE else None


def map_seed_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Seed names → GeoVLM names, for tensors or anything else stored by name; unused keys dropped."""
    mapped = {}
    for key, tensor in state.items():
        for prefix, target in KEY_MAP:
            if key.startswith(prefix):
                if target is not None:
                    mapped[target + key[len(prefix) :]] = tensor
                break
    return mapped


def seed_name(name: str) -> str:
    """A GeoVLM weight's name as a seed checkpoint stores it (the inverse of `map_seed_keys`)."""
    for prefix, target in KEY_MAP:
        if target is not None and name.startswith(target):
            return prefix + name[len(target) :]
    return name


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
    # Names and shapes from the files' headers first: a checkpoint that does not fit its backbones is refused
    # in one line before the model is built (a bare load_state_dict would say so in a multi-line error).
    stored = map_seed_keys(stored_tensors(seed_dir))
    linear1 = stored.get("model.projector.linear_1.weight")
    if linear1 is None or len(linear1.shape) != 2:
        files = ", ".join(sorted({tensor.file for tensor in stored.values()})) or "no weights file"
        found = "has no linear1.weight" if linear1 is None else f"holds linear1.weight as {list(linear1.shape)}"
        raise ValueError(f"{seed_dir}: {files} {found} (the projector's first layer, [hidden, k × vision width]): "
                         "not a complete seed checkpoint; convert the folder the seed code saved after training")
    in_width = linear1.shape[1]
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

    check_weights_fit(seed_dir, config, stored, described_by=f"the backbones {vision} and {llm}",
                      name_in_file=seed_name, fix="check that --vision and --llm (default: the seed config's) "
                      "name the backbones the seed model was trained from")
    model = GeoVLM(config)
    # Every name and shape was compared above; strict=False lets the tied lm_head (which the seed omits)
    # and buffers older releases saved pass.
    model.load_state_dict(map_seed_keys(load_state_dict(seed_dir)), strict=False)
    model.tie_weights()

    tokenizer = qwen_tokenizer_for(llm, text_config)
    try:
        image_processor = AutoImageProcessor.from_pretrained(vision)
    except (OSError, ValueError):
        size = vision_config.image_size
        image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    processor = processor_for(config, tokenizer, image_processor, system_prompt=SEED_SYSTEM_PROMPT)
    return model.eval(), processor
