"""Weight memory of the real-size GeoVLM (SigLIP base + projector + Qwen2.5-0.5B, tied head as Qwen2.5 has it)
in fp32, bf16 (`--dtype bf16`) and int8 (`--quantize int8`), in all and by part, counted by
`geovlm.bench.common.weight_bytes` (quantized tensors by the tensors they store). Random weights: sizes
do not depend on values. About 30 s and 5 GB of memory.

    python bench/weight_memory.py --json bench/results/weight-memory.json

The goals (issue #21): bf16 at most 0.5x fp32's bytes, int8 at most 0.35x.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from geovlm.bench.common import weight_bytes
from geovlm.loading import build_tiny
from geovlm.precision import quantize_in_place

MIB = 2**20


def parts(model: torch.nn.Module) -> dict[str, float]:
    """MiB of the whole model and of its vision tower, projector and language model (with the head)."""
    inner = model.model
    return {"all": weight_bytes(model) / MIB, "vision tower": weight_bytes(inner.vision_tower) / MIB,
            "projector": weight_bytes(inner.projector) / MIB,
            "language model": (weight_bytes(model) - weight_bytes(inner.vision_tower) - weight_bytes(inner.projector)) / MIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--json", type=Path, help="write the results here (refused if it exists)")
    args = parser.parse_args()
    if args.json is not None and args.json.exists():
        parser.error(f"--json {args.json} exists; choose another file")
    model, _ = build_tiny(args.preset)
    results = {"fp32": parts(model), "bf16": parts(copy.deepcopy(model).to(torch.bfloat16))}
    quantize_in_place(model, "int8")
    results["int8"] = parts(model)
    print(f"weight memory, {args.preset} preset (MiB; x = of fp32's)")
    print(f"{'weights':<8}" + "".join(f"{name:>16}" for name in results["fp32"]) + f"{'x fp32':>9}")
    for variant, row in results.items():
        print(f"{variant:<8}" + "".join(f"{mib:>16,.1f}" for mib in row.values())
              + f"{row['all'] / results['fp32']['all']:>9.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"preset": args.preset, "mib": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
