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


# `--dtype` names and the torch dtypes they stand for.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANTIZE_METHODS = ("int8",)
# CPU units that run bf16 matmuls natively; without them PyTorch converts to fp32 around each one.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_DTYPE_VARIABLE = "GEOVLM_CPU_DTYPE"


def default_inference_dtype(device: str | torch.device) -> torch.dtype | None:
    """What `ask`, `eval`, `serve` and the lmms-eval model run in when no dtype is named: the fastest that
    keeps the answers. bf16 on a CUDA device that supports it. On a CPU, bf16 where it has bf16 units
    (about 2x fp32's tokens/s on an AVX-512 BF16 host) and else the folder's own dtype (None; bf16 is 2.3x
    slower than fp32 on an AVX2-only CPU: docs/BENCHMARKS.md). `GEOVLM_CPU_DTYPE=fp32` (or bf16) fixes
    the CPU's choice, as the tests do so that their results do not depend on the host."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    fixed = os.environ.get(CPU_DTYPE_VARIABLE, "").strip()
    if fixed:
        if fixed not in DTYPES:
            raise ValueError(f"{CPU_DTYPE_VARIABLE}={fixed!r}: choose one of {', '.join(DTYPES)}")
        return DTYPES[fixed]
    return torch.bfloat16 if set(BF16_CPU_FLAGS) & set(cpu_flags()) else None


def precision_of(model: torch.nn.Module) -> str:
    """How a loaded model computes, as the `--dtype` / `--quantize` names say it: "fp32", "bf16",
    "bf16/fp32+Int8Tensor" (int8: bf16 vocabulary tables, the rest fp32; quantized weights by their tensor
    class, which names the method)."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    dtypes = sorted({names.get(p.dtype, str(p.dtype)) for p in model.parameters() if p.is_floating_point()})
    quantized = sorted({type(p.data).__name__ for p in model.parameters() if type(p.data) is not torch.Tensor})
    return "/".join(dtypes) + ("+" + ",".join(quantized) if quantized else "")


def inference_dtype(name: str | None, device: str | torch.device) -> torch.dtype | None:
    """The dtype a `--dtype` name asks for; None (not given): `default_inference_dtype`."""
    if name is None:
        return default_inference_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def cpu_flags() -> list[str]:
    """The x86 instruction-set flags that decide reduced-precision speed on a CPU (from /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile", "avx_vnni")
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [flag for flag in wanted if flag in flags]


def reduced_precision_note(dtype: torch.dtype | None, quantize: str | None, device: str | torch.device) -> str | None:
    """One line when reduced precision is likely slower than fp32 on this CPU (measured with `geovlm bench`:
    without avx512_bf16/AMX, bf16 matmuls are emulated; int8 weight-only kernels dequantize on the fly)."""
    if torch.device(device).type != "cpu":
        return None
    flags = cpu_flags()
    if dtype == torch.bfloat16 and not set(BF16_CPU_FLAGS) & set(flags):
        return ("bf16 on this CPU (no avx512_bf16/amx_bf16) is slower than fp32 (see `geovlm bench`); "
                "leave out --dtype for fp32")
    if quantize == "int8" and "amx_int8" not in flags:
        return ("int8 weights on this CPU (no amx_int8) generate slower than fp32 (see `geovlm bench`); they save "
                "memory; leave out --quantize for fp32 speed")
    return None


def quantization_config(method: str) -> Any:
    """transformers' `quantization_config` for a `--quantize` method: int8 = torchao's int8 weight-only
    quantization (`TorchAoConfig(Int8WeightOnlyConfig())`, one scale per output row), which runs on CPUs and
    GPUs, for every linear layer but those in NOT_QUANTIZED; `load_geovlm` then stores the vocabulary tables
    in bf16 (`store_vocabulary_tables_in_bf16`). ValueError, in one line, for an unknown method or without
    torchao."""
    if method not in QUANTIZE_METHODS:
        raise ValueError(f"unknown quantization {method!r}; choose from {', '.join(QUANTIZE_METHODS)}")
    import logging

    # torchao's import warns about its CUDA-only kernels (mxfp8, cutlass) on a CPU machine, and torch about
    # its enums: noise before an answer, not a problem.
    for name in ("torchao", "torch.utils._pytree"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig
    except ImportError as err:
        raise ValueError(f"--quantize {method} needs torchao: pip install -e '.[serve]' ({err})") from None
    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(NOT_QUANTIZED))


# Linear layers left out of int8: the projector (3.6 M parameters at real size, the only layer trained from
# scratch) and the output head, a vocabulary table (below).
NOT_QUANTIZED = ("model.projector", "lm_head")


def quantize_in_place(model: GeoVLM, method: str) -> None:
    """The quantization `load_pretrained(..., quantize=method)` applies, on a model built in memory (seed
    checkpoints, merged adapters, the benchmark's copies); tests/test_quantize.py holds the two paths equal."""
    from torchao.quantization import quantize_

    def quantized(module: torch.nn.Module, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and not any(
            name == skipped or name.startswith(skipped + ".") for skipped in NOT_QUANTIZED)

    quantize_(model, quantization_config(method).quant_type, filter_fn=quantized)
    store_vocabulary_tables_in_bf16(model)


def store_vocabulary_tables_in_bf16(model: GeoVLM) -> None:
    """Under `--quantize int8`, the token embedding and output head (151,936 rows each, tied in Qwen2.5:
    a quarter of the real model's fp32 bytes) are stored in bf16, and the rest of the model keeps its dtype.
    Not int8: torchao's int8 embedding dequantizes the whole table on every lookup (0.6-0.7 s per decoding
    step at real size on a 2-core EPYC, against 0.004 ms in fp32) and its int8 head ran 7-8x slower than fp32's,
    while a bf16 head's matrix-vector product ran 2.2x faster than fp32's on the same CPU
    (`bench/cpu_kernels.py`, docs/BENCHMARKS.md). Hooks cast at the two tables' edges, so no layer sees a
    dtype it was not built for."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    compute_dtype = embedding.weight.dtype
    if compute_dtype == torch.bfloat16:
        return  # a bf16 model (--dtype bf16 --quantize int8), or this ran before
    for table in {embedding, head}:
        table.to(torch.bfloat16)  # a tied head shares the embedding's Parameter, and stays tied
    embedding.register_forward_hook(_output_cast_to(compute_dtype))
    head.register_forward_pre_hook(_input_cast_to(torch.bfloat16))
    head.register_forward_hook(_output_cast_to(compute_dtype))


def _output_cast_to(dtype: torch.dtype) -> Any:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype)
    return hook


def _input_cast_to(dtype: torch.dtype) -> Any:
    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].to(dtype), *args[1:])
    return hook


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
        model = GeoVLM.from_pretrained(path, dtype=dtype, quantization_config=quantization_config(quantize))
        store_vocabulary_tables_in_bf16(model)
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
