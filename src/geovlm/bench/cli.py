"""`geovlm bench`: speed and memory of training and generation, GeoVLM vs the seed code's method.

Only argparse here, so that `geovlm --help` does not import torch; the work is in `geovlm.bench.run`.
"""

from __future__ import annotations

import argparse

SECTIONS = ("roofline", "stage1", "stage2", "generation", "eval", "data", "precision", "serve")
# What a plain `geovlm bench` runs (within its 15-minute budget on 2 idle cores); precision and serve are
# asked for by name (`--sections precision,serve`, or `--sections all`).
DEFAULT_SECTIONS = ("roofline", "stage1", "stage2", "generation", "eval", "data")
USAGE = """Training steps, generation, batched evaluation and data loading, GeoVLM against the seed's way.

    geovlm bench --json bench.json    # CPU: real sizes, fp32, ~10 min on 2 idle cores
    geovlm bench --sections precision,serve   # fp32/bf16/int8 generation; 8 concurrent requests to `geovlm serve`
    geovlm bench --quick              # tiny model, < 1 min (what tests/test_bench.py runs)
    geovlm bench --device cuda        # bf16 autocast, bigger batches (the default when CUDA is present)
    python bench/run.py ...           # the same from a source checkout
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny model everywhere, under a minute")
    parser.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"),
                        help="compute dtype (default: bf16 on CUDA, fp32 on CPU); bf16 = autocast for training, "
                             "bf16 weights for inference")  # fmt: skip
    parser.add_argument("--json", metavar="OUT", help="write all results to this JSON file")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}, or all (default: "
                             f"{','.join(DEFAULT_SECTIONS)})")  # fmt: skip
    parser.add_argument("--preset", choices=("base", "tiny"), help="model size (default: base; tiny with --quick)")
    parser.add_argument("--reps", type=int, help="timed repetitions per figure (stage 2 too, unless --stage2-reps)")
    parser.add_argument("--stage2-reps", type=int, help="timed repetitions of the stage-2 step")
    parser.add_argument("--warmup", type=int, help="untimed warm-up steps")
    parser.add_argument("--stage1-batch", type=int)
    parser.add_argument("--stage2-batch", type=int)
    parser.add_argument("--gen-new-tokens", type=int)
    parser.add_argument("--seed-gen-reps", type=int, help="timed runs of the (slow) seed generation loop")
    parser.add_argument("--precision-reps", type=int, help="timed runs of each precision (section precision)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the vision tower and LM body")
    parser.add_argument("--fused-ce", action="store_true",
                        help="add a GeoVLM variant with Liger's fused linear cross-entropy (if installed)")
    parser.add_argument("--interleave", action="store_true",
                        help="keep both variants alive and alternate their steps (against drifting background "
                             "load; but the second resident model slows allocation-heavy steps, see the docs)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="run training variants in this process (faster; peak memory figures then mix)")



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark training steps, generation, evaluation and data loading against the seed's way",
        description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geovlm.bench.run import run_from_args

    return run_from_args(args)
