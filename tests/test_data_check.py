"""Tests for `geovlm data check|stats` (geovlm.data.check and geovlm.data.cli)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from geovlm.data.check import check_corpus
from geovlm.data.cli import register
from geovlm.data.dataset import build_dataset


@pytest.fixture(scope="module")
def processor(tokenizer: Any) -> Any:
    from geovlm import GeoVLMConfig
    from geovlm.processing.build import processor_for

    return processor_for(GeoVLMConfig.from_preset("tiny"), tokenizer)


@pytest.fixture
def fast_processor(processor: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Let the CLI reuse the module's processor instead of loading the tokenizer for every call."""
    monkeypatch.setattr("geovlm.data.check.default_processor", lambda model=None: processor)
    return processor


def png_bytes(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def rec(record_id: str, image: str | None, *values: str, roles: tuple[str, ...] = ()) -> dict[str, Any]:
    roles = roles or tuple("human" if i % 2 == 0 else "gpt" for i in range(len(values)))
    turns = [{"from": r, "value": v} for r, v in zip(roles, values, strict=True)]
    out: dict[str, Any] = {"id": record_id, "conversations": turns}
    if image is not None:
        out["image"] = image
    return out


def clean_corpus(root: Path) -> tuple[Path, Path]:
    images = root / "images"
    (images / "geoqa_plus").mkdir(parents=True)
    (images / "geoqa_plus" / "1.png").write_bytes(png_bytes(seed=1))
    (images / "geo3k").mkdir()
    (images / "geo3k" / "2.png").write_bytes(png_bytes(50, 20, seed=2))
    records = [
        rec("geoqa-1", "geoqa_plus/1.png", "<image>\nFind ∠C.", "70°"),
        rec("geo3k-2", "geo3k/2.png", "What is x?", "x = 3", "Why?", "Because."),
        rec("text-3", None, "What is 2 + 2?", "4"),
    ]
    data = root / "qa_tuning.json"
    data.write_text(json.dumps(records))
    return data, images


# Every kind of problem, one record each: id -> reason.
EXPECTED = {
    "missing": "missing",
    "zero-byte": "unreadable",
    "cut": "truncated",
    "huge": "too_large",
    "bad-role": "malformed",
    "no-gpt": "malformed",
    "two-tags": "malformed",
    "no-conversations": "malformed",
    "special-token": "malformed",
    "too-long": "too_long",
}


def bad_corpus(root: Path) -> tuple[Path, Path]:
    data, images = clean_corpus(root)
    (images / "zero.png").write_bytes(b"")
    whole = png_bytes(64, 64, seed=3)
    (images / "cut.png").write_bytes(whole[: len(whole) // 2])
    (images / "huge.png").write_bytes(png_bytes(150, 100, seed=4))
    records = json.loads(data.read_text())
    records[1:1] = [
        rec("missing", "geoqa_plus/none.png", "<image>\nQ", "A"),
        rec("zero-byte", "zero.png", "<image>\nQ", "A"),
        rec("bad-role", None, "Q", "A", roles=("human", "robot")),
        rec("cut", "cut.png", "<image>\nQ", "A"),
        rec("huge", "huge.png", "<image>\nQ", "A"),
        rec("no-gpt", None, "Q", roles=("human",)),
        rec("two-tags", "geoqa_plus/1.png", "<image>\n<image>\nQ", "A"),
        {"id": "no-conversations", "image": "geoqa_plus/1.png"},
        rec("special-token", None, "Q<|im_start|>", "A"),
        rec("too-long", "geoqa_plus/1.png", "word " * 300 + "<image>", "A"),
    ]
    data.write_text(json.dumps(records))
    return data, images


def run_cli(argv: list[str]) -> int:
    """What `geovlm.cli.main` does, with only our `data` command registered."""
    from geovlm.errors import CLIError

    parser = argparse.ArgumentParser(prog="geovlm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"geovlm {args.command}: error: {err}")
        return 2


BAD_ARGS = ["--max-pixels", "10000", "--max-length", "256", "--verify", "--workers", "1"]


def test_check_reports_every_bad_record_and_exits_one(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = bad_corpus(tmp_path)
    out = tmp_path / "report.json"
    assert run_cli(["data", "check", str(data), "--images", str(images), *BAD_ARGS, "--json", str(out)]) == 1
    text = capsys.readouterr().out
    for record_id, reason in EXPECTED.items():
        line = next(line for line in text.splitlines() if f"id={record_id!r}" in line)
        assert line.split()[0] == reason, line
    assert "records: 13 (8 parsed, 5 malformed)" in text
    assert (
        "errors: 10 in 10 record(s): malformed=5, missing=1, unreadable=1, truncated=1, too_large=1, too_long=1"
        in text
    )

    report = json.loads(out.read_text())
    assert {e["id"]: e["reason"] for e in report["errors"]} == EXPECTED
    assert report["counts"] == {"malformed": 5, "missing": 1, "unreadable": 1, "truncated": 1, "too_large": 1,
                                "too_long": 1}  # fmt: skip
    assert report["records"] == 13 and report["bad_records"] == 10
    by_id = {e["id"]: e for e in report["errors"]}
    assert by_id["bad-role"]["code"] == "unknown_role" and "robot" in by_id["bad-role"]["detail"]
    assert by_id["no-gpt"]["code"] == "no_assistant"
    assert by_id["two-tags"]["code"] == "too_many_image_tags"
    assert by_id["no-conversations"]["code"] == "no_conversations"
    assert by_id["special-token"]["code"] == "special_token_in_text"
    assert by_id["missing"]["path"].endswith("geoqa_plus/none.png")
    lengths = report["lengths"]
    assert set(lengths["with_image"]) == {"p50", "p90", "p95", "p99", "max"}
    assert lengths["with_image"]["max"] - lengths["text_only"]["max"] == 51  # 49 pads + 2 markers
    assert report["truncation"] == {"max_length": 256, "fit": 7, "truncated": 0, "dropped": 1}


def test_check_prints_at_most_show_errors(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = bad_corpus(tmp_path)
    assert run_cli(["data", "check", str(data), "--images", str(images), *BAD_ARGS, "--show", "3"]) == 1
    text = capsys.readouterr().out
    assert sum(" id=" in line for line in text.splitlines()) == 3
    assert "... and 7 more (--json lists all of them)" in text


def test_header_probe_misses_a_cut_body_that_verify_finds(tmp_path: Path, processor: Any) -> None:
    data, images = bad_corpus(tmp_path)
    quick = check_corpus(data, images, processor, max_pixels=10_000, max_length=256, verify=False)
    assert "truncated" not in quick.counts and quick.counts["missing"] == 1
    full = check_corpus(data, images, processor, max_pixels=10_000, max_length=256, verify=True)
    assert full.counts["truncated"] == 1


def test_check_finds_exactly_what_training_skips(tmp_path: Path, processor: Any) -> None:
    data, images = bad_corpus(tmp_path)
    report = check_corpus(data, images, processor, max_pixels=10_000, max_length=256, verify=True, workers=2)
    dataset = build_dataset([(data, images, 1.0)], processor, max_pixels=10_000, max_length=256,
                            cache_lengths=False)  # fmt: skip
    skipped = {(r.id, r.reason) for r in dataset.load_skips.examples["malformed"]}
    assert dataset.load_skips.total == len(skipped)  # fewer than max_examples: all listed
    for i in range(len(dataset)):
        skipped |= {(s["id"], s["reason"]) for s in dataset[i]["skipped"]}
    assert skipped == {(e["id"], e["reason"]) for e in report.errors} == set(EXPECTED.items())
    serial = check_corpus(data, images, processor, max_pixels=10_000, max_length=256, verify=True, workers=1)
    assert serial.errors == report.errors  # the pool changes nothing
    assert serial.total_lengths.tolist() == report.total_lengths.tolist()


def test_lengths_agree_with_the_dataset(tmp_path: Path, processor: Any) -> None:
    data, images = clean_corpus(tmp_path)
    report = check_corpus(data, images, processor, max_length=None)
    dataset = build_dataset([(data, images, 1.0)], processor, max_length=None, cache_lengths=False)
    assert report.total_lengths.tolist() == [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    assert report.total_lengths.tolist() == dataset.lengths
    assert (report.total_lengths - report.text_lengths).tolist() == [51, 51, 0]


def test_clean_corpus_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, images = clean_corpus(tmp_path)  # default processor: offline tokenizer, tiny preset
    assert run_cli(["data", "check", str(data), "--images", str(images), "--verify", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "no errors: every record is usable" in text and "records: 3 (3 parsed, 0 malformed)" in text


def test_json_to_stdout_parses(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = bad_corpus(tmp_path)
    assert run_cli(["data", "check", str(data), "--images", str(images), *BAD_ARGS, "--json", "-"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert len(report["errors"]) == len(EXPECTED)
    assert "errors: 10" in captured.err  # the human report goes to stderr


def test_system_prompt_options_change_lengths(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = clean_corpus(tmp_path)

    def max_length(*options: str) -> int:
        assert run_cli(["data", "stats", str(data), "--images", str(images), "--json", "-", *options]) == 0
        return json.loads(capsys.readouterr().out)["lengths"]["with_image"]["max"]

    def system_turn(text: str) -> int:
        return len(fast_processor.tokenizer.encode(f"<|im_start|>system\n{text}<|im_end|>\n"))

    default = max_length()
    assert default - max_length("--no-system-prompt") == system_turn("You are a helpful assistant.")
    assert default - max_length("--system-prompt", "Be brief.") == (
        system_turn("You are a helpful assistant.") - system_turn("Be brief.")
    )


def test_stats_prints_the_length_distribution(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = bad_corpus(tmp_path)
    assert (
        run_cli(["data", "stats", str(data), "--images", str(images), "--max-length", "300", "--json", "-"])
        == 0
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    table = {row["max_length"]: row for row in report["length_table"]}
    assert table[256]["dropped"] == 1 and table[300] == {
        "max_length": 300,
        "fit": 7,
        "truncated": 0,
        "dropped": 1,
    }
    assert table[4096]["fit"] == 8
    assert sum(b["count"] for b in report["histogram"]) == 8
    assert "unreadable" not in report["counts"]  # stats does not open images
    assert "p50" in captured.err and "max_length        fit  truncated    dropped" in captured.err


def test_user_errors_are_cli_errors(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["data", "check", str(tmp_path / "nope.json")]) == 2
    assert "no such data file" in capsys.readouterr().out
    broken = tmp_path / "broken.json"
    broken.write_text('{"not": "a list"}')
    assert run_cli(["data", "check", str(broken)]) == 2
    assert "expected a JSON list of records" in capsys.readouterr().out
    data, _ = clean_corpus(tmp_path / "c")
    assert run_cli(["data", "check", str(data), "--images", str(tmp_path / "no-dir")]) == 2
    with pytest.raises(SystemExit):
        run_cli(["data", "check", str(data), "--max-length", "0"])


def test_model_folder_processor(tmp_path: Path, processor: Any, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "model"
    processor.save_pretrained(folder)
    data, images = clean_corpus(tmp_path / "corpus")
    assert (
        run_cli(["data", "check", str(data), "--images", str(images), "--model", str(folder), "--json", "-"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["lengths"]["with_image"]["max"] == max(check_corpus(data, images, processor).total_lengths)
    assert run_cli(["data", "check", str(data), "--model", str(tmp_path / "no-model")]) == 2


def test_through_the_geovlm_entry_point(
    tmp_path: Path, fast_processor: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import geovlm.cli

    monkeypatch.setattr(geovlm.cli, "COMMAND_MODULES", ["geovlm.data.cli"])
    data, images = bad_corpus(tmp_path)
    assert geovlm.cli.main(["data", "check", str(data), "--images", str(images), *BAD_ARGS]) == 1
    assert geovlm.cli.main(["data", "check", str(tmp_path / "nope.json")]) == 2
    assert "geovlm data: error: no such data file" in capsys.readouterr().err


def test_data_command_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import argparse, sys, geovlm.data.cli as c; p = argparse.ArgumentParser(); "
        "c.register(p.add_subparsers()); print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


# --- hostile input: cut images pass no more by default, an empty corpus is not usable ----------------


def cut_image_corpus(root: Path) -> tuple[Path, Path]:
    """A clean corpus plus one record whose PNG stops halfway: its header reads fine."""
    data, images = clean_corpus(root)
    whole = png_bytes(64, 64, seed=3)
    (images / "cut.png").write_bytes(whole[: len(whole) // 2])
    data.write_text(json.dumps([*json.loads(data.read_text()), rec("cut", "cut.png", "<image>\nQ", "A")]))
    return data, images


def test_default_check_decodes_every_image_as_training_does(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = cut_image_corpus(tmp_path)
    assert run_cli(["data", "check", str(data), "--images", str(images), "--workers", "1"]) == 1
    text = capsys.readouterr().out
    assert "every image decoded, as training does" in text
    assert "truncated  id='cut'" in text and "errors: 1 in 1 record(s): truncated=1" in text
    assert check_corpus(data, images, fast_processor).counts == {"truncated": 1}  # the API's default too


def test_headers_only_is_faster_and_says_it_did_not_decode(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    data, images = cut_image_corpus(tmp_path)
    argv = [
        "data",
        "check",
        str(data),
        "--images",
        str(images),
        "--workers",
        "1",
        "--headers-only",
        "--json",
        "-",
    ]
    assert run_cli(argv) == 0
    captured = capsys.readouterr()
    assert "NOT decoded, so truncated or corrupt files pass unseen" in captured.err
    report = json.loads(captured.out)
    assert report["verify"] is False and report["errors"] == []
    with pytest.raises(SystemExit):  # one or the other
        run_cli([*argv, "--verify"])


@pytest.mark.parametrize(
    ("name", "content"), [("empty.json", "[]"), ("empty.jsonl", ""), ("blank.jsonl", "\n \n")]
)
def test_an_empty_corpus_is_not_reported_usable(
    tmp_path: Path, fast_processor: Any, capsys: pytest.CaptureFixture[str], name: str, content: str
) -> None:
    data = tmp_path / name
    data.write_text(content)
    assert run_cli(["data", "check", str(data), "--workers", "1"]) == 1
    text = capsys.readouterr().out
    assert f"error: no records in {data}: training would have nothing to read" in text
    assert "every record is usable" not in text
    report = check_corpus(data, None, fast_processor)
    assert report.empty and not report.ok and report.to_dict()["ok"] is False
