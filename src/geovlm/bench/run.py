"""Run the benchmark sections, print a table, write JSON (`--json OUT`); see `geovlm.bench.cli`."""

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

from geovlm.bench.cli import USAGE, add_arguments
from geovlm.bench.common import SECTIONS, Settings, load_average, log, median

# The targets GeoVLM holds itself to against the seed-style method (CPU, real sizes, default settings).
TARGETS = {
    "stage1_time_ratio_max": 0.7,
    "stage1_memory_ratio_max": 0.8,
    "generation_speedup_min": 8.0,
    "total_seconds_max": 15 * 60,
}


def settings_from_args(args: argparse.Namespace) -> Settings:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = Settings.defaults(device, args.quick)
    if args.reps is not None and args.stage2_reps is None:
        args.stage2_reps = args.reps
    for name in ("dtype", "preset", "reps", "stage2_reps", "warmup", "stage1_batch", "stage2_batch",
                 "gen_new_tokens", "seed_gen_reps"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    settings.compile = args.compile
    if settings.compile:  # the first warm-up is eager (FLOP count); compilation then needs untimed steps too
        settings.warmup = max(settings.warmup, 3)
    settings.fused_ce = args.fused_ce
    settings.isolate = not args.no_isolate
    settings.interleave = settings.interleave or args.interleave
    settings.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(settings.sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if settings.dtype == "bf16" and not device.startswith("cuda"):
        log("bf16 on CPU: a smoke run of the GPU code paths; without bf16 units it is slow, not a benchmark")
    return settings


# ---------------------------------------------------------------------- running jobs
class RemoteRunner:
    """A `TrainStepRunner` in a fresh interpreter (see `geovlm.bench.worker` for the protocol)."""

    def __init__(self, settings: Settings, **params: Any) -> None:
        import geovlm
        from geovlm.bench.worker import PREFIX

        self.prefix = PREFIX
        self.name = " ".join(str(v) for v in params.values())
        package_root = str(Path(geovlm.__file__).resolve().parents[1])  # also right for a source checkout
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        payload = json.dumps({"settings": settings.to_dict(), **params})
        self.proc = subprocess.Popen([sys.executable, "-m", "geovlm.bench.worker", payload], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(self.prefix):
                message = json.loads(line[len(self.prefix) :])
                if "error" in message:
                    raise RuntimeError(f"benchmark worker {self.name} failed:\n{message['error']}")
                return message["ok"]
            sys.stderr.write(line)  # library output: pass it on, keep the protocol clean
        raise RuntimeError(f"benchmark worker {self.name} exited (status {self.proc.wait()})")

    def ready(self) -> None:
        self._read()

    def call(self, command: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class LocalRunner:
    """The same interface in this process (`--no-isolate`)."""

    def __init__(self, settings: Settings, **params: Any) -> None:
        from geovlm.bench.sections import TrainStepRunner

        self.runner = TrainStepRunner(settings, **params)

    def ready(self) -> None:
        pass

    def call(self, command: dict[str, Any]) -> Any:
        return self.runner.handle(command)

    def close(self) -> None:
        self.runner = None


def paired_training(settings: Settings, stage: str, variants: list[str]) -> dict[str, Any]:
    """Each variant in turn: build, warm-ups, timed repetitions, result (default), or, with
    `settings.interleave`, all variants alive at once and repetition i of each run back to back,
    alternating which goes first (ABBA), so that a change in background load falls on all alike.

    Sequential is the default because a second resident model is not neutral here: on this VM an idle
    process holding ~3.6 GB made the seed-style step ~15% slower (it faults in ~1.7 GB of fresh
    memory per step) while GeoVLM's step did not change, which would bias the comparison.
    """
    runner_cls = RemoteRunner if settings.isolate else LocalRunner
    reps = settings.reps_for(stage)

    def drive(runners: dict[str, Any]) -> dict[str, Any]:
        for runner in runners.values():
            runner.ready()
        for _ in range(settings.warmup):
            for runner in runners.values():
                runner.call({"cmd": "warmup"})
        order = list(runners.values())
        for i in range(reps):
            for runner in order if i % 2 == 0 else order[::-1]:
                runner.call({"cmd": "rep", "i": i})
        return {variant: runner.call({"cmd": "result"}) for variant, runner in runners.items()}

    groups = [variants] if settings.interleave else [[v] for v in variants]
    results: dict[str, Any] = {}
    for group in groups:
        runners: dict[str, Any] = {}
        try:
            for variant in group:  # isolated workers of one group build their models concurrently
                runners[variant] = runner_cls(settings, stage=stage, variant=variant)
            results.update(drive(runners))
        finally:
            for runner in runners.values():
                runner.close()
    return results


def run_job(settings: Settings, job: str, **params: Any) -> Any:
    from geovlm.bench.sections import JOBS

    return JOBS[job](settings, **params)


def ratios(geo: dict[str, Any], seed: dict[str, Any]) -> dict[str, float]:
    return {
        "time": geo["seconds_per_step"] / seed["seconds_per_step"],
        "time_min": geo["min_seconds_per_step"] / seed["min_seconds_per_step"],  # least-disturbed reps
        "peak_memory": geo["memory"]["peak_bytes"] / seed["memory"]["peak_bytes"],
        "step_memory": geo["memory"]["step_bytes"] / max(seed["memory"]["step_bytes"], 1),
        "speedup": seed["seconds_per_step"] / geo["seconds_per_step"],
    }


def machine_info(settings: Settings) -> dict[str, Any]:
    import torch
    import transformers

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
    if "generation" in settings.sections:
        results["generation"] = run_job(settings, "generation")
        lap("generation")
    if "eval" in settings.sections:
        results["eval"] = run_job(settings, "evaluation")
        lap("eval")
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


def check_targets(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The targets against the seed-style method; meaningful for the default CPU run (real sizes)."""
    checks: dict[str, Any] = {"applies": not settings.quick and settings.preset == "base"}
    if "stage1" in results:
        r = results["stage1"]["ratios"]
        checks["stage1_time_ratio"] = {"value": r["time"], "max": TARGETS["stage1_time_ratio_max"],
                                       "met": r["time"] <= TARGETS["stage1_time_ratio_max"]}  # fmt: skip
        checks["stage1_memory_ratio"] = {"value": r["peak_memory"], "max": TARGETS["stage1_memory_ratio_max"],
                                         "met": r["peak_memory"] <= TARGETS["stage1_memory_ratio_max"]}  # fmt: skip
    if "generation" in results:
        g = results["generation"]
        checks["generation_speedup"] = {"value": g["speedup"], "min": TARGETS["generation_speedup_min"],
                                        "met": g["speedup"] >= TARGETS["generation_speedup_min"]}  # fmt: skip
        checks["greedy_agree"] = {"met": bool(g["greedy_agree"])}
    if "data" in results:
        for stage in ("stage1", "stage2"):
            if stage in results:
                step = results[stage]["geovlm"]["samples_per_s"]
                rows = [r for r in results["data"]["rows"] if r["stage"] == stage]
                best = max(r["samples_per_s"] for r in rows)
                checks[f"data_faster_than_{stage}_step"] = {"value": best / step, "min": 1.0, "met": best > step}
    if not settings.quick:
        total = results["total_seconds"]
        checks["total_seconds"] = {"value": total, "max": TARGETS["total_seconds_max"],
                                   "met": total <= TARGETS["total_seconds_max"]}  # fmt: skip
    return checks


# ---------------------------------------------------------------------- table
def _cores(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{median(known):.1f}" if known else "-"


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f}G"


def format_table(results: dict[str, Any]) -> str:
    """The human-readable report of a results dict: one block per section that ran."""
    lines = _header_lines(results)
    roof = results.get("roofline", {}).get("flops_per_s")
    for stage in ("stage1", "stage2"):
        if stage in results:
            lines += ["", *_stage_lines(stage, results[stage], results["settings"], roof)]
    if "generation" in results:
        lines += ["", *_generation_lines(results["generation"])]
    if "eval" in results:
        lines += ["", *_eval_lines(results["eval"])]
    if "data" in results:
        lines += ["", *_data_lines(results)]
    targets = results.get("targets", {})
    if targets:
        lines += ["", *_target_lines(targets)]
    lines.append(f"\ntotal {results['total_seconds']:.0f} s")
    return "\n".join(lines)


def _header_lines(results: dict[str, Any]) -> list[str]:
    meta, s = results["meta"], results["settings"]
    lines = [
        f"GeoVLM benchmark {meta['date']}  {meta['device']} {s['dtype']}  {meta['cpu']} ({meta['cpu_count']} CPUs, "
        f"{meta['torch_threads']} threads)  torch {meta['torch']}  transformers {meta['transformers']}",
        f"load average: start {meta['load_average_start']}, end {meta.get('load_average_end')}"
        f"{'  [QUICK: tiny sizes]' if s['quick'] else ''}",
    ]
    if "roofline" in results:
        r = results["roofline"]
        figures = ", ".join(f"{k} {v['flops_per_s'] / 1e9:.1f}" for k, v in r.items() if isinstance(v, dict))
        lines.append(f"roofline (torch.mm {r['start']['n']}² {s['dtype']}): {figures} GFLOP/s -> limit "
                     f"{r['flops_per_s'] / 1e9:.1f} (the best of these and the repetitions' probes)")
    return lines


def _stage_lines(stage: str, block: dict[str, Any], s: dict[str, Any], roof: float | None) -> list[str]:
    geo = block["geovlm"]
    lines = [f"{stage} training step, batch {geo['batch_size']}, {s['preset']} sizes, {s['dtype']}: median of "
             f"{len(geo['times'])} (after {s['warmup']} warm-up) on each sampler's median batch"
             + (", variants alternated" if s["interleave"] else ", variants one after the other"),
             f"{'variant':<12}{'s/step':>8}{'min':>7}{'samples/s':>10}{'peak mem':>11}{'step mem':>10}"
             f"{'GFLOP/step':>11}{'GFLOP/s':>8}{'%roof':>6}{'batch':>9}{'epoch pad':>10}{'others':>8}"
             f"{'probe':>7}"]  # fmt: skip
    for name, v in block.items():
        if name == "ratios" or "skipped" in v:
            continue
        pct = f"{100 * v['achieved_flops_per_s'] / roof:.0f}%" if roof else "-"
        lines.append(
            f"{name:<12}{v['seconds_per_step']:>8.2f}{v['min_seconds_per_step']:>7.2f}{v['samples_per_s']:>10.3f}"
            f"{_gb(v['memory']['peak_bytes']):>11}{_gb(v['memory']['step_bytes']):>10}"
            f"{v['flops_per_step'] / 1e9:>11.0f}{v['achieved_flops_per_s'] / 1e9:>8.1f}{pct:>6}"
            f"{v['batch_size']:>4}x{v['padded_length']:<4}{100 * v['padding']['padding_fraction']:>9.1f}%"
            f"{_cores(v['others_cores']):>8}{median(v['probe_flops_per_s']) / 1e9:>7.0f}"
        )
    r = block["ratios"]
    lines.append(f"GeoVLM / seed: time {r['time']:.2f}x (min-to-min {r['time_min']:.2f}x), peak memory "
                 f"{r['peak_memory']:.2f}x, step memory {r['step_memory']:.2f}x")  # fmt: skip
    return lines


def _generation_lines(g: dict[str, Any]) -> list[str]:
    return [f"generation (batch 1, {g['prompt_tokens']} prompt tokens incl. 49 image tokens, "
            f"{g['new_tokens']} new, greedy, {g['dtype']})",
            f"  GeoVLM.generate (KV cache) {g['geovlm']['tokens_per_s']:8.2f} tokens/s  "
            f"({g['geovlm']['seconds']:.2f} s; first token {g['geovlm']['first_token_seconds']:.2f} s)",
            f"  seed loop (no cache)       {g['seed']['tokens_per_s']:8.2f} tokens/s  "
            f"({g['seed']['seconds']:.2f} s; first token {g['seed']['first_token_seconds']:.2f} s, "
            f"last {g['seed']['last_token_seconds']:.2f} s)",
            f"  speed-up {g['speedup']:.1f}x (min-to-min {g['speedup_min']:.1f}x); other processes used "
            f"{_cores(g['geovlm']['others_cores'])} / {_cores(g['seed']['others_cores'])} cores",
            f"  greedy outputs identical: {g['greedy_agree']} (compared in {g['agreement_dtype']}"
            + ("" if g["dtype"] == "fp32" else f"; in {g['dtype']}: {g['agree_in_run_dtype']}")
            + f"; {g['distinct_output_tokens']} distinct tokens)"]  # fmt: skip


def _eval_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["batched evaluation (geovlm.serve.chat.answer, left-padded batches)",
             f"{'model':<8}{'batch':>6}{'questions':>10}{'new tokens':>11}{'questions/s':>13}{'tokens/s':>10}"
             f"{'others':>8}"]
    for row in rows:
        lines.append(f"{row['preset']:<8}{row['batch_size']:>6}{row['questions']:>10}{row['new_tokens']:>11}"
                     f"{row['questions_per_s']:>13.2f}{row['new_tokens_per_s']:>10.1f}"
                     f"{_cores(row['others_cores']):>8}")  # fmt: skip
    return lines


def _data_lines(results: dict[str, Any]) -> list[str]:
    d = results["data"]
    lines = [f"data path (GeoVLMDataset + GeoVLMCollator via DataLoader; {d['problems']} synthetic problems "
             f"written in {d['write_seconds']:.1f} s)",
             f"{'stage':<8}{'file':<16}{'workers':>8}{'batch':>6}{'samples/s':>11}{'x GeoVLM step':>15}"]  # fmt: skip
    for row in d["rows"]:
        step = results.get(row["stage"], {}).get("geovlm", {}).get("samples_per_s")
        factor = f"{row['samples_per_s'] / step:.0f}x" if step else "-"
        lines.append(f"{row['stage']:<8}{row['file']:<16}{row['workers']:>8}{row['batch_size']:>6}"
                     f"{row['samples_per_s']:>11.1f}{factor:>15}")  # fmt: skip
    return lines


def _target_lines(targets: dict[str, Any]) -> list[str]:
    lines = ["targets" + ("" if targets.get("applies") else " (quick/tiny run: not meaningful)")]
    for name, t in targets.items():
        if name == "applies":
            continue
        bound = f" (max {t['max']})" if "max" in t else f" (min {t['min']})" if "min" in t else ""
        value = f" {t['value']:.2f}" if "value" in t else ""
        lines.append(f"  {name}:{value}{bound} {'MET' if t['met'] else 'NOT MET'}")
    return lines


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
