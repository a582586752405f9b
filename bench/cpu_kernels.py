"""The per-operation CPU timings behind `--quantize int8`'s layout (issue #21): how the real model's
vocabulary tables (151,936 x 896: token embedding and output head) and its linear layers cost in fp32, bf16
and int8, at the batch sizes generation meets (1 token per step when decoding alone, 8 for a served batch,
171 for a prompt).

    python bench/cpu_kernels.py --json bench/results/cpu-kernels.json

Rows: embedding lookup of one token; head (`F.linear`) at M rows; each Qwen2.5-0.5B linear shape at M rows
(one weight, which may stay in the cache); the same shapes with 24 weights in turn ("24 x", from memory,
as in a decoding step), fp32 against bf16.
Variants: fp32; bf16 (weights and input in bf16); torchao 0.18 int8 weight-only (`Int8WeightOnlyConfig`,
per row; and `IntxWeightOnlyConfig` int8 per row, torchao's embedding recipe); PyTorch's own
`aten._weight_int8pack_mm` (int8 weights, no dequantized copy) and `aten._weight_int4pack_mm_for_cpu` (int4
weights in groups of 128, the kernel under int4 weight-only quantization on CPUs). Median of --reps after two warm-ups, ms.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VOCAB, HIDDEN = 151936, 896
LINEAR_SHAPES = [(896, 4864), (4864, 896), (896, 896), (896, 128)]  # Qwen2.5-0.5B: MLP up/gate, down, q/o, k/v


def milliseconds(reps: int, run: Callable[..., Any], *args: Any) -> float:
    run(*args)
    run(*args)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def torchao_table(weight: torch.Tensor, recipe: str) -> torch.nn.Embedding:
    """An embedding holding `weight`, quantized by one of torchao's int8 weight-only recipes."""
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    config = (Int8WeightOnlyConfig() if recipe == "Int8WeightOnly"
              else IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)))
    table = torch.nn.Embedding(*weight.shape)
    table.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
    quantize_(table, config, filter_fn=lambda module, name: True)
    return table


def int4_packed(fan_out: int, fan_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random int4 weights packed for PyTorch's CPU kernel, and their per-group scales and zero points."""
    values = torch.randint(0, 16, (fan_out, fan_in), dtype=torch.int32)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 1), torch.rand(fan_in // 128, fan_out, 2)


def vocabulary_rows(reps: int) -> list[dict[str, Any]]:
    F = torch.nn.functional
    weight = torch.randn(VOCAB, HIDDEN) * 0.02
    half = weight.to(torch.bfloat16)
    ids = torch.tensor([[5]])
    packed, scales = torch.randint(-127, 128, (VOCAB, HIDDEN), dtype=torch.int8), torch.rand(VOCAB)
    packed4, scales4 = int4_packed(VOCAB, HIDDEN)
    rows = [{"op": "embedding lookup", "m": 1, "fp32": milliseconds(reps, F.embedding, ids, weight),
             "bf16": milliseconds(reps, lambda i: F.embedding(i, half).float(), ids)}]
    tables = {recipe: torchao_table(weight, recipe) for recipe in ("Int8WeightOnly", "IntxWeightOnly")}
    slow = max(2, reps // 4)  # torchao's tables take up to a second a call
    for recipe, table in tables.items():
        rows[0][f"torchao {recipe}"] = milliseconds(slow, table, ids)
    for m in (1, 8):
        x = torch.randn(m, HIDDEN)
        row = {"op": "output head", "m": m, "fp32": milliseconds(reps, F.linear, x, weight),
               "bf16": milliseconds(reps, lambda a: F.linear(a.to(torch.bfloat16), half).float(), x),
               "aten int8pack": milliseconds(reps, torch.ops.aten._weight_int8pack_mm, x, packed, scales),
               "aten int4pack": milliseconds(reps, torch.ops.aten._weight_int4pack_mm_for_cpu, x, packed4, 128, scales4)}
        for recipe, table in tables.items():
            row[f"torchao {recipe}"] = milliseconds(slow, F.linear, x, table.weight)
        rows.append(row)
    return rows


def linear_rows(reps: int) -> list[dict[str, Any]]:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    rows = []
    for fan_in, fan_out in LINEAR_SHAPES:
        layer = torch.nn.Linear(fan_in, fan_out, bias=False)
        half = copy.deepcopy(layer).to(torch.bfloat16)
        int8 = copy.deepcopy(layer)
        quantize_(int8, Int8WeightOnlyConfig())
        packed4, scales4 = int4_packed(fan_out, fan_in)
        for m in (1, 8, 171):
            x = torch.randn(m, fan_in)
            xb = x.to(torch.bfloat16)
            rows.append({"op": f"linear {fan_in}->{fan_out}", "m": m, "fp32": milliseconds(reps, layer, x),
                         "bf16": milliseconds(reps, half, xb), "torchao Int8WeightOnly": milliseconds(reps, int8, x),
                         "aten int4pack": milliseconds(reps, torch.ops.aten._weight_int4pack_mm_for_cpu, x, packed4,
                                                       128, scales4)})
    return rows


def rotated_rows(reps: int) -> list[dict[str, Any]]:
    """fp32 against bf16 (the `--quantize bf16` rule) with weights that come from memory, as in a decoding step:
    24 different weights of each shape (one per layer) multiplied in turn; ms per product."""
    F = torch.nn.functional
    rows = []
    for fan_in, fan_out in LINEAR_SHAPES[:3]:
        weights = [torch.randn(fan_out, fan_in) * 0.02 for _ in range(24)]
        halves = [w.to(torch.bfloat16) for w in weights]
        for m in (1, 2, 4, 8, 16):
            x = torch.randn(m, fan_in)
            fp32 = milliseconds(reps, lambda a, ws: [F.linear(a, w) for w in ws], x, weights) / 24
            bf16 = milliseconds(reps, lambda a, ws: [F.linear(a.to(torch.bfloat16), w).float() for w in ws], x,
                                halves) / 24
            rows.append({"op": f"24 x {fan_in}->{fan_out}", "m": m, "fp32": fp32, "bf16": bf16})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = ["fp32", "bf16", "torchao Int8WeightOnly", "torchao IntxWeightOnly", "aten int8pack", "aten int4pack"]
    print(f"{'op':<22}{'M':>5}" + "".join(f"{c:>24}" for c in columns) + "   (ms; x = fp32 / variant)")
    for row in rows:
        cells = []
        for c in columns:
            cells.append(f"{row[c]:10.3f} ({row['fp32'] / row[c]:5.2f}x)" if c in row else "-")
        print(f"{row['op']:<22}{row['m']:>5}" + "".join(f"{cell:>24}" for cell in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the results here (refused if it exists)")
    args = parser.parse_args()
    if args.json is not None and args.json.exists():
        parser.error(f"--json {args.json} exists; choose another file")
    from geovlm.precision import cpu_flags

    torch.manual_seed(0)
    with torch.inference_mode():
        rows = vocabulary_rows(args.reps) + linear_rows(args.reps) + rotated_rows(args.reps)
    print(f"CPU flags: {' '.join(cpu_flags()) or 'none'}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    print_table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu_flags": cpu_flags(), "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
