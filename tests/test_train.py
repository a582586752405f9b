"""Training: what each stage changes, LoRA save/load, resume, interrupted checkpoints, configs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import TrainerCallback, set_seed

from geovlm import GeoVLM, load_pretrained
from geovlm.data.sources import DataSource
from geovlm.modeling.special_tokens import (
    IM_END_ID,
    IM_START_ID,
    IMAGE_PAD_ID,
    VISION_END_ID,
    VISION_START_ID,
)
from geovlm.train.config import TrainConfig
from geovlm.train.run import build_model, train
from geovlm.train.trainer import COMPLETE_MARKER, GeoVLMTrainer, last_complete_checkpoint
from training_callbacks import StopAt

pytestmark = pytest.mark.integration

SHAPES = {"triangle": 3, "square": 4, "pentagon": 5}


def write_corpus(root: Path, n: int = 12) -> Path:
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        name, sides = list(SHAPES.items())[i % 3]
        image = Image.new("RGB", (96, 96), "white")

        points = [(48 + 36 * math.cos(2 * math.pi * k / sides), 48 + 36 * math.sin(2 * math.pi * k / sides))
                  for k in range(sides)]
        ImageDraw.Draw(image).polygon(points, outline="black", width=3)
        image.save(root / "images" / f"{i}.png")
        records.append({"id": str(i), "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich shape is drawn?"},
            {"from": "gpt", "value": f"A {name}.\nAnswer:{'ABC'[i % 3]}"}]})
    path = root / "train.json"
    path.write_text(json.dumps(records))
    return path


def config_for(tmp_path: Path, **overrides) -> TrainConfig:
    data = write_corpus(tmp_path / "data") if not (tmp_path / "data").exists() else tmp_path / "data" / "train.json"
    fields = dict(stage="pretrain", preset="tiny", data=[DataSource(path=str(data))], max_steps=2,
                  per_device_batch_size=2, learning_rate=1e-2, warmup_steps=0.0, logging_steps=1,
                  save_steps=1000, report_to="none", num_workers=0, progress_bar=False,
                  output_dir=str(tmp_path / "out"), max_length=128)
    fields.update(overrides)
    return TrainConfig(**fields)


def initial_state(config: TrainConfig) -> dict[str, torch.Tensor]:
    set_seed(config.seed)
    model, _ = build_model(config)
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed_parameters(before: dict[str, torch.Tensor], folder: Path) -> set[str]:
    after = GeoVLM.from_pretrained(folder).state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def test_stage1_changes_only_the_projector(tmp_path):
    config = config_for(tmp_path)
    before = initial_state(config)
    out = train(config)
    changed = changed_parameters(before, out)
    assert changed == {k for k in before if k.startswith("model.projector.")}


def test_stage2_last_n_changes_exactly_projector_and_those_layers(tmp_path):
    stage1 = train(config_for(tmp_path, output_dir=str(tmp_path / "stage1")))
    config = config_for(tmp_path, stage="sft", init_from=str(stage1), preset=None, lm_trainable="last_n",
                        lm_last_n_layers=1, output_dir=str(tmp_path / "stage2"))
    before = GeoVLM.from_pretrained(stage1).state_dict()
    changed = changed_parameters(before, Path(train(config)))
    expected = {k for k in before if k.startswith(("model.projector.", "model.language_model.layers.1.",
                                                   "model.language_model.norm."))}
    assert changed == expected


def test_lora_merged_and_adapter_folders_reload_to_identical_logits(tmp_path):
    stage1 = train(config_for(tmp_path, output_dir=str(tmp_path / "stage1")))
    ids = torch.tensor([[IM_START_ID, 872, 198, VISION_START_ID] + [IMAGE_PAD_ID] * 49 + [VISION_END_ID, 100, IM_END_ID]])
    pixels = torch.randn(1, 3, 224, 224)
    outputs = []
    for merge in (True, False):
        config = config_for(tmp_path, stage="sft", init_from=str(stage1), preset=None, lm_trainable="lora",
                            lora_r=4, lora_merge_on_save=merge, learning_rate=5e-2,
                            output_dir=str(tmp_path / f"lora-{merge}"))
        out = train(config)
        assert (out / "adapter_config.json").exists() != merge
        model, _ = load_pretrained(out)
        with torch.no_grad():
            outputs.append(model(input_ids=ids, pixel_values=pixels).logits)
    base, _ = load_pretrained(stage1)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids, pixel_values=pixels).logits, outputs[0])  # LoRA did train
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_resume_after_interruption_gives_the_same_final_weights(tmp_path):
    common = dict(max_steps=6, save_steps=2, lm_trainable="none")
    straight = train(config_for(tmp_path, output_dir=str(tmp_path / "straight"), **common))
    interrupted = config_for(tmp_path, output_dir=str(tmp_path / "resumed"), **common)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, callbacks=[StopAt(4)])
    assert Path(last_complete_checkpoint(interrupted.output_dir)).name == "checkpoint-4"
    resumed = train(config_for(tmp_path, output_dir=str(tmp_path / "resumed"), resume=True, **common))
    a = GeoVLM.from_pretrained(straight).state_dict()
    b = GeoVLM.from_pretrained(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    config = config_for(tmp_path, max_steps=6, save_steps=2)
    calls = {"n": 0}
    original = GeoVLMTrainer._save_optimizer_and_scheduler

    def failing(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint dies half-written
            raise OSError("disk full (simulated)")
        return original(self, output_dir)

    monkeypatch.setattr(GeoVLMTrainer, "_save_optimizer_and_scheduler", failing)
    with pytest.raises(OSError, match="simulated"):
        train(config)
    out = Path(config.output_dir)
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" / COMPLETE_MARKER).exists()
    last = last_complete_checkpoint(out)
    assert Path(last).name == "checkpoint-2"
    assert not (out / "checkpoint-4").exists() and list(out.glob("incomplete-checkpoint-4-*"))
    GeoVLM.from_pretrained(last)  # loadable
    monkeypatch.undo()
    resumed = config_for(tmp_path, max_steps=6, save_steps=2, resume=True)
    GeoVLM.from_pretrained(train(resumed))


def test_config_round_trips_and_rejects_typos(tmp_path):
    config = config_for(tmp_path, stage="sft", lm_trainable="last_n", learning_rate=2e-5)
    path = tmp_path / "c.yaml"
    config.to_yaml(path)
    assert TrainConfig.from_yaml(path) == config
    with pytest.raises(ValueError, match="unknown config field"):
        TrainConfig.from_dict({"learnig_rate": 1e-3})
    with pytest.raises(ValueError, match="lm_trainable"):
        TrainConfig.from_dict({"stage": "sft", "lm_trainable": "half"})


def test_cli_overrides_and_help(tmp_path, capsys):
    from geovlm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--help"])
    assert exit_info.value.code == 0
    assert "--lm-last-n-layers" in capsys.readouterr().out
    config = config_for(tmp_path)
    assert main(["pretrain", "--preset", "tiny", "--data", config.data[0].path, "--max-steps", "1",
                 "--per-device-batch-size", "2", "--output-dir", str(tmp_path / "cli"), "--report-to", "none",
                 "--num-workers", "0", "--progress-bar", "false"]) == 0
    assert (tmp_path / "cli" / "model.safetensors").exists()
    assert (tmp_path / "cli" / "train_config.yaml").exists()
    card = (tmp_path / "cli" / "README.md").read_text()
    assert "stage 1" in card and "random `tiny` preset" in card and "| projector | 20,608 |" in card
    assert main(["sft", "--config", str(tmp_path / "cli" / "train_config.yaml")]) == 2  # stage mismatch


def test_repo_configs_folder_holds_the_shipped_recipes():
    root = Path(__file__).resolve().parents[1]
    for name in ("pretrain.yaml", "sft.yaml", "deepspeed/zero2.json", "deepspeed/zero3.json"):
        assert (root / "configs" / name).is_file(), name
    assert TrainConfig.from_yaml(root / "configs" / "sft.yaml").stage == "sft"


def test_length_grouped_order_depends_only_on_seed_and_epoch():
    from geovlm.train.trainer import EpochLengthGroupedSampler

    lengths = [5, 80, 12, 40, 33, 7, 64, 21] * 4
    a, b = EpochLengthGroupedSampler(4, lengths, seed=1), EpochLengthGroupedSampler(4, lengths, seed=1)
    torch.manual_seed(123)
    first = list(a)
    torch.manual_seed(999)  # the global RNG must not matter (it differs on resume)
    assert list(b) == first and sorted(first) == list(range(len(lengths)))
    a.set_epoch(1)
    assert list(a) != first


def test_lora_adapters_alone_need_a_base_folder(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        config_for(tmp_path, stage="sft", lm_trainable="lora", lora_merge_on_save=False).validate()


class StepsDone(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps = state.global_step


def corpus_with_missing_images(tmp_path: Path, n: int, missing: int, malformed: int = 0) -> Path:
    data = write_corpus(tmp_path / "data", n)
    for i in range(missing):
        (tmp_path / "data" / "images" / f"{i * (n // max(missing, 1))}.png").unlink()
    records = json.loads(data.read_text()) + [{"id": f"bad{i}"} for i in range(malformed)]  # no conversations
    data.write_text(json.dumps(records))
    return data


def test_a_corpus_past_the_bad_budget_stops_as_soon_as_the_limit_is_unreachable(tmp_path, capsys):
    corpus_with_missing_images(tmp_path, n=40, missing=8)  # 20% bad, limit 5%: > 2 bad of 40 is too many
    steps = StepsDone()
    config = config_for(tmp_path, max_steps=40, max_bad_fraction=0.05)  # 2 epochs of 20 steps
    from geovlm.data.skips import DataQualityError

    with pytest.raises(DataQualityError, match=r"3 of the \d+ samples drawn so far were unusable: more than max_bad_fraction=5% of the 40 this"):
        train(config, callbacks=[steps])
    assert steps.steps < 20  # stopped inside the first epoch, not at its end
    assert not (tmp_path / "out" / "config.json").exists()  # and no final model pretends the run finished


def test_a_corpus_within_the_budget_trains_to_the_end_and_reports_reads_and_draws_apart(tmp_path, capsys):
    corpus_with_missing_images(tmp_path, n=36, missing=1, malformed=1)  # 2 of 37 records bad: 5.4%
    config = config_for(tmp_path, max_steps=16, max_bad_fraction=0.1)
    out = train(config)
    assert (out / "config.json").exists()
    report = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[geovlm] data:")]
    # 37 records in the file, one malformed; 32 samples drawn in 16 steps of 2, the missing image among them
    assert report == [report[0]] and report[0].startswith(
        "[geovlm] data: 1 of 37 records read (2.7%) were unusable: malformed=1"), report
    assert re.search(r"; (1|2) of 32 samples drawn \(\d+\.\d%\) were unusable: missing=\d", report[0]), report


def test_the_cli_says_why_it_stopped_in_one_line(tmp_path, capsys):
    from geovlm.cli import main

    data = corpus_with_missing_images(tmp_path, n=40, missing=8)
    code = main(["pretrain", "--preset", "tiny", "--data", str(data), "--max-steps", "40", "--per-device-batch-size",
                 "2", "--num-workers", "0", "--output-dir", str(tmp_path / "out"), "--report-to", "none",
                 "--max-length", "128", "--max-bad-fraction", "0.05"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    assert "unusable" in line and "training stops now" in line and "geovlm data check" in line
