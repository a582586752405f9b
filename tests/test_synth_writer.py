"""`geovlm synth` end to end: files, formats, determinism, images, CLI, speed."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geovlm.synth import generate_problem, write_dataset
from geovlm.synth import writer as synth_writer
from geovlm.synth.cli import register, run
from geovlm.synth.writer import OutputExists

QA_KEYS = ["id", "image", "conversations", "family", "style", "difficulty", "answer", "answer_type", "value"]


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    write_dataset(out, 40, seed=3, test_fraction=0.25, workers=1, progress=False)
    return out


def test_same_seed_gives_byte_identical_files(dataset: Path, tmp_path: Path) -> None:
    # A second run, in a pool of two processes, must not differ by a single byte.
    write_dataset(tmp_path / "b", 40, seed=3, test_fraction=0.25, workers=2, progress=False)
    a, b = all_bytes(dataset), all_bytes(tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith(".png")]) == 40
    for name in a:
        assert a[name] == b[name], name


def test_another_seed_gives_other_problems(dataset: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "c", 10, seed=4, test_fraction=0.0, workers=1, progress=False)
    mine = json.loads((dataset / "qa_tuning.json").read_text())
    other = json.loads((tmp_path / "c" / "qa_tuning.json").read_text())
    assert [r["conversations"] for r in mine[:10]] != [r["conversations"] for r in other]


def test_training_records_follow_the_llava_format(dataset: Path) -> None:
    records = json.loads((dataset / "qa_tuning.json").read_text(encoding="utf-8"))
    assert isinstance(records, list) and len(records) == 30
    for r in records:
        assert list(r) == QA_KEYS
        # relative to OUT/images, as Geo170K's records are to Geo170K/images (configs/sft.yaml's layout)
        assert (dataset / "images" / r["image"]).is_file() and "/" not in r["image"]
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<image>\n") and "\nChoices:\nA:" in human["value"]
        assert gpt["value"].endswith(f"Answer:{r['answer']}")
        assert re.search(r"Answer:([A-D])", gpt["value"]).group(1) == r["answer"]
        assert r["style"] in ("text", "diagram") and r["difficulty"] in (
            "perception",
            "one_step",
            "multi_step",
        )


def test_alignment_records_caption_the_training_images(dataset: Path) -> None:
    qa = json.loads((dataset / "qa_tuning.json").read_text(encoding="utf-8"))
    captions = json.loads((dataset / "alignment.json").read_text(encoding="utf-8"))
    assert [c["image"] for c in captions] == [r["image"] for r in qa]
    for c in captions:
        human, gpt = c["conversations"]
        assert human["value"].startswith("<image>\n") and gpt["value"].startswith("The figure shows")


def test_test_split_follows_geoqa_and_is_disjoint(dataset: Path) -> None:
    questions = [
        json.loads(x) for x in (dataset / "test_questions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    answers = [
        json.loads(x) for x in (dataset / "test_answers.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(questions) == len(answers) == 10
    for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
        assert list(q) == ["question_id", "image", "text"] and q["question_id"] == i == a["question_id"]
        assert a["text"] in "ABCD" and len(a["text"]) == 1
        assert {"family", "style", "difficulty", "value"} <= set(a)
        assert q["text"].startswith(("As shown", "In the figure", "Which", "What", "How", "At which"))
        assert (dataset / "images" / q["image"]).is_file()  # `geovlm eval --images OUT/images`
    train = json.loads((dataset / "qa_tuning.json").read_text(encoding="utf-8"))
    assert not {q["image"] for q in questions} & {r["image"] for r in train}

    def signature(record_id: str) -> tuple:
        seed, index = map(int, record_id.split("-")[1:3])
        return generate_problem(seed, index).signature()

    train_sigs = {signature(r["id"]) for r in train}
    test_sigs = [signature(a["id"]) for a in answers]
    assert not train_sigs & set(test_sigs) and len(set(test_sigs)) == len(test_sigs)


def test_images_open_and_are_not_blank(dataset: Path) -> None:
    pngs = sorted((dataset / "images").glob("*.png"))
    assert len(pngs) == 40
    for path in pngs:
        with Image.open(path) as im:
            im.load()
            assert im.size == (224, 224) and im.mode == "RGB"
            gray = np.asarray(im.convert("L"))
        assert gray.min() < 80, path  # dark ink
        assert (gray < 128).mean() > 0.003, path  # more than a speck
        assert gray.max() == 255 and np.median(gray) == 255, path  # on white


def test_manifest_counts_what_was_written(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["n"] == 40
    assert manifest["counts"]["train"]["total"] == 30 and manifest["counts"]["test"]["total"] == 10
    assert sum(manifest["counts"]["train"]["family"].values()) == 30
    assert sum(manifest["counts"]["test"]["answer"].values()) == 10


def test_render_sizes() -> None:
    p = generate_problem(0, 1)
    assert p.render(336).size == (336, 336)
    assert p.render(224).tobytes() == p.render(224).tobytes()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["synth", *argv])


def test_cli_writes_a_dataset_and_a_preview(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = _parse(
        [
            "--out",
            str(out),
            "--n",
            "14",
            "--seed",
            "2",
            "--families",
            "shapes,circle_theorems",
            "--difficulty",
            "perception=2,one_step=1",
            "--workers",
            "1",
            "--preview",
            "--quiet",
        ]
    )
    assert run(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["counts"]["train"]["family"]) <= {"shapes", "circle_theorems"}
    assert "multi_step" not in manifest["counts"]["train"]["difficulty"]
    with Image.open(out / "preview.png") as sheet:
        assert sheet.width > 4 * 200 and sheet.height > 3 * 200


@pytest.mark.parametrize(
    "argv",
    [
        ["--families", "nope"],
        ["--difficulty", "hard"],
        ["--style", "text", "--difficulty", "perception"],
        ["--families", "shapes", "--difficulty", "one_step"],
        ["--size", "10"],
        ["--seed", "-1"],
        ["--test-fraction", "1.5"],
    ],
)
def test_cli_rejects_bad_options(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert run(_parse(["--out", str(tmp_path / "x"), "--n", "4", "--quiet", *argv])) == 2
    assert "geovlm synth: error:" in capsys.readouterr().err


def test_rendering_is_fast_enough() -> None:
    # `--n 2000` must finish in a minute on two cores; one core at 15 problems/s leaves room.
    start = time.perf_counter()
    for i in range(40):
        generate_problem(1, i).render(224)
    assert 40 / (time.perf_counter() - start) > 15


@pytest.mark.slow
def test_two_thousand_problems_within_a_minute(tmp_path: Path) -> None:
    start = time.perf_counter()
    assert (
        run(
            _parse(
                ["--out", str(tmp_path / "big"), "--n", "2000", "--quiet", "--workers", str(os.cpu_count())]
            )
        )
        == 0
    )
    assert time.perf_counter() - start < 60


def test_held_out_shapes_cover_every_class(tmp_path: Path) -> None:
    """Held-out perception questions must be new drawings; a shape drawn the same way every time
    (a bare circle was) would be deduplicated out of the test split entirely."""
    write_dataset(tmp_path, 600, 0, family="four_shapes", size=64, test_fraction=0.2, progress=False)
    answers = [json.loads(line)["text"] for line in (tmp_path / "test_answers.jsonl").read_text().splitlines()]
    assert len(answers) == 120
    for letter in "ABCD":
        assert answers.count(letter) >= 0.15 * len(answers), (letter, answers.count(letter))


# --- nothing a user made is lost ----------------------------------------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geovlm synth: error:"), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_cli_refuses_to_replace_an_existing_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "set"
    assert run(_parse(["--out", str(out), "--n", "6", "--seed", "1", "--workers", "1", "--quiet"])) == 0
    before = all_bytes(out)
    assert run(_parse(["--out", str(out), "--n", "4", "--seed", "2", "--workers", "1", "--quiet"])) == 2
    line = _one_error_line(capsys)
    assert "--overwrite" in line and "qa_tuning.json" in line
    assert all_bytes(out) == before  # not a byte changed, no staging folder left behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["qa_tuning.json", "test_answers.jsonl", "preview.png", "images/synth-9-0000001.png"])
def test_cli_refuses_when_any_file_it_would_write_exists(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "mine"
    (out / "images").mkdir(parents=True)
    (out / name).write_text("the user's own file")
    assert run(_parse(["--out", str(out), "--n", "4", "--workers", "1", "--quiet"])) == 2
    assert ("synthetic image" if name.startswith("images/") else name) in _one_error_line(capsys)
    assert (out / name).read_text() == "the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["images", *([name] if "/" not in name else [])]


def test_a_folder_with_other_files_is_fine_and_they_stay(tmp_path: Path) -> None:
    out = tmp_path / "Geo170K"  # e.g. a real Geo170K's image subfolders, or the user's notes
    (out / "images" / "geo3k").mkdir(parents=True)
    (out / "images" / "geo3k" / "1.png").write_bytes(b"real")
    (out / "notes.txt").write_text("mine")
    write_dataset(out, 4, seed=1, workers=1, progress=False)
    assert (out / "images" / "geo3k" / "1.png").read_bytes() == b"real" and (out / "notes.txt").exists()
    assert len(list((out / "images").glob("synth-*.png"))) == 4


def test_overwrite_replaces_the_old_set_and_nothing_old_mixes_in(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "set"
    assert run(_parse(["--out", str(out), "--n", "12", "--seed", "1", "--workers", "1", "--preview", "--quiet"])) == 0
    (out / "images" / "keep.png").write_bytes(b"not the synth's")  # not something synth writes
    (out / "notes.txt").write_text("mine")
    assert run(_parse(["--out", str(out), "--n", "5", "--seed", "2", "--workers", "1", "--quiet", "--overwrite"])) == 0
    assert capsys.readouterr().err == ""
    fresh = tmp_path / "fresh"
    write_dataset(fresh, 5, seed=2, workers=1, progress=False)
    got = {k: v for k, v in all_bytes(out).items() if k not in ("images/keep.png", "notes.txt")}
    assert got == all_bytes(fresh)  # exactly the new set: no old image, record file or preview left
    assert (out / "images" / "keep.png").read_bytes() == b"not the synth's" and (out / "notes.txt").exists()


def test_an_interrupted_run_leaves_the_folder_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "set"
    write_dataset(out, 6, seed=1, workers=1, progress=False)
    before = all_bytes(out)
    calls = []

    def crash(task: tuple) -> tuple:
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    real = synth_writer._make
    monkeypatch.setattr(synth_writer, "_make", crash)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, 8, seed=2, workers=1, progress=False, overwrite=True)
    assert all_bytes(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        {k.split("/")[0] for k in before}
    )
    with pytest.raises(OutputExists):  # the library refuses like the CLI
        write_dataset(out, 8, seed=2, workers=1, progress=False)


def test_cli_out_that_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    assert run(_parse(["--out", str(out), "--n", "4", "--quiet"])) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)
