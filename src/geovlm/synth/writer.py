"""Write a synthetic dataset: images, LLaVA-format training and caption files, a GeoQA-format test split.

Layout of OUT, a drop-in Geo170K folder:
    images/<id>.png          one diagram per problem (train and test)
    qa_tuning.json           training questions (LLaVA conversations, like Geo170K's qa_tuning.json)
    alignment.json           captions of the training images (like Geo170K's alignment.json)
    test_questions.jsonl     {"question_id", "image", "text"} per line (G-LLaVA's GeoQA format)
    test_answers.jsonl       {"question_id", "text": letter, ...} per line
    manifest.json            counts, options and seed; written last, so its presence means "complete"
    preview.png              (with --preview) a contact sheet

Every record's "image" is relative to OUT/images, as Geo170K's are relative to Geo170K/images: train
with `images: OUT/images` (configs/sft.yaml's layout) and evaluate with `geovlm eval --images OUT/images`.

The files are byte-identical for the same arguments whatever the number of workers: problem i
depends only on (seed, i), workers return results in task order, and JSON keys keep a fixed order.

Nothing a user made is replaced silently: `write_dataset` refuses (:class:`OutputExists`) when OUT
already holds a synthetic set or any file it would write, unless ``overwrite=True``, which removes the
old set's files (only what this module writes: the JSON/JSONL files, the manifest, the preview and
the ``synth-*.png`` diagrams in images/) so that nothing old mixes with the new set. Everything is
generated in a hidden staging folder inside OUT and moved into place only once complete, so an
interrupted run leaves OUT as it was.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

from .generate import DEFAULT_DIFFICULTY, Choice, family_weights, generate_problem, weights
from .problem import DIFFICULTIES, STYLES

FORMAT_VERSION = 2  # 2: record image paths are relative to OUT/images (1: to OUT)
IMAGES = "images"  # the image folder under OUT; every record's "image" is relative to it
FILES = {
    "train": "qa_tuning.json",
    "alignment": "alignment.json",
    "test_questions": "test_questions.jsonl",
    "test_answers": "test_answers.jsonl",
    "manifest": "manifest.json",
    "images": f"{IMAGES}/",
}
PREVIEW = "preview.png"  # the contact sheet's default place, OUT/preview.png
SYNTH_IMAGE = re.compile(r"synth-\d+-\d+\.png")  # the diagrams this module names (Problem.image_path)


class OutputExists(FileExistsError):
    """OUT already holds a synthetic set or a file `write_dataset` would write (and overwrite is off)."""


def existing_outputs(out: str | os.PathLike, preview: str | os.PathLike | None = None) -> list[Path]:
    """What a synthetic set written to `out` would replace: its JSON/JSONL files and manifest, the
    synthetic diagrams in out/images (a previous set's, whatever its seed), out/preview.png and the
    `preview` path. Nothing else under `out` counts (a real Geo170K's images/geo3k/ stays untouched)."""
    root = Path(out)
    found = [root / name for key, name in FILES.items() if key != "images" and (root / name).exists()]
    images = root / IMAGES
    if images.is_dir():
        found += sorted(p for p in images.iterdir() if SYNTH_IMAGE.fullmatch(p.name) and not p.is_dir())
    elif images.exists() or images.is_symlink():
        found.append(images)  # a file where the image folder must go
    for path in {root / PREVIEW, *([Path(preview)] if preview is not None else [])}:
        if path.exists() and path not in found:
            found.append(path)
    return found


def _describe(paths: Sequence[Path], root: Path) -> str:
    def name(p: Path) -> str:
        with contextlib.suppress(ValueError):
            return str(p.relative_to(root))
        return str(p)

    images = {p for p in paths if p.parent == root / IMAGES and SYNTH_IMAGE.fullmatch(p.name)}
    others = [name(p) for p in paths if p not in images]
    parts = others[:4] + ([f"... ({len(others) - 4} more)"] if len(others) > 4 else [])
    if images:
        parts.append(f"{len(images)} synthetic image(s) in {IMAGES}/")
    return ", ".join(parts)


def _signature(task: tuple) -> tuple:
    seed, index, family, difficulty, style = task
    return generate_problem(seed, index, family, difficulty, style).signature()


def _make(task: tuple) -> tuple[dict, dict | None]:
    """Generate, render and save one problem; return its records (qa or test, and caption)."""
    seed, index, family, difficulty, style, size, line_scale, out, split, free_answer = task
    p = generate_problem(seed, index, family, difficulty, style)
    if free_answer:
        p = p.free_form()
    p.render(size, line_scale).save(Path(out) / IMAGES / p.image_path(), format="PNG", compress_level=6)
    if split == "train":
        return p.qa_record(), p.alignment_record()
    question, answer = p.test_records(0)  # question ids are given in split order by the caller
    return {"question": question, "answer": {**answer, "id": p.id}}, None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _map(fn: Callable, tasks: Sequence[tuple], pool: Pool | None, desc: str, progress: bool) -> Iterator:
    """fn over tasks, results in task order; in the pool when there is one; with a tqdm bar."""
    from tqdm import tqdm

    bar = dict(total=len(tasks), desc=desc, disable=not progress, unit="problem", file=sys.stderr)
    if pool is None or len(tasks) < 2:
        yield from tqdm(map(fn, tasks), **bar)
        return
    yield from tqdm(pool.imap(fn, tasks, chunksize=8), **bar)


def plan_split(
    seed: int,
    n: int,
    test_fraction: float,
    family: Choice = None,
    difficulty: Choice = None,
    style: Choice = None,
    pool: Pool | None = None,
    progress: bool = False,
) -> tuple[list[int], list[int], int]:
    """Indices of the training and test problems, and how many test candidates were skipped.

    Training problems are indices 0..n_train-1. Test problems are drawn from the indices after
    them, skipping any whose question (see `Problem.signature`) already appears in either split.
    """
    n_test = round(n * test_fraction)
    n_train = n - n_test
    train = list(range(n_train))

    def signatures(indices: list[int], show: bool) -> list[tuple]:
        tasks = [(seed, i, family, difficulty, style) for i in indices]
        return list(_map(_signature, tasks, pool, "plan", show))

    seen = set(signatures(train, progress))
    test: list[int] = []
    skipped, index = 0, n_train
    limit = n_train + 20 * n_test + 1000  # give up on finding more distinct questions after this
    while len(test) < n_test and index < limit:
        batch = list(range(index, min(index + max(64, 2 * (n_test - len(test))), limit)))
        for i, sig in zip(batch, signatures(batch, False), strict=True):
            if len(test) == n_test:
                break
            if sig in seen:
                skipped += 1
                continue
            seen.add(sig)
            test.append(i)
        index = batch[-1] + 1
    if len(test) < n_test:
        print(
            f"geovlm synth: only {len(test)} distinct test problems found ({n_test} asked)", file=sys.stderr
        )
    return train, test, skipped


def _counts(records: Iterable[Mapping[str, Any]], letter_key: str) -> dict:
    rows = list(records)
    return {
        "total": len(rows),
        "family": dict(sorted(Counter(r["family"] for r in rows).items())),
        "difficulty": dict(sorted(Counter(r["difficulty"] for r in rows).items())),
        "style": dict(sorted(Counter(r["style"] for r in rows).items())),
        "answer": dict(sorted(Counter(r[letter_key] for r in rows).items())),
    }


def _dump_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _dump_jsonl(path: Path, rows: Iterable[Any]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_dataset(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    *,
    family: Choice = None,
    difficulty: Choice = None,
    style: Choice = None,
    size: int = 224,
    line_scale: float = 1.0,
    test_fraction: float = 0.1,
    workers: int | None = None,
    preview: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    free_answer: bool = False,
) -> dict:
    """Generate n problems (train + test) under `out` and return the manifest.

    Raises :class:`OutputExists` if `out` already holds a synthetic set or a file this would write
    (see `existing_outputs`), unless `overwrite`, which removes those first (once the new set is
    complete). OSError (e.g. `out` is a file) propagates."""
    if n < 0 or size < 64 or not 0 <= test_fraction < 1:
        raise ValueError("need n >= 0, size >= 64 and 0 <= test_fraction < 1")
    workers = max(1, workers or available_cpus())
    root = Path(out)
    old = existing_outputs(root, preview)
    if old and not overwrite:
        raise OutputExists(
            f"{root} already holds a synthetic set or files it would write ({_describe(old, root)}); "
            "pass --overwrite to replace them, or choose another folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".synth-staging-", dir=root))
    try:
        manifest = _write_staged(
            stage,
            n,
            seed,
            family,
            difficulty,
            style,
            size,
            line_scale,
            test_fraction,
            workers,
            preview is not None,
            progress,
            free_answer,
        )
        _commit(stage, root, preview, old if overwrite else [])
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _commit(stage: Path, root: Path, preview: str | os.PathLike | None, old: Sequence[Path]) -> None:
    """Move a complete staged set into `root`: first remove the old set's files, then the images, the
    record files, and the manifest last (a folder with a manifest holds a complete set)."""
    manifest = root / FILES["manifest"]
    if manifest in old:
        manifest.unlink()  # from here until the new manifest lands, the folder reads as incomplete
    for path in old:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    images = root / IMAGES
    if not images.exists():
        os.replace(stage / IMAGES, images)
    else:
        for path in sorted((stage / IMAGES).iterdir()):
            shutil.move(path, images / path.name)  # a rename, or a copy where images/ links elsewhere
    for key in ("train", "alignment", "test_questions", "test_answers"):
        os.replace(stage / FILES[key], root / FILES[key])
    if preview is not None:
        target = Path(preview)
        with contextlib.suppress(OSError):  # same file system: an atomic rename
            os.replace(stage / PREVIEW, target)
        if (stage / PREVIEW).exists():  # elsewhere: copy next to the target, then rename
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(stage / PREVIEW, tmp)
            os.replace(tmp, target)
    os.replace(stage / FILES["manifest"], manifest)


def _write_staged(
    root: Path,
    n: int,
    seed: int,
    family: Choice,
    difficulty: Choice,
    style: Choice,
    size: int,
    line_scale: float,
    test_fraction: float,
    workers: int,
    preview: bool,
    progress: bool,
    free_answer: bool = False,
) -> dict:
    """Generate the whole set under `root` (the staging folder) and return its manifest."""
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    qa, alignment, questions, answers = [], [], [], []
    # One pool for both passes, started before the first progress bar: tqdm runs a monitor
    # thread, and forking a process that has threads is best avoided.
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(multiprocessing.get_context().Pool(workers)) if workers > 1 else None
        train_idx, test_idx, skipped = plan_split(
            seed, n, test_fraction, family, difficulty, style, pool, progress
        )
        common = (family, difficulty, style, size, line_scale, str(root))
        tasks = [(seed, i, *common, "train", free_answer) for i in train_idx]
        tasks += [(seed, i, *common, "test", free_answer) for i in test_idx]
        for record, caption in _map(_make, tasks, pool, "synth", progress):
            if caption is not None:
                qa.append(record)
                alignment.append(caption)
            else:
                qid = len(questions)  # test questions are numbered in order, like GeoQA's
                questions.append({**record["question"], "question_id": qid})
                answers.append({**record["answer"], "question_id": qid})
    _dump_json(root / FILES["train"], qa)
    _dump_json(root / FILES["alignment"], alignment)
    _dump_jsonl(root / FILES["test_questions"], questions)
    _dump_jsonl(root / FILES["test_answers"], answers)
    manifest = {
        "generator": "geovlm.synth",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "line_scale": line_scale,
        "test_fraction": test_fraction,
        "free_answer": free_answer,
        "options": {
            "families": sorted(family_weights(family)),
            "difficulty": weights(difficulty, DIFFICULTIES, DEFAULT_DIFFICULTY),
            "style": weights(style, STYLES),
        },
        "files": FILES,
        "image_root": IMAGES,  # record image paths are relative to OUT/images, as in Geo170K
        "counts": {
            "train": _counts(qa, "answer"),
            "alignment": len(alignment),
            "test": _counts(answers, "text"),
            "test_candidates_skipped_as_duplicates": skipped,
        },
    }
    _dump_json(root / FILES["manifest"], manifest)
    if preview:
        from .preview import contact_sheet, pick_for_preview

        picked = pick_for_preview(
            [generate_problem(seed, i, family, difficulty, style) for i in train_idx[:400]]
        )
        contact_sheet(picked, size=min(size, 256)).save(root / PREVIEW, format="PNG")
    return manifest
