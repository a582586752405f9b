"""Settings, timing, memory and FLOP helpers shared by every benchmark section."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from geovlm.bench.cli import DEFAULT_SECTIONS


@dataclass
class Settings:
    """Everything a run depends on; written into the JSON so a table can be reproduced."""

    device: str = "cpu"
    dtype: str = "fp32"  # compute dtype: fp32, or bf16 (autocast for training, bf16 weights for inference)
    quick: bool = False
    preset: str = "base"  # model size of the training / generation / eval-at-real-size sections
    seed: int = 0
    warmup: int = 1  # untimed steps before the timed ones (the first is also the FLOP-counting step)
    reps: int = 5  # timed repetitions per figure (stage 1, data); each figure is their median
    stage2_reps: int = 2  # stage-2 steps are ~4x longer: fewer repetitions on CPU
    stage1_batch: int = 4
    stage2_batch: int = 4
    stage2_last_n: int = 4  # LM layers trained in stage 2 (+ final norm + projector), as `apply_recipe`
    population: int = 400  # samples whose lengths the samplers batch (one "epoch")
    gen_new_tokens: int = 64
    gen_question_tokens: int = 100
    gen_reps: int = 3  # timed GeoVLM generations
    seed_gen_reps: int = 1  # timed seed-loop generations (each is one full no-cache run, the slow part)
    eval_new_tokens: int = 32
    eval_batches: list[int] = field(default_factory=lambda: [1, 4])  # at `preset` size
    eval_tiny_batches: list[int] = field(default_factory=lambda: [1, 4, 16])
    eval_tiny_questions: int = 16  # questions per timed repetition on the tiny model
    eval_reps: int = 2
    precision_new_tokens: int = 32  # fp32 / bf16 / int8 generation (section precision)
    precision_reps: int = 2
    serve_requests: int = 8  # concurrent requests to a live `geovlm serve` (section serve)
    serve_new_tokens: int = 32
    data_problems: int = 300
    data_workers: list[int] = field(default_factory=lambda: [0, 2])
    data_batches_per_rep: int = 10
    roofline_n: int = 2048
    compile: bool = False  # torch.compile the vision tower and the LM body (both variants alike)
    fused_ce: bool = False  # add a GeoVLM variant with a fused linear cross-entropy (Liger), if installed
    isolate: bool = True  # each training variant in a fresh subprocess (peak memory must not mix)
    interleave: bool = False  # variants alive together, steps alternated (see run.paired_training)
    sections: list[str] = field(default_factory=lambda: list(DEFAULT_SECTIONS))

    @classmethod
    def defaults(cls, device: str, quick: bool) -> Settings:
        """CPU: real sizes sized for a 2-core machine (<15 min). CUDA: bigger batches, more reps
        (~8 min on an H200). Quick: the tiny model everywhere (<1 min)."""
        if quick:
            return cls(
                device=device, dtype="fp32", quick=True, preset="tiny", warmup=1, reps=2, stage2_reps=2, stage1_batch=2,
                stage2_batch=1, stage2_last_n=1, population=64, gen_new_tokens=8, gen_reps=2, eval_new_tokens=4,
                eval_batches=[1, 4], eval_tiny_batches=[1, 4, 16], eval_tiny_questions=1, eval_reps=1, data_problems=24,
                interleave=True,  # workers start together: tiny figures are for the code paths, not comparisons
                data_workers=[0, 2], data_batches_per_rep=3, roofline_n=512, precision_new_tokens=4,
                precision_reps=1, serve_requests=4, serve_new_tokens=4,
            )  # fmt: skip
        if device.startswith("cuda"):
            return cls(
                device=device, dtype="bf16", warmup=3, reps=10, stage2_reps=10, stage1_batch=32, stage2_batch=16,
                population=2000, gen_new_tokens=64, gen_reps=5, seed_gen_reps=3, eval_new_tokens=64,
                eval_batches=[1, 4, 16, 64], eval_tiny_batches=[1, 4, 16], eval_tiny_questions=16,
                eval_reps=2, data_problems=600, data_workers=[0, 2, 8], data_batches_per_rep=10,
                roofline_n=8192,
            )  # fmt: skip
        return cls(device=device)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        return cls(**raw)

    def reps_for(self, stage: str) -> int:
        return self.stage2_reps if stage == "stage2" else self.reps

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16}[self.dtype]


def log(message: str) -> None:
    """Progress on stderr (stdout stays free for the table)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- device, dtype, timing
