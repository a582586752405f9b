"""How a model computes at inference: the `--dtype` and `--quantize` choices, the CPU's instruction sets
that decide what is fast, the CPU default, and the weight formats applied to a loaded model."""

from __future__ import annotations

import os
import threading
from typing import Any

import torch

from geovlm.constants import QUANTIZE_METHODS
from geovlm.modeling import GeoVLM

# `--dtype` names and the torch dtypes they stand for.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
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
    fixed = fixed_cpu_dtype()
    if fixed:
        if fixed not in DTYPES:
            raise ValueError(f"{CPU_DTYPE_VARIABLE}={fixed!r}: choose one of {', '.join(DTYPES)}")
        return DTYPES[fixed]
    return torch.bfloat16 if has_bf16_units() else None


def default_quantize(device: str | torch.device, sequences: int) -> str | None:
    """The `--quantize` method used when neither --dtype nor --quantize is named, for `sequences` generated
    at once: on a CPU without bf16 units, bf16 weights computing in fp32 for up to BF16_PRODUCT_MAX_ROWS
    sequences (about 1.5x fp32's tokens/s at real size on an AVX2 CPU, the quickstart model's answers kept:
    docs/BENCHMARKS.md); larger batches (eval's 16, serve's 8) are faster with fp32 weights. None elsewhere:
    CUDA and CPUs with bf16 units run bf16 (`default_inference_dtype`), and `GEOVLM_CPU_DTYPE` fixes the
    CPU's choice."""
    if torch.device(device).type != "cpu" or fixed_cpu_dtype() or has_bf16_units() or sequences > BF16_PRODUCT_MAX_ROWS:
        return None
    return "bf16"


def fixed_cpu_dtype() -> str:
    """`GEOVLM_CPU_DTYPE`, the dtype name that fixes the CPU's choice ("" when unset)."""
    return os.environ.get(CPU_DTYPE_VARIABLE, "").strip()


def has_bf16_units(flags: list[str] | None = None) -> bool:
    """Whether this CPU (or one with these flags) multiplies bf16 natively."""
    return bool(set(BF16_CPU_FLAGS) & set(cpu_flags() if flags is None else flags))


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


def reduced_precision_note(dtype: torch.dtype | None, quantize: str | None, device: str | torch.device,
                           sequences: int = 1) -> str | None:
    """One line when the precision asked for is likely slower than fp32 on this CPU for `sequences` generated
    at once (measured with `geovlm bench` and bench/cpu_kernels.py: without avx512_bf16/AMX, bf16 products of
    many rows are converted; int8 weight-only kernels dequantize on the fly)."""
    if torch.device(device).type != "cpu":
        return None
    flags = cpu_flags()
    bf16_units = has_bf16_units(flags)
    if dtype == torch.bfloat16 and not bf16_units:
        return ("bf16 on this CPU (no avx512_bf16/amx_bf16) is slower than fp32 (see `geovlm bench`); "
                "--quantize bf16 keeps bf16 weights and computes in fp32")
    if quantize == "bf16" and not bf16_units and sequences > BF16_PRODUCT_MAX_ROWS:
        return (f"bf16 weights on this CPU (no avx512_bf16/amx_bf16) are faster than fp32 for up to "
                f"{BF16_PRODUCT_MAX_ROWS} sequences at a time and slower for {sequences}; they save memory")
    if quantize == "int8" and "amx_int8" not in flags:
        return ("int8 weights on this CPU (no amx_int8) generate slower than fp32 (see `geovlm bench`); they save "
                "memory; leave out --quantize for fp32 speed")
    return None


def check_quantize_method(method: str) -> None:
    if method not in QUANTIZE_METHODS:
        raise ValueError(f"unknown quantization {method!r}; choose from {', '.join(QUANTIZE_METHODS)}")


def quantization_config(method: str) -> Any:
    """transformers' `quantization_config` for a `--quantize` method, None where there is none (bf16:
    `finish_quantization` converts the weights after loading). int8 = torchao's int8 weight-only quantization
    (`TorchAoConfig(Int8WeightOnlyConfig())`, one scale per output row), which runs on CPUs and GPUs, for
    every linear layer but those in NOT_QUANTIZED; `finish_quantization` then stores the vocabulary tables
    in bf16. ValueError, in one line, for an unknown method or int8 without torchao."""
    check_quantize_method(method)
    if method == "bf16":
        return None
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
        raise ValueError(f"--quantize {method} needs torchao: pip install -e '.[int8]' ({err})") from None
    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(NOT_QUANTIZED))


# Linear layers left out of --quantize: the projector (3.6 M parameters at real size, the only layer trained from
# scratch) and the output head, a vocabulary table (below).
NOT_QUANTIZED = ("model.projector", "lm_head")


