"""One way in for every command: load a model and its processor from a folder or hub id, or build a tiny
one offline."""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from geovlm.convert.folders import check_weights_fit, read_config_json, stored_tensors
from geovlm.convert.seed import convert_seed_checkpoint, read_seed_config
from geovlm.modeling import GeoVLM, GeoVLMConfig, GeoVLMProcessor
from geovlm.modeling.modeling_geovlm import LEGACY_KEY_MAPPING
from geovlm.precision import finish_quantization, quantization_config, quantize_in_place
from geovlm.processing.build import processor_for
from geovlm.processing.conversation import prompt_text, question_messages


def load_pretrained(
    path: str | os.PathLike, *, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
    quantize: str | None = None,
) -> tuple[GeoVLM, GeoVLMProcessor]:
    """`(model, processor)` from a GeoVLM folder or hub id (this release's or an earlier one's), a LoRA
    adapter folder, or a seed-code checkpoint folder. The model is in eval mode. Refused with a one-line
    ValueError naming the file and the fix: a local folder of any other model, or one whose config does not
    fit its weights (both before anything is built: the config would give a default-size model), and a
    processor or chat template that does not fit the model (which `ask` would otherwise meet later)."""
    check_folder_kind(path)
    if os.path.isdir(path) and read_seed_config(path) is not None:
        model, processor = convert_seed_checkpoint(path)
        if dtype is not None:
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    elif os.path.isfile(os.path.join(path, "adapter_config.json")):
        model, processor = load_adapter_folder(path, dtype=dtype)
    else:
        # Processor and template are checked against the config before any weight is read.
        config = read_geovlm_config(path)
        processor = GeoVLMProcessor.from_pretrained(path)
        check_processor_fits(config, processor, path)
        model = load_geovlm(path, dtype=dtype, quantize=quantize, config=config)
        return model.to(device).eval() if device is not None else model.eval(), processor
    if quantize is not None:  # seed checkpoints and merged adapters are built, not loaded: quantized here
        quantize_in_place(model, quantize)
    check_processor_fits(model.config, processor, path)
    if device is not None:
        model.to(device)
    return model.eval(), processor


def check_folder_kind(path: str | os.PathLike) -> None:
    """ValueError, naming what the folder holds, unless it is a GeoVLM, seed-code or adapter folder."""
    folder = os.fspath(path)
    if not os.path.isdir(folder) or os.path.isfile(os.path.join(folder, "adapter_config.json")):
        return  # a hub id, or LoRA adapters (their base is checked when it loads)
    try:
        config = read_config_json(folder)
    except FileNotFoundError:
        raise ValueError(f"{folder} has no config.json: not a model folder") from None
    kind = config.get("model_type")
    if kind not in (GeoVLMConfig.model_type, "vlm_model"):
        raise ValueError(f"{folder} holds a {kind or 'model of unknown type'!s} model "
                         f"(architectures: {config.get('architectures')}), "
                         "not a GeoVLM one; build a GeoVLM from it with GeoVLM.from_backbones or geovlm pretrain --llm")


def load_geovlm(path: str | os.PathLike, *, dtype: torch.dtype | str | None = None, quantize: str | None = None,
                config: GeoVLMConfig | None = None) -> GeoVLM:
    """`GeoVLM.from_pretrained`, after a local folder's config is checked against its weights' headers:
    transformers allocates the model the config describes before it compares a single shape, so a config
    that lost its text config, or describes other weights, would build a model of the wrong (perhaps 7B) size
    before failing, or load with layers left random. Hub ids are checked by transformers alone."""
    if os.path.isdir(path):
        config = config or read_geovlm_config(path)
        # Folders saved before the LLaVA layout name their weights as LEGACY_KEY_MAPPING maps them.
        stored = {current_weight_name(name): tensor for name, tensor in stored_tensors(path).items()}
        if stored:  # else a weights format this does not read (e.g. sharded .bin): transformers checks
            check_weights_fit(path, config, stored, described_by="config.json",
                              fix="restore the config.json saved with these weights")
    if quantize is not None:
        config = quantization_config(quantize)
        extra = {} if config is None else {"quantization_config": config}
        model = GeoVLM.from_pretrained(path, dtype=dtype, **extra)
        finish_quantization(model, quantize)
        return model
    return GeoVLM.from_pretrained(path, dtype=dtype)