def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(settings: Settings) -> contextlib.AbstractContextManager:
    """bf16 autocast over fp32 weights, as the HF Trainer does with `bf16=True`; nothing in fp32."""
    if settings.dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=settings.device.split(":")[0], dtype=settings.torch_dtype)


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """Wall seconds of `fn()` with the device drained before and after, and its result."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


class CpuLoad:
    """Cores used by *other* processes while a block ran: (all busy CPU time - this process's) / wall.

    Read from /proc/stat (Linux; None elsewhere). It flags repetitions slowed by background jobs on a
    shared machine, so that a reader can tell a measured difference from a noisy one.
    """

    def __init__(self) -> None:
        self.others_cores: float | None = None

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuLoad:
        self._busy, self._own, self._wall = self._busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        busy, wall = self._busy_seconds(), time.perf_counter() - self._wall
        if busy is not None and self._busy is not None and wall > 0:
            others = (busy - self._busy) - (_own_cpu_seconds() - self._own)
            self.others_cores = round(max(0.0, others / wall), 2)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every OS
        return []


# ---------------------------------------------------------------------- memory
def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's parameters and buffers hold (a shared tensor once), counting a quantized weight
    by the tensors it is stored in (torchao's int8 data and scales), not by the dtype it stands for."""

    def stored(tensor: torch.Tensor) -> int:
        if hasattr(tensor, "__tensor_flatten__"):  # a tensor subclass: what it is made of
            names, _ = tensor.__tensor_flatten__()
            return sum(stored(getattr(tensor, name)) for name in names)
        return tensor.numel() * tensor.element_size()

    return sum(stored(p.data) for p in model.parameters()) + sum(stored(b) for b in model.buffers())


def rss_bytes() -> int:
    """Resident set size now."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # /proc fallback (Linux)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak RSS of this process since it started (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class PeakMemory:
    """Peak memory of what runs after `start()`: CUDA allocator peak on GPU, process peak RSS on CPU.

    On CPU the process peak includes the model weights and the interpreter, which is why each
    training variant runs in a fresh process; `baseline` (RSS when `start()` ran) is reported too,
    so that the step's own share (peak - baseline) can be read.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.baseline = 0
        self.baseline_peak = 0

    def start(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            self.baseline = rss_bytes()
        self.baseline_peak = self.peak()

    def peak(self) -> int:
        if self.device.startswith("cuda"):
            return int(torch.cuda.max_memory_allocated())
        return peak_rss_bytes()

    def report(self) -> dict[str, Any]:
        peak = self.peak()
        return {
            "kind": "cuda_max_memory_allocated" if self.device.startswith("cuda") else "peak_rss",
            "peak_bytes": peak,
            "baseline_bytes": self.baseline,  # weights (+ interpreter on CPU) before the first step
            "peak_before_steps_bytes": self.baseline_peak,  # e.g. the model build's own peak on CPU
            "step_bytes": peak - self.baseline,
        }


# ---------------------------------------------------------------------- FLOPs
def _cpu_flash_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_backward_flops(grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any,
                              *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


@contextlib.contextmanager
def count_flops() -> Iterator[dict[str, int]]:
    """`torch.utils.flop_counter.FlopCounterMode` over the block (forward and backward matmuls,
    convolutions and attention); yields a dict that holds `{"total": flops}` when the block ends.

    The CPU flash-attention kernel is not in PyTorch's table; it is counted with the same formula as
    the CUDA SDPA kernels (full, non-causal score matrix: the nominal count, as for the GPU kernels).
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    custom = {}
    for name, fn in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_flops),
                     ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_flash_backward_flops)):
        if hasattr(aten, name):
            custom[getattr(aten, name)] = fn
    result: dict[str, int] = {}
    mode = FlopCounterMode(display=False, custom_mapping=custom)
    with mode:
        yield result
    result["total"] = int(mode.get_total_flops())


def roofline(settings: Settings, n: int | None = None, reps: int = 5, warm_seconds: float = 0.3) -> dict[str, Any]:
    """FLOP/s of a square `torch.mm` in the run's compute dtype: what a dense matmul reaches here."""
    n = n or settings.roofline_n
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(settings.device, settings.torch_dtype)
    b = torch.randn(n, n, generator=gen).to(settings.device, settings.torch_dtype)
    warm_until = time.perf_counter() + warm_seconds  # thread pools up, clocks settled
    while time.perf_counter() < warm_until:
        timed(lambda: torch.mm(a, b), settings.device)
    times = [timed(lambda: torch.mm(a, b), settings.device)[0] for _ in range(reps)]
    seconds = median(times)
    return {"n": n, "dtype": settings.dtype, "seconds": seconds, "flops_per_s": 2 * n**3 / seconds,
            "threads": torch.get_num_threads(), "load_average": load_average()}  # fmt: skip


def speed_probe(settings: Settings) -> float:
    """FLOP/s of a short `torch.mm` (half the roofline's size) run just before a timed repetition.

    Other tenants of a shared host slow it down without showing in this machine's `/proc/stat`; a
    repetition whose probe is well below the roofline ran on a slowed machine.
    """
    return roofline(settings, n=settings.roofline_n // 2, reps=3, warm_seconds=0.0)["flops_per_s"]
