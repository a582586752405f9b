"""Batched GeoQA evaluation: generate for every question, write G-LLaVA-format predictions, score them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from geovlm.eval.extract import extract_choice
from geovlm.eval.score import ScoreReport, score

DEFAULT_PROMPT_TEMPLATE = "{text}"


def read_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """G-LLaVA's `test_questions.jsonl`: one `{"question_id", "image", "text"}` object a line."""
    questions = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON: {err.msg}") from err
            missing = [key for key in ("question_id", "text") if key not in item]
            if missing:
                raise ValueError(f"{path}:{line_no}: missing {', '.join(missing)}")
            questions.append(item)
    return questions


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
) -> ScoreReport | None:
    """Greedy answers for every question, written as one JSON line each (`question_id`, `prompt`,
    `text` = the whole generation, `extracted` = our letter), then scored when answers are given."""
    from tqdm.auto import tqdm

    from geovlm.data.images import ImageLoadError
    from geovlm.serve.chat import answer, prepare_image

    questions = read_questions(questions_path)[:limit]
    out = Path(predictions_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle, tqdm(
        total=len(questions), desc="eval", unit="q", disable=not progress
    ) as bar:
        for start in range(0, len(questions), batch_size):
            chunk = questions[start : start + batch_size]
            prompts = [prompt_template.format(text=q["text"]) for q in chunk]
            images, errors = [], {}
            for i, q in enumerate(chunk):
                try:  # one unreadable image costs its question, not the whole run
                    images.append(prepare_image(Path(images_dir) / q["image"]) if q.get("image") else None)
                except ImageLoadError as err:
                    images.append(None)
                    errors[i] = f"image {err.reason}: {q['image']}"
            keep = [i for i in range(len(chunk)) if i not in errors]
            replies = dict(zip(keep, answer(model, processor, [images[i] for i in keep], [prompts[i] for i in keep],
                                            batch_size=batch_size, max_new_tokens=max_new_tokens), strict=True))
            for i, (q, prompt) in enumerate(zip(chunk, prompts, strict=True)):
                reply = replies.get(i, "")
                record = {"question_id": q["question_id"], "prompt": prompt, "text": reply,
                          "extracted": extract_choice(reply)}
                if i in errors:
                    record["error"] = errors[i]  # counted as unanswered (wrong) by the scorer
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
    os.replace(tmp, out)
    if answers_path is None:
        return None
    if limit is not None:
        from geovlm.eval.score import read_answers

        wanted = {q["question_id"] for q in questions}
        return score([a for a in read_answers(answers_path) if a.question_id in wanted], out)
    return score(answers_path, out)
