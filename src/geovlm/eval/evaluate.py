"""Batched GeoQA evaluation: generate for every question, write G-LLaVA-format predictions, score them.

Inputs are checked before anything is generated (duplicate ids, the prompt template, the output path,
questions without images). Each answered batch is appended to the predictions file and flushed, so a
run killed part-way resumes from what is on disk; a sidecar `<predictions>.run.json` records which
model, questions and settings the file belongs to, and a file of another run is never replaced
without `overwrite`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geovlm.data.jsonfile import iter_json_items, read_json_objects
from geovlm.eval.extract import extract_choice
from geovlm.eval.score import ScoreReport, score

DEFAULT_PROMPT_TEMPLATE = "{text}"
RUN_SUFFIX = ".run.json"


@dataclass
class EvalResult:
    report: ScoreReport | None  # None when no answers were given
    answered: int  # questions generated in this call
    resumed: int  # questions whose predictions were already on disk
    problems: Counter = field(default_factory=Counter)  # questions answered without their image, by reason


def read_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """G-LLaVA's `test_questions.jsonl`: one `{"question_id", "image", "text"}` object a line (or a JSON
    list of them); ids unique."""
    questions, seen = [], {}
    for where, item in read_json_objects(path):
        missing = [key for key in ("question_id", "text") if key not in item]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        qid = item["question_id"]
        if qid in seen:
            raise ValueError(f"{where}: question_id {qid!r} already appears at {seen[qid]}")
        seen[qid] = where
        questions.append(item)
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def check_prompt_template(template: str) -> None:
    try:
        template.format(text="question")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"prompt template {template!r} must use only {{text}} (got {type(err).__name__}: {err})") from None


def run_identity(questions_path: str | os.PathLike, settings: dict[str, Any], model: str | None) -> dict[str, Any]:
    """What a predictions file belongs to: the questions file's content, the model and the settings."""
    digest = hashlib.sha256(Path(questions_path).read_bytes()).hexdigest()
    return {"questions_sha256": digest, "model": model, "settings": settings}


def _check_output(out: Path) -> None:
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name a file")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {out}: cannot write in {parent}")


def _read_done(out: Path) -> dict[Any, dict[str, Any]]:
    """Predictions already on disk (a trailing partial line, from a kill mid-write, is dropped)."""
    return {
        item.value["question_id"]: item.value
        for item in iter_json_items(out, "jsonl")
        if isinstance(item.value, dict) and "question_id" in item.value
    }


def _prepare_output(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[Any, dict[str, Any]]:
    """Predictions to keep from an earlier, interrupted run of the same evaluation; refuses to replace
    anything else unless `overwrite`."""
    _check_output(out)
    sidecar = out.with_name(out.name + RUN_SUFFIX)
    if not out.exists():
        sidecar.unlink(missing_ok=True)
    elif overwrite:
        out.unlink()
        sidecar.unlink(missing_ok=True)
    else:
        try:
            recorded = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != identity:
            why = "was written by another model, questions file or settings" if recorded else "is not a predictions file of geovlm eval"
            raise ValueError(f"{out} already exists and {why}; pass --overwrite to replace it, or choose another --out")
    done = _read_done(out) if out.exists() else {}
    if done or not out.exists():
        # Rewrite without a partial last line, so that appends start on a fresh line.
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()), encoding="utf-8")
    sidecar.write_text(json.dumps(identity, indent=2) + "\n")
    return done


def _answer_chunk(model: Any, processor: Any, chunk: list[dict[str, Any]], images_dir: str | os.PathLike,
                  prompt_template: str, text_only: bool, max_new_tokens: int, problems: Counter) -> list[str]:
    """One batch of questions answered, as prediction lines; questions answered without their image are
    counted in `problems` by reason."""
    from geovlm.data.images import ImageLoadError
    from geovlm.serve.chat import answer, prepare_image

    prompts = [prompt_template.format(text=q["text"]) for q in chunk]
    images, errors = [], {}
    for i, q in enumerate(chunk):
        if not q.get("image"):
            images.append(None)
            if not text_only:
                problems["no image in the record"] += 1
            continue
        try:  # one unreadable image costs its question, not the whole run
            images.append(prepare_image(Path(images_dir) / q["image"]))
        except ImageLoadError as err:
            images.append(None)
            errors[i] = f"image {err.reason}: {q['image']}"
            problems[f"image {err.reason}"] += 1
    keep = [i for i in range(len(chunk)) if i not in errors]
    replies = dict(zip(keep, answer(model, processor, [images[i] for i in keep], [prompts[i] for i in keep],
                                    batch_size=len(chunk), max_new_tokens=max_new_tokens), strict=True))
    lines = []
    for i, (q, prompt) in enumerate(zip(chunk, prompts, strict=True)):
        reply = replies.get(i, "")
        record = {"question_id": q["question_id"], "prompt": prompt, "text": reply, "extracted": extract_choice(reply)}
        if i in errors:
            record["error"] = errors[i]  # counted as unanswered (wrong) by the scorer
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return lines


def evaluate(
    model: Any,
    processor: Any,
    questions_path: str | os.PathLike,
    answers_path: str | os.PathLike | None,
    images_dir: str | os.PathLike,
    predictions_path: str | os.PathLike,
    *,
    batch_size: int = 16,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    max_new_tokens: int = 512,
    progress: bool = True,
    limit: int | None = None,
    text_only: bool = False,
    overwrite: bool = False,
    model_id: str | None = None,
) -> EvalResult:
    """Greedy answers for every question, appended one JSON line each (`question_id`, `prompt`, `text` =
    the whole generation, `extracted` = our letter), then scored when answers are given.

    A predictions file left by an interrupted run of the same evaluation (`model_id`, questions,
    settings) is continued; any other existing file is an error unless `overwrite`. A question whose
    record has no image, or whose image cannot be read, is answered without it (or, unreadable, not at
    all) and counted by reason; a questions file where no record has an image is an error unless
    `text_only`."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    check_prompt_template(prompt_template)
    questions = read_questions(questions_path)[:limit]
    if not text_only and not any(q.get("image") for q in questions):
        raise ValueError(f"{questions_path}: no question has an image; pass --text-only to evaluate text alone")
    out = Path(predictions_path)
    settings = {"prompt_template": prompt_template, "max_new_tokens": max_new_tokens, "limit": limit,
                "text_only": text_only, "images": os.fspath(Path(images_dir).resolve())}
    done = _prepare_output(out, run_identity(questions_path, settings, model_id), overwrite)
    todo = [q for q in questions if q["question_id"] not in done]
    problems: Counter = Counter(record["error"].split(":")[0] for record in done.values() if record.get("error"))
    with open(out, "a", encoding="utf-8") as handle, tqdm(
        total=len(questions), initial=len(questions) - len(todo), desc="eval", unit="q", disable=not progress
    ) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            handle.write("".join(_answer_chunk(model, processor, chunk, images_dir, prompt_template, text_only,
                                               max_new_tokens, problems)))
            handle.flush()  # a kill after this keeps the batch
            os.fsync(handle.fileno())
            bar.update(len(chunk))
    report = None
    if answers_path is not None:
        from geovlm.eval.score import read_answers

        wanted = {q["question_id"] for q in questions}
        report = score([a for a in read_answers(answers_path) if a.question_id in wanted], out)
    return EvalResult(report, answered=len(todo), resumed=len(questions) - len(todo), problems=problems)
