"""Hostile config input for `geovlm pretrain/sft/quickstart`: invalid YAML in --config or in a YAML-typed
option value is one line naming the file and line (or the option), exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from geovlm.cli import main
from geovlm.train.config import ConfigError, TrainConfig

BAD_YAML = {
    "unclosed_bracket": ("stage: sft\ndata:\n  - path: a.json\n    images: [b\nlearning_rate: 1\n", 5),
    "bad_indent": ("stage: sft\n  lm_trainable: all\n", 2),
    "unclosed_quote": ('stage: sft\noutput_dir: "save/x\n', 3),
    "tab": ("stage: sft\n\tlm_trainable: all\n", 2),
}


def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"geovlm {command}: error:"), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_invalid_yaml_config_is_one_line_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stage: str, case: str
) -> None:
    text, line = BAD_YAML[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text.replace("sft", stage, 1))
    assert main([stage, "--config", str(path)]) == 2
    message = one_error_line(capsys, stage)
    assert str(path) in message and f"invalid YAML at line {line}," in message


def test_the_api_raises_a_value_error_too(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BAD_YAML["bad_indent"][0])
    with pytest.raises(ValueError, match=r"c\.yaml: invalid YAML at line 2"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sft", "--data", "[a.json, {path: b"], "--data '[a.json, {path: b': invalid YAML value"),
        (
            ["pretrain", "--lora-target-modules", "[q_proj"],
            "--lora-target-modules '[q_proj': invalid YAML value",
        ),
        (["quickstart", "--families", "{four_shapes: 1"], "--families '{four_shapes: 1': invalid YAML value"),
    ],
)
def test_invalid_yaml_option_value_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main(argv) == 2
    assert expected in one_error_line(capsys, argv[0])


@pytest.mark.parametrize("what", ["missing", "folder", "not_utf8", "a_list"])
def test_unreadable_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    path = {"missing": tmp_path / "nope.yaml", "folder": tmp_path}.get(what, tmp_path / "c.yaml")
    if what == "not_utf8":
        path.write_bytes(b"stage: sft\noutput_dir: \xff\xfe\n")
    elif what == "a_list":
        path.write_text("- stage: sft\n")
    assert main(["sft", "--config", str(path)]) == 2
    assert str(path) in one_error_line(capsys, "sft")
    with pytest.raises(ConfigError):
        TrainConfig.from_yaml(path)


def test_a_list_option_is_read_as_yaml() -> None:
    from geovlm.train.config import parse_override

    # list[str] used to be taken for a plain string, which the type check then refused
    assert parse_override(TrainConfig, "lora_target_modules", "[q_proj, v_proj]") == ["q_proj", "v_proj"]
    assert (
        parse_override(TrainConfig, "output_dir", "[not, a, list]") == "[not, a, list]"
    )  # str stays as typed


@pytest.mark.parametrize("entry", ["{path: a.json, image: b}", "{images: b}"])
def test_a_data_source_with_an_unknown_key_is_one_line(entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sft", "--data", f"[{entry}]", "--init-from", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data source" in err and "images, path, weight" in err
    with pytest.raises(ValueError, match="data source"):
        TrainConfig.from_dict({"data": [{"path": "a.json", "image": "b"}]})


def test_quickstart_unknown_family_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--families", "{x: 1}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown x" in err and "four_shapes" in err
    assert not (tmp_path / "q").exists()  # refused before anything ran


def test_an_error_raised_in_a_data_loader_worker_is_one_line() -> None:
    from geovlm.train.cli import error_message

    wrapped = ValueError("Caught DataQualityError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                         "call last):\n  File \"x.py\", line 1, in f\n    raise X\ngeovlm.data.skips.DataQualityError: "
                         "7 of 36 samples (19.4%) were unusable")
    assert error_message(wrapped) == "7 of 36 samples (19.4%) were unusable"
    assert error_message(ValueError("plain")) == "plain"
