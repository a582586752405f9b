"""What a benchmark run is held to and how it reads: the targets against the seed-style method and the
human-readable table of a results dict."""

from __future__ import annotations

from typing import Any

from geovlm.bench.common import Settings, median

# The targets GeoVLM holds itself to against the seed-style method (CPU, real sizes, default settings).
TARGETS = {
    "stage1_time_ratio_max": 0.7,
    "stage1_memory_ratio_max": 0.8,
    "generation_speedup_min": 8.0,
    "total_seconds_max": 15 * 60,
    "serve_speedup_min": 3.0,  # 8 concurrent requests to `geovlm serve` against one at a time, tokens/s
}


def ratios(geo: dict[str, Any], seed: dict[str, Any]) -> dict[str, float]:
    return {
        "time": geo["seconds_per_step"] / seed["seconds_per_step"],
        "time_min": geo["min_seconds_per_step"] / seed["min_seconds_per_step"],  # least-disturbed reps
        "peak_memory": geo["memory"]["peak_bytes"] / seed["memory"]["peak_bytes"],
        "step_memory": geo["memory"]["step_bytes"] / max(seed["memory"]["step_bytes"], 1),
        "speedup": seed["seconds_per_step"] / geo["seconds_per_step"],
    }


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
    if "serve" in results and "speedup" in results["serve"]:
        sv = results["serve"]
        checks["serve_concurrency_speedup"] = {"value": sv["speedup"], "min": TARGETS["serve_speedup_min"],
                                               "met": sv["speedup"] >= TARGETS["serve_speedup_min"]}  # fmt: skip
        checks["serve_answers_equal"] = {"met": bool(sv["answers_equal"])}
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
    if "precision" in results:
        lines += ["", *_precision_lines(results["precision"])]
    if "serve" in results:
        lines += ["", *_serve_lines(results["serve"])]
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
        f"CPU flags: {' '.join(meta.get('cpu_flags') or []) or '(none of avx2/avx512f/avx512_bf16/amx)'}",
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


def _precision_lines(p: dict[str, Any]) -> list[str]:
    lines = [f"generation by weight precision (batch 1, {p['prompt_tokens']} prompt tokens, {p['new_tokens']} new, "
             f"greedy, {p['preset']} sizes; CPU flags: {' '.join(p['cpu_flags']) or '-'})",
             f"{'weights':<13}{'tokens/s':>10}{'x fp32':>8}{'prompt s':>10}{'step ms':>9}{'greedy = fp32':>15}"
             f"{'max |dlogit|':>14}{'others':>8}{'weights MiB':>13}{'x fp32':>8}"]
    for name, row in p["rows"].items():
        memory = (f"{row['weight_bytes'] / 2**20:>13.0f}{row['memory_vs_fp32']:>8.2f}" if "weight_bytes" in row
                  else "")  # results stored before the memory columns
        split = (f"{row['prompt_seconds']:>10.2f}{row['step_ms']:>9.0f}" if "step_ms" in row
                 else f"{'-':>10}{'-':>9}")  # results stored before the split
        lines.append(f"{name:<13}{row['tokens_per_s']:>10.2f}{row['vs_fp32']:>8.2f}{split}"
                     f"{str(row['greedy_equal_to_fp32']):>15}{row['max_abs_logit_diff']:>14.3f}"
                     f"{_cores(row['others_cores']):>8}{memory}")  # fmt: skip
    lines += [f"  {name}: skipped ({why})" for name, why in p.get("skipped", {}).items()]
    lines += [f"  note: {note}" for note in p.get("notes", [])]
    return lines


def _serve_lines(sv: dict[str, Any]) -> list[str]:
    if "skipped" in sv:
        return [f"geovlm serve: skipped ({sv['skipped']})"]
    one, many = sv["one_at_a_time"], sv["concurrent"]
    return [f"geovlm serve: {sv['requests']} requests, max_tokens {sv['max_tokens']}, {sv['preset']} sizes, greedy",
            f"  one at a time (chat, as geovlm ask) {one['tokens_per_s']:8.2f} tokens/s  ({one['tokens']} tokens in "
            f"{one['seconds']:.1f} s)",
            f"  {sv['requests']} concurrent HTTP requests      {many['tokens_per_s']:8.2f} tokens/s  ({many['tokens']} "
            f"tokens in {many['seconds']:.1f} s; batches run: {many['batch_sizes']})",
            f"  speed-up {sv['speedup']:.2f}x; every answer equal to one at a time: {sv['answers_equal']}"]
