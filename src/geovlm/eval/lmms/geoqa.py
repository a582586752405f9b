"""GeoQA-format test sets as lmms-eval tasks: `geovlm_geoqa` (GeoQA as G-LLaVA publishes it) and
`geovlm_synth` (the test split of any `geovlm synth` folder), scored exactly as `geovlm score`.

A document is one question: `question_id` (as a string), `text` (the question, which is the whole
prompt, as `geovlm eval`'s default `{text}` template makes it), `image` (its absolute path, "" when the
record has none), `answer` (the gold letter) and the answer's `family`/`style`/`difficulty` when given.
The files are read with the same readers as `geovlm eval` and `geovlm score`, so a file they refuse is
refused here with the same message.

Where the files are: the task's `dataset_kwargs` (`dir`, or `questions`, `answers`, `images`), else
environment variables named by its `env_prefix`:

    GEOVLM_SYNTH_DIR=OUT                      # OUT/test_questions.jsonl, OUT/test_answers.jsonl, OUT/images
    GEOVLM_GEOQA_QUESTIONS=.../test_questions.jsonl GEOVLM_GEOQA_ANSWERS=.../test_answers.jsonl \
    GEOVLM_GEOQA_IMAGES=DIR                   # DIR: the folder the `image` paths are relative to

(`<PREFIX>_DIR` gives defaults for the three; `<PREFIX>_QUESTIONS`/`_ANSWERS`/`_IMAGES` override them.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geovlm.eval.extract import CHOICES, extract_choice

FILE_NAMES = {"questions": "test_questions.jsonl", "answers": "test_answers.jsonl", "images": "images"}
GROUP_FIELDS = ("family", "style", "difficulty")


@dataclass(frozen=True)
class GeoQAFiles:
    questions: Path
    answers: Path
    images: Path


def resolve_files(task: str, options: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> GeoQAFiles:
    """Where task `task` reads its questions, answers and images: `options` (the task's dataset_kwargs)
    first, then the environment variables of its `env_prefix`; a clear error naming what to set when
    something is not given."""
    options = dict(options or {})
    environ = os.environ if environ is None else environ
    prefix = options.get("env_prefix")
    folder = options.get("dir") or (environ.get(f"{prefix}_DIR") if prefix else None)
    paths = {}
    for key, name in FILE_NAMES.items():
        value = options.get(key) or (environ.get(f"{prefix}_{key.upper()}") if prefix else None)
        if not value and folder:
            value = os.path.join(folder, name)
        if not value:
            ask = f"set {prefix}_DIR (a folder holding {', '.join(FILE_NAMES.values())}) or {prefix}_{key.upper()}" \
                if prefix else f"give dataset_kwargs.{key} or dataset_kwargs.dir"
            raise ValueError(f"task {task}: where is its {key}? {ask}")
        paths[key] = Path(value).expanduser()
    for key in ("questions", "answers"):
        if not paths[key].is_file():
            raise FileNotFoundError(f"task {task}: no {key} file at {paths[key]}")
    if not paths["images"].is_dir():
        raise FileNotFoundError(f"task {task}: no image folder at {paths['images']}")
    return GeoQAFiles(**paths)


def load_docs(files: GeoQAFiles) -> list[dict[str, Any]]:
    """One document per question, in file order, each with its gold answer; every question must have
    one (lmms-eval scores documents, so a question without an answer could not be counted)."""
    from geovlm.data.images import resolve_image_path
    from geovlm.eval.evaluate import read_questions
    from geovlm.eval.score import read_answers

    questions = read_questions(files.questions)
    answers = {a.question_id: a for a in read_answers(files.answers)}
    docs, seen = [], set()
    for q in questions:
        qid = q["question_id"]
        gold = answers.get(qid)
        if gold is None:
            raise ValueError(f"{files.answers}: no answer for question_id {qid!r} of {files.questions}")
        if gold.text not in CHOICES:
            raise ValueError(f"{gold.where}: 'text' must be the gold letter A-D, got {gold.text!r}")
        if str(qid) in seen:
            raise ValueError(f"{files.questions}: question_id {qid!r} appears both as a number and as a string")
        seen.add(str(qid))
        docs.append({
            "question_id": str(qid),
            "text": q["text"],
            # training's and `geovlm eval`'s rule: no absolute path, nothing outside the image folder
            "image": os.fspath(resolve_image_path(files.images, q["image"])) if q.get("image") else "",
            "answer": gold.text,
            **{name: getattr(gold, name) or "" for name in GROUP_FIELDS},
        })
    return docs


# ------------------------------------------------------------------------ lmms-eval task functions
def doc_to_visual(doc: Mapping[str, Any]) -> list[Any]:
    """The question's diagram, loaded as `geovlm eval` loads it (RGB on white, square); none when the
    record has no image. An unreadable image is an error naming the file."""
    if not doc["image"]:
        return []
    from geovlm.serve.chat import prepare_image

    return [prepare_image(doc["image"])]


def doc_to_text(doc: Mapping[str, Any], lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> str:
    """The user turn: the question itself (`geovlm eval`'s default prompt template, `{text}`)."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['text']}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc: Mapping[str, Any]) -> str:
    return doc["answer"]


def process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, Any]:
    """Right or wrong as `geovlm score` decides (`is_correct`, choice mode: G-LLaVA's letter extraction;
    unparsed counts as wrong), with the extracted letter for the `unparsed` count and the samples log."""
    from geovlm.eval.score import is_correct

    reply = results[0] if results else ""
    record = {"question_id": doc["question_id"], "extracted": extract_choice(reply), "answer": doc["answer"],
              "correct": is_correct(reply, doc["answer"], "choice"), **{name: doc.get(name, "") for name in GROUP_FIELDS}}
    return {"accuracy": record, "unparsed": record}


def aggregate_accuracy(records: Sequence[Mapping[str, Any]]) -> float:
    """Percent of the questions answered correctly, as `geovlm score`'s accuracy."""
    return 100.0 * sum(bool(r["correct"]) for r in records) / len(records) if records else 0.0


def aggregate_unparsed(records: Sequence[Mapping[str, Any]]) -> int:
    """How many replies had no letter G-LLaVA's rules could extract (counted wrong)."""
    return sum(r["extracted"] is None for r in records)
