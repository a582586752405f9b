"""Batched GeoQA evaluation: generate for every question, write G-LLaVA-format predictions, score them.

Inputs are checked before anything is generated (`check_inputs`: the questions' fields and ids, the
answers and that they cover the questions, the options, the prompt template, the output path). Each
answered batch is appended to the predictions file and flushed, so a run killed part-way resumes from what
is on disk; a sidecar `<predictions>.run.json` records which model, questions and settings the file belongs
to, and a file of another run is never replaced without `overwrite`.

A question that cannot be asked -- its image is unreadable or outside the image folder, its text holds a
control token or `<image>` tags that do not fit, its prompt is too long for the context -- is recorded
with an `error` (`"<reason>: <detail>"`), left unanswered (scored wrong) and counted by reason; the run goes
on, and a resumed run does not stop at it again.
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
from geovlm.eval.extract import extract_choice, extract_number
from geovlm.eval.score import (
    MODES,
    AnswerRecord,
    ScoreReport,
    gold_answers,
    question_id_of,
    read_answers,
    score,
    unknown_id_error,
)

DEFAULT_PROMPT_TEMPLATE = "{text}"
RUN_SUFFIX = ".run.json"
NO_IMAGE = "no image in the record"


@dataclass
class EvalResult:
    report: ScoreReport | None  # None when no answers were given
    answered: int  # questions generated in this call
    resumed: int  # questions whose predictions were already on disk
    problems: Counter = field(default_factory=Counter)  # questions answered without their image, by reason
    # questions recorded with an error (not answered, scored wrong): their ids by reason, and the counts
    unanswered_ids: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def unanswered(self) -> Counter:
        return Counter({reason: len(ids) for reason, ids in self.unanswered_ids.items()})


def _read_located_questions(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    located, seen = [], {}
    for where, item in read_json_objects(path):
        qid = question_id_of(item, where)  # an integer or a string: `[1]` or `null` would fail much later
        if qid in seen:
            raise ValueError(f"{where}: question_id {qid!r} already appears at {seen[qid]}")
        seen[qid] = where
        if not isinstance(item.get("text"), str):
            what = "missing 'text'" if "text" not in item else f"'text' must be the question, got {item['text']!r}"
            raise ValueError(f"{where}: {what}")
        if item.get("image") is not None and not isinstance(item["image"], str):
            raise ValueError(f"{where}: 'image' must be a path under --images, got {item['image']!r}")
        located.append((where, item))
    if not located:
        raise ValueError(f"{path}: no questions")
    return located


def read_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """G-LLaVA's `test_questions.jsonl`: one `{"question_id", "image", "text"}` object a line (or a JSON
    list of them); ids unique integers or strings, `text` a string, `image` a path string or absent/null."""
    return [item for _, item in _read_located_questions(path)]


def check_prompt_template(template: str) -> None:
    try:
        template.format(text="question")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"prompt template {template!r} must use only {{text}} (got {type(err).__name__}: {err})") from None


def _positive(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive whole number, got {value!r}")


def check_inputs(
    questions_path: str | os.PathLike,
    answers_path: str | os.PathLike | None,
    images_dir: str | os.PathLike,
    *,
    batch_size: int = 16,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    max_new_tokens: int = 512,
    limit: int | None = None,
    text_only: bool = False,
    mode: str = "choice",
) -> tuple[list[dict[str, Any]], list[AnswerRecord] | None]:
    """Everything about an evaluation that can be checked without the model, so that a run that would fail
    fails before it is loaded: the options, the questions file, and the answers (readable, usable in `mode`,
    one for every question evaluated). Returns the questions to evaluate and the answers (None if not
    given); raises ValueError (or OSError for a file that cannot be read) with a one-line message."""
    _positive("--batch-size", batch_size)
    _positive("--max-new-tokens", max_new_tokens)
    if limit is not None:
        _positive("--limit", limit)
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_prompt_template(prompt_template)
    located = _read_located_questions(questions_path)[:limit]
    if not any(q.get("image") for _, q in located):
        if not text_only:
            raise ValueError(f"{questions_path}: no question has an image; pass --text-only to evaluate text alone")
    elif not Path(images_dir).is_dir():
        raise ValueError(f"--images {images_dir}: no such folder (the questions' image paths are under it)")
    answers = None
    if answers_path is not None:
        answers = read_answers(answers_path)
        gold = gold_answers(answers, mode)  # usable in this mode, checked now rather than after generating
        for where, q in located:
            if q["question_id"] not in gold:
                raise unknown_id_error(where, q["question_id"], gold)
    return [q for _, q in located], answers


def run_identity(questions_path: str | os.PathLike, settings: dict[str, Any], model: str | None) -> dict[str, Any]:
    """What a predictions file belongs to: the questions file's content, the model and the settings."""
    digest = hashlib.sha256(Path(questions_path).read_bytes()).hexdigest()
    return {"questions_sha256": digest, "model": model, "settings": settings}


