"""`geovlm eval` keeps what it wrote: answers flushed as they come, a killed run resumed, another run's
file never replaced without --overwrite; inputs checked before anything is generated."""

from __future__ import annotations

import json
import os
import stat

import pytest
from PIL import Image, ImageDraw

from geovlm.cli import main as cli_main
from geovlm.eval import evaluate as evaluate_module

pytestmark = pytest.mark.integration


def write_split(root, n=6, images=True):
    (root / "images").mkdir(exist_ok=True)
    with open(root / "test_questions.jsonl", "w") as q, open(root / "test_answers.jsonl", "w") as a:
        for i in range(n):
            image = Image.new("RGB", (96, 96), "white")
            ImageDraw.Draw(image).line([(5, 5 + i * 10), (90, 80)], fill="black", width=3)
            image.save(root / "images" / f"{i}.png")
            record = {"question_id": i, "text": f"Find ∠{i}.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°"}
            if images:
                record["image"] = f"{i}.png"
            q.write(json.dumps(record) + "\n")
            a.write(json.dumps({"question_id": i, "text": "ABCD"[i % 4]}) + "\n")


def eval_args(model_dir, root, out, *extra):
    return ["eval", str(model_dir), "--questions", str(root / "test_questions.jsonl"), "--answers",
            str(root / "test_answers.jsonl"), "--images", str(root / "images"), "--out", str(out),
            "--max-new-tokens", "6", "--batch-size", "2", *extra]


def test_a_killed_run_resumes_from_what_is_on_disk(model_dir, tmp_path, monkeypatch):
    write_split(tmp_path)
    out = tmp_path / "pred.jsonl"
    assert cli_main(eval_args(model_dir, tmp_path, out)) == 0
    full = out.read_text().splitlines()
    assert len(full) == 6

    # Killed after two batches: the third batch's generation raises, as a SIGKILL would stop it.
    from geovlm.serve import chat as chat_module

    real_answer, calls = chat_module.answer, []

    def dying_answer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_answer(*args, **kwargs)

    out2 = tmp_path / "pred2.jsonl"
    monkeypatch.setattr(chat_module, "answer", dying_answer)
    with pytest.raises(KeyboardInterrupt):
        cli_main(eval_args(model_dir, tmp_path, out2))
    assert out2.read_text().splitlines() == full[:4]  # two batches of two, flushed as they came
    with open(out2, "a") as handle:
        handle.write('{"question_id": 4, "te')  # a line cut by the kill
    monkeypatch.setattr(chat_module, "answer", real_answer)
    generated = []
    monkeypatch.setattr(chat_module, "answer", lambda *a, **k: generated.append(len(a[3])) or real_answer(*a, **k))
    assert cli_main(eval_args(model_dir, tmp_path, out2)) == 0
    assert generated == [2]  # only the two missing questions
    assert out2.read_text().splitlines() == full


@pytest.mark.parametrize("case", ["other_settings", "other_dtype", "other_quantize", "other_questions",
                                  "not_predictions"])
def test_another_runs_file_is_not_replaced_without_overwrite(case, model_dir, tmp_path, capsys):
    write_split(tmp_path)
    out = tmp_path / "pred.jsonl"
    if case == "not_predictions":
        out.write_text("my notes\n")
    else:
        assert cli_main(eval_args(model_dir, tmp_path, out)) == 0
    before = out.read_bytes()
    extra = {"other_settings": ["--prompt-template", "Q: {text}"], "other_dtype": ["--dtype", "bf16"],
             "other_quantize": ["--quantize", "int8"]}.get(case, [])
    if case == "other_questions":
        with open(tmp_path / "test_questions.jsonl", "a") as q, open(tmp_path / "test_answers.jsonl", "a") as a:
            q.write(json.dumps({"question_id": 99, "image": "0.png", "text": "new"}) + "\n")
            a.write(json.dumps({"question_id": 99, "text": "A"}) + "\n")
    capsys.readouterr()
    assert cli_main(eval_args(model_dir, tmp_path, out, *extra)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]  # bf16/int8 speed
    assert len(err) == 1 and "--overwrite" in err[0]
    assert {"other_dtype": "settings (precision)", "other_quantize": "settings (precision)",
            "other_questions": "questions file", "other_settings": "settings (prompt_template)"}.get(
        case, "is not a predictions file") in err[0]
    assert out.read_bytes() == before
    assert cli_main(eval_args(model_dir, tmp_path, out, *extra, "--overwrite")) == 0
    assert len(out.read_text().splitlines()) == (7 if case == "other_questions" else 6)


