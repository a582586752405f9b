"""`geovlm convert` (and `geovlm ask` on a seed folder) with broken seed checkpoints and output paths: one
line each, and nothing of the user's is deleted (issue #24, item 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from geovlm.cli import main as cli_main
from test_checkpoints import save_seed_checkpoint

pytestmark = pytest.mark.integration  # seed checkpoints converted and loaded through the CLI


@pytest.fixture
def seed_dir(tmp_path, tokenizer) -> Path:
    return save_seed_checkpoint(tmp_path, tokenizer)[0]


def one_line_error(capsys, argv: list[str], command: str) -> str:
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"geovlm {command}: error:"), err
    return err


def ask_argv(tmp_path: Path, folder: Path) -> list[str]:
    image = tmp_path / "d.png"
    Image.new("RGB", (32, 32), "white").save(image)
    return ["ask", str(folder), str(image), "Find x."]


def rewrite_weights(seed_dir: Path, edit) -> None:
    weights = seed_dir / "model.safetensors"
    state = load_file(weights)
    edit(state)
    save_file(state, weights)


@pytest.mark.parametrize("command", ["convert", "ask"])
def test_seed_weights_without_the_projector_are_one_line(seed_dir, tmp_path, capsys, command):
    rewrite_weights(seed_dir, lambda s: [s.pop(k) for k in ("linear1.weight", "linear1.bias")])
    argv = ["convert", str(seed_dir), str(tmp_path / "out")] if command == "convert" else ask_argv(tmp_path, seed_dir)
    err = one_line_error(capsys, argv, command)
    assert "linear1.weight" in err and "model.safetensors" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, shape", [
    ("linear2.weight", (64, 65)),
    ("linear1.weight", (64, 4 * 64 + 1)),  # not a whole number of vision features
    ("llm_model.model.layers.0.mlp.up_proj.weight", (129, 64)),
], ids=["projector", "merge-width", "language-model"])
def test_a_seed_tensor_of_the_wrong_shape_is_one_line(seed_dir, tmp_path, capsys, key, shape):
    import torch

    rewrite_weights(seed_dir, lambda s: s.update({key: torch.zeros(shape)}))
    err = one_line_error(capsys, ["convert", str(seed_dir), str(tmp_path / "out")], "convert")
    assert key in err or "linear1 input width" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["[1]", "{not json", '"vlm_model"'])
def test_a_seed_config_that_is_not_a_json_object_is_one_line(tmp_path, capsys, text):
    folder = tmp_path / "seed"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    err = one_line_error(capsys, ["convert", str(folder), str(tmp_path / "out")], "convert")
    assert "config.json" in err, err
    one_line_error(capsys, ask_argv(tmp_path, folder), "ask")


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("target_kind", ["full", "empty", "dangling"])
def test_an_output_folder_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path, capsys, overwrite, target_kind):
    # Refused before the seed folder is read, so a bare one does (the conversion would fail differently).
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / "config.json").write_text(json.dumps({"model_type": "vlm_model"}))
    target = tmp_path / "elsewhere"
    if target_kind != "dangling":
        target.mkdir()
    if target_kind == "full":
        (target / "notes.txt").write_text("mine")
    link = tmp_path / "out"
    link.symlink_to(target, target_is_directory=True)
    argv = ["convert", str(seed_dir), str(link)] + (["--overwrite"] if overwrite else [])
    err = one_line_error(capsys, argv, "convert")
    assert "symbolic link" in err and str(target) in err, err
    assert link.is_symlink() and link.readlink() == target
    if target_kind == "full":
        assert (target / "notes.txt").read_text() == "mine" and len(list(target.iterdir())) == 1
    elif target_kind == "empty":
        assert not any(target.iterdir())
    else:
        assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out-")] == [], "no staging folder left"


def test_the_intact_seed_checkpoint_still_converts_and_loads(seed_dir, tmp_path, capsys):
    # The header checks accept what the seed code writes (the tied lm_head it omits included).
    out = tmp_path / "out"
    assert cli_main(["convert", str(seed_dir), str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["merge_mode"] == "sequential" and config["merge_factor"] == 4