def read_geovlm_config(path: str | os.PathLike) -> GeoVLMConfig:
    """A folder's or hub id's GeoVLM config; a config without its backbone configs, or one transformers'
    own validation refuses, is a one-line ValueError naming config.json."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        return GeoVLMConfig.from_pretrained(path)
    except (ValueError, TypeError, StrictDataclassError) as err:
        # Config validation errors span several lines, and transformers' own are not ValueErrors.
        raise ValueError(f"{os.path.join(path, 'config.json')}: {' '.join(str(err).split())}") from None


def current_weight_name(name: str) -> str:
    """A weight's name in this release's layout, for a name a folder saved before the LLaVA layout uses."""
    for pattern, replacement in LEGACY_KEY_MAPPING.items():
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    return name


def check_processor_fits(config: GeoVLMConfig, processor: GeoVLMProcessor, source: str | os.PathLike) -> None:
    """ValueError, in one line naming the file and the fix, unless the processor prompts the model as it
    was trained: as many image tokens per image as the model makes, the same image and span-marker ids,
    and a chat template that renders a question with an image (through transformers' own compiler and
    filters, exactly as `ask` renders it) with one image placeholder. An edited folder otherwise loads,
    and `ask` fails later in the forward pass or the template, or answers from a misplaced image."""
    tokenizer = processor.tokenizer
    if processor.num_image_tokens != config.num_image_tokens:
        raise ValueError(f"{source}/processor_config.json: num_image_tokens is {processor.num_image_tokens} but the "
                         f"model (config.json) makes {config.num_image_tokens} tokens per image; set "
                         f"num_image_tokens to {config.num_image_tokens}")
    if config.image_token_id != processor.image_token_id:
        raise ValueError(f"{source}/config.json: image_token_id {config.image_token_id} is not the tokenizer's id "
                         f"for the processor's image token {processor.image_token} ({processor.image_token_id}); "
                         f"set image_token_id to {processor.image_token_id}")
    for end in ("start", "end"):
        marker_id = getattr(config, f"vision_{end}_token_id")
        marker = getattr(processor, f"vision_{end}_token")
        marker_token_id = tokenizer.convert_tokens_to_ids(marker) if marker is not None else None
        if marker_id != marker_token_id:
            raise ValueError(f"{source}: config.json's vision_{end}_token_id is {marker_id} but processor_config.json's "
                             f"vision_{end}_token is {marker!r} (id {marker_token_id}); make them name the same "
                             "token (null in both for a model trained without span markers)")
    check_chat_template(processor, source)


def check_chat_template(processor: GeoVLMProcessor, source: str | os.PathLike) -> None:
    """ValueError, naming the template's file, unless the chat template renders a question with an image."""
    import jinja2

    where = next((os.path.join(source, name) for name in ("chat_template.jinja", "chat_template.json")
                  if os.path.isfile(os.path.join(source, name))), f"the chat template of {source}")
    fix = f"fix the template, or delete {where} to use GeoVLM's own ChatML template"
    try:
        text = prompt_text(processor, question_messages("What is x?", with_image=True))
    except jinja2.TemplateSyntaxError as err:  # unknown filters and tests are found when it compiles, too
        problem = " ".join(str(err.message).split()).rstrip(".")  # jinja's messages may span lines
        raise ValueError(f"{where}: syntax error at line {err.lineno}: {problem}; {fix}") from None
    except Exception as err:  # the template is code: whatever it raises here, `ask` would raise on every question
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{where} fails on a plain question ({type(err).__name__}: {first}); {fix}") from None
    placeholders = processor.mark_images(text).count(processor.image_token)
    if placeholders != 1:
        raise ValueError(f"{where} renders a question with one image with {placeholders or 'no'} image "
                         f"placeholders, so the image has {'no place' if not placeholders else 'too many'} in the "
                         f"prompt; {fix}")


def load_adapter_folder(path: str | os.PathLike, *, dtype: torch.dtype | str | None = None):
    """A LoRA run saved as adapters: its base GeoVLM (recorded in adapter_config.json) + the adapters,
    merged for inference."""
    from peft import PeftConfig, PeftModel

    base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
    if not base_path:
        raise ValueError(f"{path}/adapter_config.json does not name its base model")
    base = load_geovlm(base_path, dtype=dtype)
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