@pytest.mark.parametrize("case", ["duplicate_id", "bad_template", "batch_zero", "out_is_folder", "parent_is_file",
                                  "no_images", "empty_questions"])
def test_bad_inputs_are_one_line_and_nothing_is_generated(case, model_dir, tmp_path, monkeypatch, capsys):
    write_split(tmp_path, images=case != "no_images")
    out, extra = tmp_path / "pred.jsonl", []
    if case == "duplicate_id":
        with open(tmp_path / "test_questions.jsonl", "a") as q:
            q.write(json.dumps({"question_id": 3, "image": "3.png", "text": "again"}) + "\n")
    elif case == "bad_template":
        extra = ["--prompt-template", "{foo}"]
    elif case == "batch_zero":
        extra = ["--batch-size", "0"]
    elif case == "out_is_folder":
        out.mkdir()
    elif case == "parent_is_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "pred.jsonl"
    elif case == "empty_questions":
        (tmp_path / "test_questions.jsonl").write_text("\n")
    from geovlm.serve import chat as chat_module

    monkeypatch.setattr(chat_module, "answer", lambda *a, **k: pytest.fail("generated before checking inputs"))
    assert cli_main(eval_args(model_dir, tmp_path, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("geovlm eval: error:"), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(model_dir, tmp_path, capsys):
    write_split(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert cli_main(eval_args(model_dir, tmp_path, locked / "pred.jsonl")) == 2
    finally:
        locked.chmod(stat.S_IRWXU)
    assert "cannot write" in capsys.readouterr().err


def test_questions_without_images_are_counted_and_text_only_is_explicit(model_dir, tmp_path, capsys):
    write_split(tmp_path)
    lines = (tmp_path / "test_questions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first.pop("image")
    second = json.loads(lines[1])
    second["image"] = None
    lines[:2] = [json.dumps(first), json.dumps(second)]
    (tmp_path / "test_questions.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "images" / "2.png").unlink()
    capsys.readouterr()
    assert cli_main(eval_args(model_dir, tmp_path, tmp_path / "pred.jsonl")) == 0
    out = capsys.readouterr().out
    assert "2 question(s) answered without their image: no image in the record" in out
    assert "1 question(s) not answered, scored wrong: image missing" in out
    # A file with no image at all needs --text-only.
    (tmp_path / "t").mkdir()
    write_split(tmp_path / "t", images=False)
    assert cli_main(eval_args(model_dir, tmp_path / "t", tmp_path / "t.jsonl")) == 2
    assert cli_main(eval_args(model_dir, tmp_path / "t", tmp_path / "t.jsonl", "--text-only")) == 0


def test_library_call_returns_counts(model_dir, tmp_path):
    from geovlm import load_pretrained

    write_split(tmp_path, n=3)
    model, processor = load_pretrained(model_dir)
    result = evaluate_module.evaluate(model, processor, tmp_path / "test_questions.jsonl",
                                      tmp_path / "test_answers.jsonl", tmp_path / "images", tmp_path / "p.jsonl",
                                      max_new_tokens=4, progress=False)
    assert (result.answered, result.resumed, result.report.total) == (3, 0, 3)
    again = evaluate_module.evaluate(model, processor, tmp_path / "test_questions.jsonl",
                                     tmp_path / "test_answers.jsonl", tmp_path / "images", tmp_path / "p.jsonl",
                                     max_new_tokens=4, progress=False)
    assert (again.answered, again.resumed) == (0, 3)  # a finished run is re-scored, not regenerated
