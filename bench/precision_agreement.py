"""Do bf16 and int8 keep a trained model's answers? `geovlm eval` run once per precision over the same
held-out questions, each in its own process (the command a user runs), then compared with fp32: accuracy,
the share of questions whose whole generated reply is identical, and wall time.

    geovlm quickstart --no-baseline --out out/quickstart
    python bench/precision_agreement.py out/quickstart/vision/stage2 out/quickstart/data \\
        --max-new-tokens 16 --json bench/results/precision-agreement.json

The bar (issue #21): accuracy within 1 point of fp32 and at least 95% of replies identical.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from geovlm.data.jsonfile import read_json_objects

VARIANTS = {"fp32": ["--dtype", "fp32"], "bf16": ["--dtype", "bf16"], "int8": ["--quantize", "int8"],
            "bf16-weights": ["--dtype", "fp32", "--quantize", "bf16"]}


def run_eval(model: str, data: Path, variant: str, work: Path, max_new_tokens: int, batch_size: int) -> dict:
    predictions, score = work / f"predictions-{variant}.jsonl", work / f"score-{variant}.json"
    command = [sys.executable, "-m", "geovlm.cli", "eval", model, "--questions", str(data / "test_questions.jsonl"),
               "--answers", str(data / "test_answers.jsonl"), "--images", str(data / "images"),
               "--out", str(predictions), "--json", str(score), "--device", "cpu", "--batch-size", str(batch_size),
               "--max-new-tokens", str(max_new_tokens), *VARIANTS[variant]]
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"geovlm eval ({variant}) failed:\n{proc.stderr[-2000:]}")
    seconds = time.perf_counter() - start
    replies = {record["question_id"]: record["text"] for _, record in read_json_objects(predictions)}
    report = json.loads(score.read_text())
    return {"accuracy": report["accuracy"], "seconds": round(seconds, 1), "replies": replies}  # accuracy in percent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained GeoVLM folder")
    parser.add_argument("data", type=Path, help="a `geovlm synth` folder (test_questions.jsonl, test_answers.jsonl, images/)")
    parser.add_argument("--variants", default="fp32,bf16,int8", help="comma-separated, fp32 first")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="write the results here (refused if it exists)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if variants[0] != "fp32" or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: fp32 first, then any of {', '.join(VARIANTS)}")
    if args.json is not None and args.json.exists():
        parser.error(f"--json {args.json} exists; choose another file")
    with tempfile.TemporaryDirectory() as work:
        results = {v: run_eval(args.model, args.data, v, Path(work), args.max_new_tokens, args.batch_size)
                   for v in variants}
    reference = results["fp32"]["replies"]
    rows = []
    for variant, result in results.items():
        same = sum(result["replies"].get(qid) == reply for qid, reply in reference.items())
        rows.append({"variant": variant, "accuracy": result["accuracy"], "seconds": result["seconds"],
                     "identical_to_fp32": same / len(reference), "questions": len(reference)})
    print(f"{'weights':12} {'accuracy':>9} {'vs fp32':>8} {'identical':>10} {'eval s':>7}")
    for row in rows:
        print(f"{row['variant']:12} {row['accuracy']:8.1f}% {row['accuracy'] - rows[0]['accuracy']:+7.1f} "
              f"{100 * row['identical_to_fp32']:9.1f}% {row['seconds']:7.1f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "max_new_tokens": args.max_new_tokens,
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
