"""How a model computes at inference: the `--dtype` and `--quantize` choices, the CPU's instruction sets
that decide what is fast, the CPU default, and the weight formats applied to a loaded model."""

from __future__ import annotations

import os
from typing import Any

import torch

from geovlm.modeling import GeoVLM

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
