"""`geovlm bench`: run the selected sections, print the report, write JSON (`--json OUT`); the options
are in `geovlm.bench.cli`, the runners in `runners.py`, targets and table in `report.py`."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from geovlm.bench.cli import SECTIONS, USAGE, add_arguments
from geovlm.bench.common import Settings, load_average, log
from geovlm.bench.report import check_targets, format_table, ratios
from geovlm.bench.runners import paired_training, run_job

# The inference sections in the order they run, each with the job (geovlm.bench.sections.JOBS) it runs.
INFERENCE_JOBS = (("generation", "generation"), ("eval", "evaluation"), ("precision", "precision"),
                  ("serve", "concurrency"))

# Options that, given, replace the defaults of the same name in `Settings`.
_OVERRIDES = ("dtype", "preset", "reps", "stage2_reps", "warmup", "stage1_batch", "stage2_batch", "gen_new_tokens",
              "seed_gen_reps", "precision_reps")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The run's settings: the defaults for the device (and --quick), then the options given."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = Settings.defaults(device, args.quick)
    given = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    if "reps" in given:
        given.setdefault("stage2_reps", given["reps"])  # --reps sets stage 2's too, unless given apart
    for name, value in given.items():
        setattr(settings, name, value)
    settings.compile = args.compile
    if settings.compile:  # the first warm-up is eager (FLOP count); compilation then needs untimed steps too
        settings.warmup = max(settings.warmup, 3)
    settings.fused_ce = args.fused_ce
    settings.isolate = not args.no_isolate
    settings.interleave = settings.interleave or args.interleave
    settings.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if settings.sections == ["all"]:
        settings.sections = list(SECTIONS)
    unknown = sorted(set(settings.sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if settings.dtype == "bf16" and not device.startswith("cuda"):
        log("bf16 on CPU: a smoke run of the GPU code paths; without bf16 units it is slow, not a benchmark")
    return settings


def machine_info(settings: Settings) -> dict[str, Any]:
    import torch
    import transformers

    from geovlm.precision import cpu_flags

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": settings.device,
        "cpu_flags": cpu_flags(),
    }
    if settings.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(settings.device)
    return info


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run(settings: Settings) -> dict[str, Any]:
    """Every selected section, in an order that keeps big models out of the DataLoader's forks."""
    from geovlm.bench import common, inference

    start = time.perf_counter()
    results: dict[str, Any] = {"settings": settings.to_dict(), "meta": machine_info(settings), "section_seconds": {}}
    clock = [start]

    def lap(name: str) -> None:  # wall seconds per section, for the time budget
        now = time.perf_counter()
        results["section_seconds"][name] = round(now - clock[0], 1)
        clock[0] = now
        log(f"{name}: {now - start:.0f} s since start")

    results["meta"].update(load_average_start=load_average(), uptime_start=uptime())
    if "data" in settings.sections:  # first: its DataLoader forks before this process touches CUDA
        results["data"] = run_job(settings, "data_path")
        lap("data")
    if "roofline" in settings.sections:
        results["roofline"] = {"start": common.roofline(settings)}
        log(f"roofline: {results['roofline']['start']['flops_per_s'] / 1e9:.1f} GFLOP/s")
        lap("roofline")
    for stage in ("stage1", "stage2"):
        if stage not in settings.sections:
            continue
        variants = ["geovlm", "seed"] + (["geovlm+flce"] if settings.fused_ce else [])
        block = paired_training(settings, stage, variants)
        block["ratios"] = ratios(block["geovlm"], block["seed"])
        results[stage] = block
        lap(stage)
    for section, job in INFERENCE_JOBS:
        if section in settings.sections:
            results[section] = run_job(settings, job)
            lap(section)
    inference.release_models()
    if "roofline" in settings.sections:
        results["roofline"]["end"] = common.roofline(settings)
        # The machine's limit: the best dense matmul rate seen in the run, start, end or a repetition's
        # probe (other tenants of the host may slow any one of them down).
        probes = [p for stage in ("stage1", "stage2") for v in results.get(stage, {}).values()
                  for p in v.get("probe_flops_per_s", [])]  # fmt: skip
        results["roofline"]["flops_per_s"] = max(
            [r["flops_per_s"] for r in results["roofline"].values()] + probes
        )
    results["meta"].update(load_average_end=load_average(), uptime_end=uptime())
    results["total_seconds"] = time.perf_counter() - start
    results["targets"] = check_targets(results, settings)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geovlm bench", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    results = run(settings)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
