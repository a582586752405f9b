"""Running lmms-eval in a subprocess and reading what it really did.

lmms-eval catches an exception raised inside a model, logs "Error during evaluation: ..." and exits 0,
so its exit code says nothing. `read_samples` therefore judges a run by its output: the samples file
(`--log_samples`) must hold exactly one sample per document, and the log no error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from geovlm.eval.lmms import TASKS_DIR

ERROR_MARKERS = ("Error during evaluation", "Traceback (most recent call last)", "| ERROR ")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # lmms-eval colours its log even into a pipe


@dataclass
class LmmsRun:
    output: Path  # the --output_path folder
    log: str  # stdout + stderr
    returncode: int  # reported for information only: lmms-eval exits 0 when the model raised


def lmms_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def lmms_eval_args(model: Path, task: str, output: Path, *, batch_size: int = 4, max_new_tokens: int = 12) -> list[str]:
    return ["--model", "geovlm", "--model_args", f"pretrained={model},batch_size={batch_size},device=cpu",
            "--tasks", task, "--include_path", os.fspath(TASKS_DIR), "--gen_kwargs", f"max_new_tokens={max_new_tokens}",
            "--log_samples", "--output_path", os.fspath(output), "--verbosity", "INFO"]


def lmms_eval_command() -> list[str]:
    """The `lmms-eval` console script of this environment (`python -m lmms_eval` without one)."""
    script = Path(sys.executable).with_name("lmms-eval")
    return [os.fspath(script)] if script.exists() else [sys.executable, "-m", "lmms_eval"]


def run_lmms(command: list[str], output: Path, env: dict[str, str], cwd: Path, timeout: int = 600) -> LmmsRun:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return LmmsRun(output, ANSI.sub("", done.stdout + done.stderr), done.returncode)


def read_samples(run: LmmsRun, task: str, n_docs: int) -> dict[int, dict]:
    """{doc_id: sample} of `task`; AssertionError, with the log's tail, unless the run logged no error and
    wrote one sample for each of the `n_docs` documents."""
    tail = run.log[-4000:]
    errors = [line for line in run.log.splitlines() if any(marker in line for marker in ERROR_MARKERS)]
    assert not errors, f"lmms-eval logged an error (exit code {run.returncode}): {errors[0][:500]}\n{tail}"
    files = sorted(run.output.rglob(f"*_samples_{task}.jsonl"))
    assert files, f"lmms-eval wrote no samples for {task} under {run.output} (exit code {run.returncode})\n{tail}"
    assert len(files) == 1, f"several sample files for {task}: {files}"
    samples = [json.loads(line) for line in files[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    by_doc = {sample["doc_id"]: sample for sample in samples}
    assert len(by_doc) == len(samples), f"{files[0]}: duplicate doc_ids"
    assert sorted(by_doc) == list(range(n_docs)), (
        f"{files[0]}: samples for documents {sorted(by_doc)}, expected 0..{n_docs - 1}\n{tail}")
    return by_doc


def read_results(run: LmmsRun, task: str) -> dict:
    files = sorted(run.output.rglob("*_results.json"))
    assert len(files) == 1, f"expected one results file under {run.output}, found {files}\n{run.log[-4000:]}"
    return json.loads(files[0].read_text(encoding="utf-8"))["results"][task]