def check_writable(path: str | os.PathLike, option: str) -> None:
    """Refuse, before any work, a file that could not be written: a folder, a path under a file, a folder
    we may not write in. Missing folders are fine (they are made when the file is written)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; name a file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {path}: cannot write in {parent}")


def _check_output(out: Path) -> None:
    check_writable(out, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)


def _read_done(out: Path) -> dict[Any, dict[str, Any]]:
    """Predictions already on disk (a trailing partial line, from a kill mid-write, is dropped)."""
    return {
        item.value["question_id"]: item.value
        for item in iter_json_items(out, "jsonl")
        if isinstance(item.value, dict) and "question_id" in item.value
    }


def _what_differs(recorded: dict[str, Any], identity: dict[str, Any]) -> str:
    """The parts of a run's identity that changed, in words: "model", "questions file", "settings (precision)"."""
    parts = [word for key, word in (("model", "model"), ("questions_sha256", "questions file"))
             if recorded.get(key) != identity[key]]
    old, new = recorded.get("settings") or {}, identity["settings"]
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if changed:
        parts.append(f"settings ({', '.join(changed)})")
    return ", ".join(parts) or "identity"


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
            why = f"was written with another {_what_differs(recorded, identity)}" if isinstance(recorded, dict) \
                else "is not a predictions file of geovlm eval"
            raise ValueError(f"{out} already exists and {why}; pass --overwrite to replace it, or choose another --out")
    done = _read_done(out) if out.exists() else {}
    if done or not out.exists():
        # Rewrite without a partial last line, so that appends start on a fresh line.
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()), encoding="utf-8")
    sidecar.write_text(json.dumps(identity, indent=2) + "\n")
    return done


def _load_images(chunk: list[dict[str, Any]], images_dir: str | os.PathLike, text_only: bool,
                 errors: dict[int, str], problems: Counter) -> list[Any]:
    """Each question's image (None when it has none, or when it cannot be used: then `errors` says why)."""
    from geovlm.data.images import ImageLoadError, resolve_image_path
    from geovlm.serve.chat import prepare_image

    images: list[Any] = []
    for i, q in enumerate(chunk):
        images.append(None)
        if not q.get("image"):
            if not text_only:
                problems[NO_IMAGE] += 1
            continue
        try:  # training's rule: an image path never leaves the image folder
            path = resolve_image_path(images_dir, q["image"])
        except ValueError as err:
            errors[i] = f"image path refused: {err}"
            continue
        try:  # one unreadable image costs its question, not the whole run
            images[i] = prepare_image(path)
        except ImageLoadError as err:
            errors[i] = f"image {err.reason}: {q['image']}"
    return images


