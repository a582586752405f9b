"""Using a trained model: chat/answer, `geovlm ask`, `geovlm eval` and its agreement with `geovlm score`."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image, ImageDraw

from geovlm.cli import main as cli_main
from geovlm.eval.score import score
from geovlm.processing.conversation import encode_conversation, prompt_text, question_messages
from geovlm.serve.chat import answer, chat


@pytest.fixture(scope="module")
def loaded(model_dir):
    from geovlm import load_pretrained

    return load_pretrained(model_dir)


def diagram(seed: int) -> Image.Image:
    image = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(image)
    draw.polygon([(10 + seed, 100), (150, 110 - seed), (70, 10 + seed)], outline="black", width=3)
    return image


def test_chat_with_history_prompts_as_the_training_data_does(loaded):
    model, processor = loaded
    history = [("In triangle ABC, ∠A = 50°, ∠B = 60°. Find ∠C.", "∠C = 70°.\nAnswer:A")]
    question = "And the exterior angle at C?"
    batch = processor(images=[diagram(0)], text=prompt_text(processor, question_messages(question, history)),
                      return_tensors="pt")
    record_turns = [
        {"from": "human", "value": "<image>\n" + history[0][0]},
        {"from": "gpt", "value": history[0][1]},
        {"from": "human", "value": question},
    ]
    expected = encode_conversation(processor, record_turns, add_generation_prompt=True).input_ids
    assert batch["input_ids"][0].tolist() == expected


def test_stream_equals_plain_reply_and_comes_in_chunks(loaded):
    model, processor = loaded
    whole = chat(model, processor, diagram(1), "What is ∠ABC?", max_new_tokens=24)
    chunks = list(chat(model, processor, diagram(1), "What is ∠ABC?", stream=True, max_new_tokens=24))
    assert len(chunks) > 1
    assert "".join(chunks) == whole


def test_batched_answers_equal_one_by_one(loaded):
    model, processor = loaded
    images = [diagram(i) for i in range(3)]
    questions = ["What is x?", "Find the length of AB in cm.", "Which angle is the largest one here?"]
    batched = answer(model, processor, images, questions, batch_size=3, max_new_tokens=12)
    single = [answer(model, processor, [im], [q], batch_size=1, max_new_tokens=12)[0] for im, q in zip(images, questions, strict=True)]
    assert batched == single


def write_split(root, n=5):
    (root / "images").mkdir()
    with open(root / "test_questions.jsonl", "w") as q, open(root / "test_answers.jsonl", "w") as a:
        for i in range(n):
            diagram(i).save(root / "images" / f"{i}.png")
            text = f"As shown in the figure, find ∠{i}.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°"
            q.write(json.dumps({"question_id": i, "image": f"images/{i}.png", "text": text}) + "\n")
            a.write(json.dumps({"question_id": i, "text": "ABCD"[i % 4], "family": "demo", "style": "diagram"}) + "\n")


@pytest.mark.integration
def test_eval_writes_one_prediction_per_question_and_score_reproduces_it(tmp_path, model_dir, capsys):
    from geovlm.synth import write_dataset

    write_dataset(tmp_path, 12, seed=5, test_fraction=0.5, workers=1, progress=False)  # the synthetic split
    n = len((tmp_path / "test_questions.jsonl").read_text().splitlines())
    out1, out4 = tmp_path / "pred1.jsonl", tmp_path / "pred4.jsonl"
    common = [str(model_dir), "--questions", str(tmp_path / "test_questions.jsonl"), "--answers",
              str(tmp_path / "test_answers.jsonl"), "--images", str(tmp_path / "images"), "--max-new-tokens", "10"]
    assert cli_main(["eval", *common, "--out", str(out4), "--batch-size", "4", "--json", str(tmp_path / "r.json")]) == 0
    assert cli_main(["eval", *common, "--out", str(out1), "--batch-size", "1"]) == 0
    rows4 = [json.loads(line) for line in out4.read_text().splitlines()]
    rows1 = [json.loads(line) for line in out1.read_text().splitlines()]
    assert [r["question_id"] for r in rows4] == list(range(n)) and n >= 4
    assert not [r for r in rows4 + rows1 if "error" in r]  # every synthetic image found under OUT/images
    assert [r["text"] for r in rows4] == [r["text"] for r in rows1]  # batch 4 generates as batch 1
    report = json.loads((tmp_path / "r.json").read_text())
    rescored = score(tmp_path / "test_answers.jsonl", out4)
    assert rescored.accuracy == report["accuracy"] and rescored.total == n
    assert "style" in report["breakdowns"]  # the synthetic answers carry family/style
    assert "Accuracy" in capsys.readouterr().out


@pytest.mark.integration
def test_ask_streams_and_exits_zero(model_dir, monkeypatch, tmp_path):
    path = tmp_path / "d.png"
    diagram(2).save(path)
    writes: list[str] = []

    class Recorder(io.StringIO):
        def write(self, text):  # noqa: D102
            writes.append(text)
            return len(text)

    monkeypatch.setattr("sys.stdout", Recorder())
    assert cli_main(["ask", str(model_dir), str(path), "What is ∠ABC?", "--max-new-tokens", "16"]) == 0
    assert len([w for w in writes if w.strip()]) > 1, writes


@pytest.mark.integration
def test_ask_reads_the_image_from_stdin(model_dir, monkeypatch, capsys):
    buffer = io.BytesIO()
    diagram(3).save(buffer, format="PNG")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(buffer.getvalue())))
    assert cli_main(["ask", str(model_dir), "-", "Which side is longest?", "--max-new-tokens", "4"]) == 0


@pytest.mark.integration
@pytest.mark.parametrize("case", ["missing_model", "bad_image", "too_long"])
def test_ask_errors_are_one_line(case, model_dir, tmp_path, capsys):
    image = tmp_path / "d.png"
    diagram(0).save(image)
    args = [str(model_dir), str(image), "What is x?"]
    if case == "missing_model":
        args[0] = str(tmp_path / "nope")
    elif case == "bad_image":
        image.write_bytes(b"not an image")
    else:
        args[2] = "why " * 5000
    assert cli_main(["ask", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("geovlm ask: error:")


@pytest.mark.integration
def test_eval_counts_a_question_with_a_missing_image_as_wrong_and_goes_on(tmp_path, model_dir):
    write_split(tmp_path)
    (tmp_path / "images" / "2.png").unlink()
    out = tmp_path / "pred.jsonl"
    assert cli_main(["eval", str(model_dir), "--questions", str(tmp_path / "test_questions.jsonl"), "--answers",
                     str(tmp_path / "test_answers.jsonl"), "--images", str(tmp_path), "--out", str(out),
                     "--max-new-tokens", "4"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and rows[2]["error"].startswith("image missing") and rows[2]["text"] == ""


def test_chat_and_answer_refuse_a_prompt_the_context_cannot_hold(loaded):
    from geovlm.serve.chat import ContextTooLong

    model, processor = loaded
    limit = model.config.text_config.max_position_embeddings
    long_question = "why " * limit
    with pytest.raises(ContextTooLong, match=f"context of {limit} tokens"):
        chat(model, processor, diagram(0), long_question, max_new_tokens=8)
    with pytest.raises(ContextTooLong):
        answer(model, processor, [diagram(0)], [long_question], max_new_tokens=8)
    with pytest.raises(ContextTooLong):  # the question fits, the reply asked for does not
        chat(model, processor, diagram(0), "Find x.", max_new_tokens=limit)
