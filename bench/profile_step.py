"""Where one training step's time and memory go, for one variant: `torch.profiler` time by kind of
work, and the tensors autograd saves for the backward pass.

    python bench/profile_step.py --stage stage1 --variant geovlm
    python bench/profile_step.py --stage stage1 --variant seed --preset tiny

Uses the benchmark's own `TrainStepRunner`, so the step is exactly the one `geovlm bench` times.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

try:
    import geovlm  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
from torch.profiler import ProfilerActivity, profile

from geovlm.bench.common import Settings
from geovlm.bench.sections import TrainStepRunner


def bucket(name: str, shapes: str, vocab: int, vision_tokens: int) -> str:
    """A coarse kind of work from an op name and its input shapes."""
    if str(vocab) in shapes:
        return "vocabulary-wide (lm_head, embedding, log-softmax, loss)"
    if name in ("aten::mm", "aten::addmm", "aten::bmm"):
        return "vision tower matmuls" if str(vision_tokens) in shapes else "LM matmuls (forward + backward)"
    if "attention" in name:
        return "attention (SDPA)"
    return "elementwise and other (norms, rotary, SiLU, copies, optimizer)"


def time_profile(runner: TrainStepRunner) -> None:
    config = runner.model.config
    vision_tokens = runner.batch["pixel_values"].shape[0] * config.num_patches
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        runner._step()
        seconds = time.perf_counter() - start
    buckets: collections.Counter[str] = collections.Counter()
    for event in prof.key_averages(group_by_input_shape=True):
        kind = bucket(event.key, str(event.input_shapes), config.text_config.vocab_size, vision_tokens)
        buckets[kind] += event.self_cpu_time_total / 1e6
    total = sum(buckets.values())
    print(f"{runner.stage} {runner.variant}: one step {seconds:.2f} s (profiled); self CPU time by kind:")
    for kind, value in buckets.most_common():
        print(f"  {kind:<66}{value:7.2f} s {100 * value / total:5.1f}%")


def saved_tensors(runner: TrainStepRunner) -> None:
    """Bytes autograd keeps for the backward pass, by tensor shape (parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in runner.model.parameters()}
    seen: dict[int, tuple[tuple[int, ...], int]] = {}

    def pack(t: torch.Tensor) -> Any:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen.setdefault(ptr, (tuple(t.shape), t.untyped_storage().nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = runner._loss()
    del loss
    by_shape: collections.Counter[tuple[int, ...]] = collections.Counter()
    count: collections.Counter[tuple[int, ...]] = collections.Counter()
    for shape, nbytes in seen.values():
        by_shape[shape] += nbytes
        count[shape] += 1
    print(f"saved for backward: {sum(by_shape.values()) / 2**30:.3f} GiB")
    for shape, nbytes in by_shape.most_common(8):
        print(f"  {str(shape):<30} x{count[shape]:<4}{nbytes / 2**20:9.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("stage1", "stage2"), default="stage1")
    parser.add_argument("--variant", choices=("geovlm", "seed"), default="geovlm")
    parser.add_argument("--preset", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    settings = Settings(preset=args.preset, stage1_batch=args.batch, stage2_batch=args.batch,
                        stage2_last_n=4 if args.preset == "base" else 1)  # fmt: skip
    runner = TrainStepRunner(settings, args.stage, args.variant)
    print(f"batch {tuple(runner.batch['input_ids'].shape)} (the sampler's median batch)")
    runner._step()  # warm-up
    time_profile(runner)
    saved_tensors(runner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