def quantize_in_place(model: GeoVLM, method: str) -> None:
    """The quantization `load_pretrained(..., quantize=method)` applies, on a model built in memory (seed
    checkpoints, merged adapters, the benchmark's copies); tests/test_quantize.py holds the two paths equal."""
    if method == "int8":
        from torchao.quantization import quantize_

        quantize_(model, quantization_config(method).quant_type, filter_fn=quantized_linear)
    finish_quantization(model, method)


def quantized_linear(module: torch.nn.Module, name: str) -> bool:
    """Whether `--quantize` stores this module's weight in int8 or bf16: every linear layer but NOT_QUANTIZED."""
    return isinstance(module, torch.nn.Linear) and not any(
        name == skipped or name.startswith(skipped + ".") for skipped in NOT_QUANTIZED)


def finish_quantization(model: GeoVLM, method: str) -> None:
    """What a `--quantize` method does after `from_pretrained` (whose `quantization_config` did the int8
    layers): the bf16 weights. int8 stores the two vocabulary tables in bf16 (token embedding and output head,
    151,936 rows each, tied in Qwen2.5: a quarter of the real model's fp32 bytes): torchao's int8 embedding
    dequantizes the whole table on every lookup (0.6-0.7 s per decoding step at real size on a 2-core EPYC,
    against 0.01 ms in fp32) and its int8 head ran 6-8x slower than fp32's, while a bf16 head's
    matrix-vector product ran 2.2-2.7x faster (`bench/cpu_kernels.py`, docs/BENCHMARKS.md). bf16 stores the
    weights of the same linear layers as int8 does, the head's and the token embedding in bf16, the rest
    (projector, norms, biases, the tower's patch and position embeddings) as loaded."""
    check_quantize_method(method)
    embedding = model.get_input_embeddings()
    compute_dtype = embedding.weight.dtype
    if compute_dtype == torch.bfloat16:
        return  # a bf16 model (--dtype bf16 with --quantize), or this ran before
    with torch.no_grad():
        embedding.weight.data = embedding.weight.data.to(torch.bfloat16)  # a tied head shares this Parameter
    embedding.register_forward_hook(_output_cast_to(compute_dtype))
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and (module is head or method == "bf16" and quantized_linear(module, name)):
            store_weight_in_bf16(module)


# A matrix product with at most this many rows (a decoding step of up to 4 sequences) multiplies bf16 weights
# as they are; one with more (a prompt, a larger batch) widens them to the activations' dtype first. Without
# bf16 units, with weights read from memory as in a decoding step, a bf16 product ran 1.6-3.3x faster than
# fp32's at one or two rows (half the bytes to read), 1.1-1.8x at four, 0.6-1.0x at eight, and 7x slower at a
# 171-token prompt (bench/cpu_kernels.py).
BF16_PRODUCT_MAX_ROWS = 4


class Bf16WeightLinear(torch.nn.Linear):
    """A linear layer whose weight is stored in bf16 in a model that computes in another dtype (fp32): see
    BF16_PRODUCT_MAX_ROWS for how it multiplies. The output has the input's dtype; the bias keeps its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype:
            return super().forward(x)
        rows = x.numel() // x.shape[-1]
        if rows <= BF16_PRODUCT_MAX_ROWS:
            y = torch.nn.functional.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)
        else:
            y = torch.nn.functional.linear(x, _widened(self.weight, x.dtype))
        return y if self.bias is None else y + self.bias.to(x.dtype)


def store_weight_in_bf16(layer: torch.nn.Linear) -> None:
    """Make `layer` a Bf16WeightLinear in place: its Parameters (a tie included), bias dtype and hooks stay."""
    with torch.no_grad():
        layer.weight.data = layer.weight.data.to(torch.bfloat16)
    layer.__class__ = Bf16WeightLinear


# Widening into a fresh tensor costs a new allocation per product, whose pages the system then supplies one
# fault at a time (a real-size prompt took 17% longer than fp32's so, 3-6% longer with the buffer:
# docs/BENCHMARKS.md); a buffer kept per thread and dtype is written over instead. Only without autograd
# (which would keep the buffer for the backward) and for layer-sized weights (the 544 MB head widens as
# before, on the rare paths that widen it at all).
_WIDEN_BUFFER_MAX_ELEMENTS = 16 * 2**20
_widen_buffers = threading.local()


def _widened(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight.to(dtype)`, written into a reused buffer where that is safe."""
    if torch.is_grad_enabled() or weight.numel() > _WIDEN_BUFFER_MAX_ELEMENTS:
        return weight.to(dtype)
    key = (dtype, weight.device, torch.is_inference_mode_enabled())  # inference tensors are written only there
    buffers = _widen_buffers.__dict__.setdefault("by_key", {})
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < weight.numel():
        buffer = buffers[key] = torch.empty(max(weight.numel(), 2**20), dtype=dtype, device=weight.device)
    return buffer[: weight.numel()].view(weight.shape).copy_(weight)


def _output_cast_to(dtype: torch.dtype) -> Any:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype)
    return hook