def _answer_chunk(model: Any, processor: Any, chunk: list[dict[str, Any]], images_dir: str | os.PathLike,
                  prompt_template: str, text_only: bool, max_new_tokens: int, mode: str, problems: Counter,
                  unanswered: dict[str, list[Any]]) -> list[str]:
    """One batch of questions answered, as prediction lines. Questions answered without their image are
    counted in `problems`; those that cannot be asked are recorded with their error and listed in
    `unanswered`, by reason, and the others are answered all the same."""
    from geovlm.serve.chat import BadQuestion, ContextTooLong, answer, conversation

    prompts = [prompt_template.format(text=q["text"]) for q in chunk]
    errors: dict[int, str] = {}
    images = _load_images(chunk, images_dir, text_only, errors, problems)
    for i, prompt in enumerate(prompts):
        if i not in errors:
            try:
                conversation(processor, prompt, with_image=images[i] is not None)
            except BadQuestion as err:
                errors[i] = f"bad question: {err}"
    replies: dict[int, str] = {}
    while True:  # a question too long for the context is set aside; the rest of the batch is still answered
        keep = [i for i in range(len(chunk)) if i not in errors]
        try:
            replies = dict(zip(keep, answer(model, processor, [images[i] for i in keep], [prompts[i] for i in keep],
                                            batch_size=len(chunk), max_new_tokens=max_new_tokens), strict=True))
            break
        except ContextTooLong as err:
            for k, row in enumerate(err.rows):
                errors[keep[row]] = f"question too long: {err.describe(k)}"
    extract = extract_choice if mode == "choice" else extract_number
    lines = []
    for i, (q, prompt) in enumerate(zip(chunk, prompts, strict=True)):
        reply = replies.get(i, "")
        record = {"question_id": q["question_id"], "prompt": prompt, "text": reply, "extracted": extract(reply)}
        if i in errors:
            record["error"] = errors[i]  # counted as unanswered (wrong) by the scorer
            unanswered.setdefault(_reason(errors[i]), []).append(q["question_id"])
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return lines


def _reason(error: str) -> str:
    return error.split(":")[0]


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
    mode: str = "choice",
) -> EvalResult:
    """Greedy answers for every question, appended one JSON line each (`question_id`, `prompt`, `text` =
    the whole generation, `extracted` = our letter, or our number with `mode="number"`), then scored in
    `mode` when answers are given (as `geovlm score --mode`).

    A predictions file left by an interrupted run of the same evaluation (`model_id`, questions,
    settings) is continued; any other existing file is an error unless `overwrite`. A question whose
    record has no image is answered without it; one that cannot be asked (see the module's docstring) is
    recorded unanswered; both are counted by reason. A questions file where no record has an image is an
    error unless `text_only`."""
    from tqdm.auto import tqdm

    questions, answers = check_inputs(questions_path, answers_path, images_dir, batch_size=batch_size,
                                      prompt_template=prompt_template, max_new_tokens=max_new_tokens, limit=limit,
                                      text_only=text_only, mode=mode)
    context = model.config.text_config.max_position_embeddings
    if max_new_tokens >= context:  # else every question would be recorded too long, one by one
        raise ValueError(f"--max-new-tokens {max_new_tokens} leaves no room for a question in the model's "
                         f"context of {context} tokens")
    out = Path(predictions_path)
    settings = {"prompt_template": prompt_template, "max_new_tokens": max_new_tokens, "limit": limit,
                "text_only": text_only, "images": os.fspath(Path(images_dir).resolve())}
    if mode != "choice":  # only then, so that files of earlier (letter) runs still resume
        settings["mode"] = mode
    from geovlm.precision import precision_of

    precision = precision_of(model)
    if precision != "fp32":  # likewise: bf16 or int8 answers are not fp32's, and never continue its file
        settings["precision"] = precision
    done = _prepare_output(out, run_identity(questions_path, settings, model_id), overwrite)
    todo = [q for q in questions if q["question_id"] not in done]
    problems: Counter = Counter()
    unanswered: dict[str, list[Any]] = {}
    for qid, record in done.items():
        if record.get("error"):
            unanswered.setdefault(_reason(record["error"]), []).append(qid)
    with open(out, "a", encoding="utf-8") as handle, tqdm(
        total=len(questions), initial=len(questions) - len(todo), desc="eval", unit="q", disable=not progress
    ) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            handle.write("".join(_answer_chunk(model, processor, chunk, images_dir, prompt_template, text_only,
                                               max_new_tokens, mode, problems, unanswered)))
            handle.flush()  # a kill after this keeps the batch
            os.fsync(handle.fileno())
            bar.update(len(chunk))
    report = None
    if answers is not None:
        wanted = {q["question_id"] for q in questions}
        report = score([a for a in answers if a.question_id in wanted], out, mode=mode)  # type: ignore[arg-type]
    return EvalResult(report, answered=len(todo), resumed=len(questions) - len(todo), problems=problems,
                      unanswered_ids=unanswered)
