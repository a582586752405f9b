"""A training run never replaces another run's folder without --overwrite, and --resume continues
only a run of the same stage, data and model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from geovlm.cli import main as cli_main
from geovlm.train.config import DataSource, TrainConfig
from geovlm.train.output_dir import LOCK_FILE, RunLock, claim_output_dir, clear_previous_run
from geovlm.train.trainer import COMPLETE_MARKER


def config(out, **overrides) -> TrainConfig:
    values = dict(stage="sft", init_from="save/pretrain", data=[DataSource(path="a.json", images="imgs")],
                  lm_trainable="last_n", output_dir=str(out))
    return TrainConfig(**{**values, **overrides})


def finished_run(out, cfg: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")
    cfg.to_yaml(out / "train_config.yaml")
    for step, complete in ((100, True), (200, True), (300, False)):
        folder = out / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / COMPLETE_MARKER).write_text(str(step))


def test_an_empty_or_missing_folder_is_taken(tmp_path):
    assert claim_output_dir(config(tmp_path / "new")) is None
    (tmp_path / "empty").mkdir()
    assert claim_output_dir(config(tmp_path / "empty")) is None


def test_a_finished_run_is_not_replaced_without_a_flag(tmp_path):
    out = tmp_path / "run"
    finished_run(out, config(out))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match="--resume .* --overwrite"):
        claim_output_dir(config(out))
    assert sorted(p.name for p in out.iterdir()) == before


def test_overwrite_clears_the_old_run_only_when_asked_to(tmp_path):
    out = tmp_path / "run"
    finished_run(out, config(out))
    before = sorted(p.name for p in out.iterdir())
    assert claim_output_dir(config(out, overwrite=True)) is None
    assert sorted(p.name for p in out.iterdir()) == before  # nothing goes before the starting model is loaded
    clear_previous_run(config(out, overwrite=True))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("where", ["is", "inside", "holds"])
def test_the_starting_model_is_never_the_output(tmp_path, capsys, where):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "my-notes.txt").write_text("mine")
    out = {"is": model, "inside": model / "sub", "holds": tmp_path}[where]
    code = cli_main(["sft", "--init-from", str(model), "--data", str(tmp_path / "elsewhere" / "d.json"),
                     "--output-dir", str(out), "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "init_from" in err and "outside it" in err, err
    assert (model / "my-notes.txt").read_text() == "mine" and (model / "config.json").exists()


def test_the_data_is_never_inside_the_output(tmp_path):
    data = tmp_path / "run" / "train.json"
    with pytest.raises(ValueError, match="holds the data"):
        claim_output_dir(config(tmp_path / "run", data=[DataSource(path=str(data), images=str(tmp_path / "imgs"))]))
    with pytest.raises(ValueError, match="is the data images"):
        claim_output_dir(config(tmp_path / "imgs", data=[DataSource(path="a.json", images=str(tmp_path / "imgs"))]))


HOLD_LOCK = """
import sys, time
from geovlm.train.output_dir import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.integration  # a second process holds the lock
def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = cli_main(["sft", "--preset", "tiny", "--data", str(tmp_path / "d.json"), "--output-dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and f"in use by another run (pid {holder.pid})" in err, err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the second run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing it: the OS did, and the folder can be claimed again.
    lock = RunLock(out).acquire()
    lock.release()
    assert list(out.iterdir()) == []


def test_resume_continues_the_same_run_from_its_last_complete_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    finished_run(out, config(out, learning_rate=1e-5))
    resumed = claim_output_dir(config(out, resume=True, learning_rate=3e-5, max_steps=900))  # lr/steps may change
    assert resumed == str(out / "checkpoint-200")
    assert "resuming from" in capsys.readouterr().out
    assert not (out / "checkpoint-300").exists()  # the incomplete one was set aside, not deleted
    assert any(p.name.startswith("incomplete-checkpoint-300") for p in out.iterdir())


@pytest.mark.parametrize("field,value", [("stage", "pretrain"), ("data", [DataSource(path="other.json")]),
                                         ("init_from", "save/other"), ("lm_trainable", "all")])
def test_resume_refuses_another_runs_folder(tmp_path, field, value):
    out = tmp_path / "run"
    finished_run(out, config(out))
    overrides = {field: value, "resume": True}
    if field == "stage":
        overrides["lm_trainable"] = "none"
    with pytest.raises(ValueError, match=f"its run has {field}="):
        claim_output_dir(config(out, **overrides))


def test_resume_refuses_a_folder_that_is_not_a_geovlm_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="no readable train_config.yaml"):
        claim_output_dir(config(out, resume=True))
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig.from_dict({"output_dir": str(tmp_path), "resume": True, "overwrite": True})


def test_the_cli_refuses_before_building_anything(tmp_path, capsys):
    out = tmp_path / "run"
    finished_run(out, config(out))
    code = cli_main(["sft", "--init-from", str(tmp_path / "nowhere"), "--data", str(tmp_path / "none.json"),
                     "--output-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--overwrite" in err
    assert (out / "model.safetensors").read_bytes() == b"weights"


def test_a_starting_model_that_cannot_be_loaded_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    code = cli_main(["sft", "--init-from", "/nonexistent/model", "--data", str(tmp_path / "d.json"),
                     "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cannot load init_from '/nonexistent/model'" in err, err
    assert not (tmp_path / "out").exists()
