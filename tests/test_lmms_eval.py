"""GeoVLM in lmms-eval: the `geovlm` model plugin, the `geovlm_synth`/`geovlm_geoqa` tasks, and the
processor's handling of the empty audio/video arguments harnesses pass.

The subprocess tests (marked integration) run the real `lmms-eval` CLI on a tiny saved model over a
small synthetic set and judge each run by its samples and log (lmms-eval exits 0 when the model raised;
see lmms_helpers.py), never by its exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmms_helpers import lmms_env, lmms_eval_args, lmms_eval_command, read_results, read_samples, run_lmms

# ------------------------------------------------------------------ the processor (no lmms-eval needed)


def test_processor_accepts_empty_audio_and_video_and_refuses_the_rest(tiny_pair):
    from PIL import Image

    _, processor = tiny_pair
    image = Image.new("RGB", (40, 30), "white")
    plain = processor(images=[image], text=["<image>\nWhat is drawn?"], return_tensors="pt")
    for name in ("videos", "video", "audio", "audios"):
        for empty in (None, [], [[]]):
            out = processor(images=[image], text=["<image>\nWhat is drawn?"], return_tensors="pt", **{name: empty})
            assert sorted(out) == sorted(plain), (name, empty)
            assert out["input_ids"].equal(plain["input_ids"]) and out["pixel_values"].equal(plain["pixel_values"])
    for name, value in (("videos", [image]), ("video", [[image, image]]), ("audio", [[0.0] * 16]), ("audios", [[0.1]])):
        with pytest.raises(ValueError, match=f"non-empty `{name}`"):
            processor(images=[image], text=["<image>\nWhat is drawn?"], **{name: value})


# ------------------------------------------------------------------ the task's data and scoring


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    """A small synthetic set; its test split (13 questions) is what the tasks read."""
    from geovlm.synth.writer import write_dataset

    out = tmp_path_factory.mktemp("lmms") / "synth"
    write_dataset(out, 26, seed=2, test_fraction=0.5, workers=1, progress=False)
    return out


def n_questions(folder: Path) -> int:
    return sum(1 for line in (folder / "test_questions.jsonl").read_text().splitlines() if line.strip())


def test_task_files_come_from_the_environment_or_the_task_config(synth_dir, tmp_path):
    from geovlm.eval.lmms.geoqa import resolve_files

    files = resolve_files("geovlm_synth", {"env_prefix": "GEOVLM_SYNTH"}, {"GEOVLM_SYNTH_DIR": os.fspath(synth_dir)})
    assert (files.questions, files.answers, files.images) == (
        synth_dir / "test_questions.jsonl", synth_dir / "test_answers.jsonl", synth_dir / "images")
    # one file named apart overrides the folder's; a task config's path wins over the environment
    env = {"GEOVLM_GEOQA_DIR": os.fspath(synth_dir), "GEOVLM_GEOQA_IMAGES": os.fspath(tmp_path)}
    assert resolve_files("geovlm_geoqa", {"env_prefix": "GEOVLM_GEOQA"}, env).images == tmp_path
    assert resolve_files("t", {"env_prefix": "GEOVLM_GEOQA", "images": os.fspath(synth_dir)}, env).images == synth_dir
    with pytest.raises(ValueError, match="set GEOVLM_SYNTH_DIR"):
        resolve_files("geovlm_synth", {"env_prefix": "GEOVLM_SYNTH"}, {})
    with pytest.raises(FileNotFoundError, match="no questions file"):
        resolve_files("geovlm_synth", {"env_prefix": "GEOVLM_SYNTH"}, {"GEOVLM_SYNTH_DIR": os.fspath(tmp_path)})


def test_task_scores_replies_exactly_as_geovlm_score(synth_dir):
    """Correct, wrong and unparsed replies (and G-LLaVA's odd cases) get the accuracy `geovlm score` gives."""
    from geovlm.eval.lmms.geoqa import (
        GeoQAFiles,
        aggregate_accuracy,
        aggregate_unparsed,
        doc_to_text,
        load_docs,
        process_results,
    )
    from geovlm.eval.score import score

    files = GeoQAFiles(synth_dir / "test_questions.jsonl", synth_dir / "test_answers.jsonl", synth_dir / "images")
    docs = load_docs(files)
    questions = [json.loads(line) for line in files.questions.read_text().splitlines()]
    assert [d["question_id"] for d in docs] == [str(q["question_id"]) for q in questions]
    assert [doc_to_text(d) for d in docs] == [q["text"] for q in questions]  # geovlm eval's "{text}" prompt
    assert all(Path(d["image"]) == files.images / q["image"] for d, q in zip(docs, questions, strict=True))
    other = {"A": "B", "B": "C", "C": "D", "D": "A"}
    forms = [lambda g: f"Reasoning.\nAnswer:{g}", lambda g: f"Answer:{other[g]}", lambda g: "I cannot tell",
             lambda g: f"Answer: {g}",  # G-LLaVA's rule wants no space: unparsed
             lambda g: f"So the answer is option {g}", lambda g: f"It is {g}.", lambda g: f"It is {g}"]
    replies = [forms[i % len(forms)](d["answer"]) for i, d in enumerate(docs)]
    records = [process_results(d, [r]) for d, r in zip(docs, replies, strict=True)]
    report = score(files.answers, [{"question_id": q["question_id"], "text": r} for q, r in zip(questions, replies, strict=True)])
    assert 0 < report.correct < report.total and report.unparsed > 0
    assert aggregate_accuracy([r["accuracy"] for r in records]) == pytest.approx(report.accuracy)
    assert aggregate_unparsed([r["unparsed"] for r in records]) == report.unparsed


def test_task_yaml_loads_through_lmms_evals_task_manager(synth_dir, monkeypatch):
    pytest.importorskip("lmms_eval")
    from lmms_eval.tasks import TaskManager, get_task_dict

    from geovlm.eval.lmms import TASKS_DIR

    monkeypatch.setenv("GEOVLM_SYNTH_DIR", os.fspath(synth_dir))
    for key, path in (("QUESTIONS", "test_questions.jsonl"), ("ANSWERS", "test_answers.jsonl"), ("IMAGES", "images")):
        monkeypatch.setenv(f"GEOVLM_GEOQA_{key}", os.fspath(synth_dir / path))
    manager = TaskManager(include_path=os.fspath(TASKS_DIR), include_defaults=False)
    assert {"geovlm_synth", "geovlm_geoqa"} <= set(manager.all_tasks)
    tasks = get_task_dict(["geovlm_synth", "geovlm_geoqa"], manager)
    task = tasks["geovlm_synth"]
    docs = task.test_docs()
    assert len(docs) == n_questions(synth_dir)
    assert list(tasks["geovlm_geoqa"].test_docs()) == list(docs)
    assert task.config.generation_kwargs == {"max_new_tokens": 512, "temperature": 0.0, "do_sample": False, "until": []}
    assert task.doc_to_text(docs[0]) == docs[0]["text"]
    (image,) = task.doc_to_visual(docs[0])
    assert image.size[0] == image.size[1]  # padded to a square, as geovlm eval loads it


# ------------------------------------------------------------------ the model, in process


def test_lmms_eval_finds_the_geovlm_model_through_its_entry_point():
    pytest.importorskip("lmms_eval")
    from lmms_eval.models import get_model

    from geovlm.eval.lmms.model import GeoVLMLmms

    assert get_model("geovlm") is GeoVLMLmms


def test_generation_kwargs_and_stop_strings():
    pytest.importorskip("lmms_eval")
    from geovlm.eval.lmms.model import cut_at_stops, split_generation_kwargs
    from geovlm.serve.chat import generation_options

    options, stops, ignored = split_generation_kwargs(
        {"max_new_tokens": 64, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False, "until": "\n\n",
         "image_aspect_ratio": "pad", "foo": 1})
    assert generation_options(**options) == {"max_new_tokens": 64, "do_sample": False}  # greedy, as geovlm eval
    assert (stops, ignored) == (["\n\n"], ["foo"])
    sampled, _, _ = split_generation_kwargs({"do_sample": True, "top_p": 0.9})
    assert generation_options(**sampled)["do_sample"] and sampled["temperature"] == 1.0
    assert cut_at_stops("a. b\n\nc</s>", ["</s>", "\n\n"]) == "a. b"
    assert cut_at_stops("abc", []) == "abc"


@pytest.fixture(scope="module")
def lmms_model(model_dir):
    pytest.importorskip("lmms_eval")
    from geovlm.eval.lmms.model import GeoVLMLmms

    return GeoVLMLmms.create_from_arg_string(f"pretrained={model_dir},batch_size=3",
                                             {"batch_size": 1, "device": "cpu", "max_batch_size": None})


def request(context, doc_id, gen_kwargs, task="t"):
    """An lmms-eval request as the model reads it (`.args`); its visuals are task_dict[task]["test"][doc_id]["visual"]."""
    return SimpleNamespace(args=(context, gen_kwargs, lambda doc: doc["visual"], doc_id, task, "test"))


def test_generate_until_answers_as_geovlm_eval(lmms_model, synth_dir):
    """Batched replies through the plugin equal `answer` (what geovlm eval calls), one request by one;
    text-only questions too; `until` cuts the text."""
    from geovlm.serve.chat import answer, prepare_image

    assert lmms_model.batch_size == 3  # model_args win over the command line's default --batch_size 1
    questions = [json.loads(line) for line in (synth_dir / "test_questions.jsonl").read_text().splitlines()][:5]
    images = [prepare_image(synth_dir / "images" / q["image"]) for q in questions]
    images[3] = None  # a text-only question
    lmms_model.task_dict = {"t": {"test": [{"visual": [] if im is None else [im]} for im in images]}}
    greedy = {"max_new_tokens": 10, "temperature": 0, "do_sample": False, "until": []}
    replies = lmms_model.generate_until([request(q["text"], i, greedy) for i, q in enumerate(questions)])
    expected = [answer(lmms_model.model, lmms_model.processor, [im], [q["text"]], max_new_tokens=10)[0]
                for q, im in zip(questions, images, strict=True)]
    assert replies == expected
    stop = expected[0][2:5]
    cut = lmms_model.generate_until([request(questions[0]["text"], 0, {**greedy, "until": [stop]})])
    assert cut == [expected[0][: expected[0].find(stop)]]


def test_requests_geovlm_cannot_serve_are_refused(lmms_model, synth_dir):
    from PIL import Image

    from geovlm.eval.lmms.model import UnsupportedRequest

    image = Image.new("RGB", (32, 32), "white")
    ask = [request("Which?", 0, {"max_new_tokens": 4}, task="mathvista")]
    with pytest.raises(UnsupportedRequest, match="loglikelihood"):
        lmms_model.loglikelihood(ask)
    with pytest.raises(UnsupportedRequest, match="multi-round"):
        lmms_model.generate_until_multi_round(ask)
    for visual, why in (("clip.mp4", "a video"), ({"array": [0.0], "sampling_rate": 16000}, "audio"),
                        (image, "at most one image")):
        lmms_model.task_dict = {"t": {"test": [{"visual": [visual, image] if why == "at most one image" else [visual]}]}}
        with pytest.raises(UnsupportedRequest, match=why):
            lmms_model.generate_until([request("Which?", 0, {"max_new_tokens": 4})])


def test_unknown_model_args_are_refused(model_dir):
    pytest.importorskip("lmms_eval")
    from geovlm.eval.lmms.model import GeoVLMLmms

    with pytest.raises(ValueError, match="unknown model_args temprature"):
        GeoVLMLmms.create_from_arg_string(f"pretrained={model_dir},temprature=0", {})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        GeoVLMLmms.create_from_arg_string(f"pretrained={model_dir},batch_size=auto", {})


# ------------------------------------------------------------------ the lmms-eval CLI, in subprocesses


@pytest.fixture(scope="module")
def single_run(synth_dir, model_dir, tmp_path_factory):
    pytest.importorskip("lmms_eval")
    work = tmp_path_factory.mktemp("lmms-single")
    out = work / "out"
    return run_lmms([*lmms_eval_command(), *lmms_eval_args(model_dir, "geovlm_synth", out)], out,
                    lmms_env(GEOVLM_SYNTH_DIR=os.fspath(synth_dir)), work)


def geovlm_command() -> list[str]:
    script = Path(sys.executable).with_name("geovlm")
    return [os.fspath(script)] if script.exists() else [sys.executable, "-c", "import sys; from geovlm.cli import main; sys.exit(main())"]


@pytest.mark.integration
def test_lmms_eval_cli_gives_geovlm_evals_answers_and_score(single_run, synth_dir, model_dir, tmp_path):
    n = n_questions(synth_dir)
    samples = read_samples(single_run, "geovlm_synth", n)
    predictions, report = tmp_path / "predictions.jsonl", tmp_path / "score.json"
    env = lmms_env()
    done = subprocess.run([*geovlm_command(), "eval", os.fspath(model_dir), "--questions", os.fspath(synth_dir / "test_questions.jsonl"),
                           "--answers", os.fspath(synth_dir / "test_answers.jsonl"), "--images", os.fspath(synth_dir / "images"),
                           "--out", os.fspath(predictions), "--max-new-tokens", "12", "--batch-size", "5", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    done = subprocess.run([*geovlm_command(), "score", "--answers", os.fspath(synth_dir / "test_answers.jsonl"),
                           "--predictions", os.fspath(predictions), "--json", os.fspath(report)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ours = {str(p["question_id"]): p for p in map(json.loads, predictions.read_text().splitlines())}
    for sample in samples.values():  # the same reply and the same verdict, question by question
        record = sample["accuracy"]
        mine = ours[record["question_id"]]
        assert sample["filtered_resps"] == mine["text"].strip(), record["question_id"]
        assert record["extracted"] == mine["extracted"]
    scored = json.loads(report.read_text())
    results = read_results(single_run, "geovlm_synth")
    assert results["accuracy,none"] == pytest.approx(scored["accuracy"])
    assert results["unparsed,none"] == scored["unparsed"] and scored["total"] == n


@pytest.mark.integration
def test_two_processes_give_the_samples_of_one(single_run, synth_dir, model_dir, tmp_path):
    """Data parallelism through `accelerate launch`: two gloo processes on the CPU, each answering its share.

    On a machine without GPUs `accelerate launch --cpu --num_processes 2` starts ONE process (accelerate
    runs several CPU processes only through MPI), so the test asks for its torchrun-based launcher with
    `--multi_gpu`, which on a CPU-only machine starts two processes joined by gloo."""
    from conftest import free_port

    n = n_questions(synth_dir)
    one = read_samples(single_run, "geovlm_synth", n)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "lmms_eval",
               *lmms_eval_args(model_dir, "geovlm_synth", out)]
    run = run_lmms(command, out, lmms_env(GEOVLM_SYNTH_DIR=os.fspath(synth_dir)), tmp_path)
    two = read_samples(run, "geovlm_synth", n)
    assert "Running on rank 1" in run.log, run.log[-3000:]  # two processes really ran
    for doc_id, sample in one.items():
        assert (two[doc_id]["filtered_resps"], two[doc_id]["accuracy"]) == (sample["filtered_resps"], sample["accuracy"])
    assert read_results(run, "geovlm_synth") == read_results(single_run, "geovlm_synth")


@pytest.mark.integration
def test_a_model_that_raises_inside_lmms_eval_is_caught_by_the_helper(synth_dir, model_dir, tmp_path):
    """A model whose context (64 tokens) cannot hold the prompt raises in generate_until; lmms-eval logs it
    and writes no samples; `read_samples` fails the run, whatever the exit code."""
    import shutil

    pytest.importorskip("lmms_eval")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 64
    (broken / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    run = run_lmms([*lmms_eval_command(), *lmms_eval_args(broken, "geovlm_synth", out)], out,
                   lmms_env(GEOVLM_SYNTH_DIR=os.fspath(synth_dir)), tmp_path)
    with pytest.raises(AssertionError, match="exceeds the model's context"):
        read_samples(run, "geovlm_synth", n_questions(synth_dir))
