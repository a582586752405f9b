"""DeepSpeed ZeRO-2/3 for real: two gloo processes on the CPU, the tiny model, the fast loss path on.

One torchrun launch (tests/deepspeed_worker.py) makes every run of this file: sft with DDP, ZeRO-2 and ZeRO-3
from the same seed and global batch (per-part learning rates, weight decay, gradient accumulation 2), a ZeRO-3
run stopped at a checkpoint and resumed, LoRA with DDP and ZeRO-2, and GRPO (`geovlm rl`, through TRL) with
DDP, ZeRO-2 and ZeRO-3. The assertions then read the folders. Tolerances: ZeRO-2 ends within 1e-5 of DDP
(measured 5e-7; LoRA 1.3e-7), ZeRO-3 within 5e-5 (measured 1.2e-5 after 4 steps at lr 1e-2 and 3e-2: it takes
the plain loss, its LM head being partitioned, and reduces gradients in another order); a ZeRO-3 folder
reloads to exactly the trained weights (same logits, rtol=atol=0), and a resumed ZeRO-3 run ends where the
uninterrupted one ends (exactly).

GRPO: 2 steps, each of 2 prompts x 2 replies per process, gradient accumulation 2, lr 1e-2, no weight decay
(so only gradients move weights), and a reward of reply length, which varies within groups (accuracy would be
0 everywhere: no advantage, no gradient). The logged loss is ~1e-7 all the same (on-policy, with every reply
cut at 8 tokens, it is the sum of each group's advantages: 0), so grad_norm (~20) and the weights are checked,
not the loss. Sampling needs no special settings: TRL seeds each process (seed + rank) when the trainer is
made, neither DDP nor DeepSpeed draws from that generator before generation, and ZeRO-3 gathers the full
weights to generate, so the engines sample the same replies; the test checks it (same rewards at every step).
The trained weights move by 1.5e-2 (each of the 17 trained tensors); ZeRO-2 ends within 1e-5 of DDP (measured
2.6e-6), ZeRO-3 within 2e-5 (measured 4.2e-6; Adam's first steps amplify the last bits of near-zero
gradients); grad norms agree to 4e-7 relative. The rl runs add ~20 s to the launch.

DeepSpeed JIT-compiles its shared-memory op with g++ whenever the process group starts (~55 s cold); the
build is cached in TORCH_EXTENSIONS_DIR, here ~/.cache/geovlm/torch_extensions unless set."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import free_port
from geovlm import GeoVLM, load_pretrained
from geovlm.modeling.special_tokens import (
    IM_END_ID,
    IM_START_ID,
    IMAGE_PAD_ID,
    VISION_END_ID,
    VISION_START_ID,
)
from test_train import write_corpus

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("deepspeed_worker.py")
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "geovlm" / "configs" / "deepspeed"
EXTENSIONS = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "geovlm" / "torch_extensions")


def _needs_deepspeed() -> None:
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (DS_BUILD_OPS=0 pip install -e '.[dev]')")
    if shutil.which("g++") is None:
        pytest.skip("DeepSpeed's CPU communication op is compiled with g++, which is not installed")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this file, made in one torchrun launch; {name: output folder}."""
    _needs_deepspeed()
    root = tmp_path_factory.mktemp("deepspeed")
    data = write_corpus(root / "data", n=16)
    common = dict(stage="sft", preset="tiny", data=str(data), lm_trainable="last_n", lm_last_n_layers=1,
                  max_steps=4, save_steps=2, per_device_batch_size=1, gradient_accumulation_steps=2,
                  learning_rate=1e-2, projector_lr=3e-2, weight_decay=0.1, warmup_steps=0.0,
                  train_sampling_strategy="sequential", report_to="none", num_workers=0, progress_bar=False,
                  logging_steps=1, max_length=128)
    # lr 1e-2: at 5e-2 AdamW's first steps on the zero-initialised LoRA B amplify the last bits of the
    # gradients, and two correct runs part by 3e-4.
    lora = dict(common, lm_trainable="lora", lora_r=4)
    pretrain = dict(common, stage="pretrain", lm_trainable="none")  # stage 1: the projector alone
    zero2, zero3 = str(CONFIGS / "zero2.json"), str(CONFIGS / "zero3.json")
    plan = [
        dict(name="ddp", fields=common),
        dict(name="zero2", fields=common, deepspeed=zero2),
        dict(name="lora-ddp", fields=lora),
        dict(name="lora-zero2", fields=lora, deepspeed=zero2),
        dict(name="pretrain-ddp", fields=pretrain),
        dict(name="pretrain-zero3", fields=pretrain, deepspeed=zero3),
        dict(name="zero3", fields=common, deepspeed=zero3, state_out=str(root / "zero3-state.pt")),
        dict(name="zero3-resumed", fields=common, deepspeed=zero3, stop_at=2),
        *rl_runs(root),
        # Through the command line, as the README has it (the shipped config found by its path in a checkout,
        # from a folder that has no configs/).
        dict(name="zero3-resumed", fields=dict(common, resume=True), deepspeed="configs/deepspeed/zero3.json",
             cli=True),
    ]
    for run in plan:
        run["out"] = str(root / run.pop("name"))
    (root / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TORCH_EXTENSIONS_DIR": EXTENSIONS}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), str(root / "plan.json")],
        env=env, cwd=root, capture_output=True, text=True, timeout=900)
    print(f"deepspeed worker: {time.perf_counter() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    log = result.stdout + result.stderr
    (root / "worker.log").write_text(log)
    return {Path(run["out"]).name: Path(run["out"]) for run in plan} | {"root": root, "log": log}


def rl_runs(root: Path) -> list[dict]:
    """GRPO (stage 3, through TRL) with DDP, ZeRO-2 and ZeRO-3 from the same starting folder and seed; none
    without TRL. The reward is the replies' length: a random model's replies are never right (accuracy 0
    everywhere: no advantage, no gradient), but their lengths differ within each group."""
    if importlib.util.find_spec("trl") is None:
        return []
    from geovlm import build_tiny
    from geovlm.synth import write_dataset

    write_dataset(root / "rl-data", 8, seed=0, family="four_shapes", size=64, progress=False, workers=1,
                  test_fraction=0.0)
    torch.manual_seed(0)
    model, processor = build_tiny(head_std=0.5)  # a sharpened head: replies of varied tokens
    model.save_pretrained(root / "rl-init")
    processor.save_pretrained(root / "rl-init")
    rl = dict(stage="rl", init_from=str(root / "rl-init"), data=[{
        "path": str(root / "rl-data" / "qa_tuning.json"), "images": str(root / "rl-data" / "images")}],
        rewards={"rl_test_rewards:characters": 1.0}, lm_trainable="last_n", lm_last_n_layers=1, max_steps=2,
        save_steps=2, per_device_batch_size=2, gradient_accumulation_steps=2, num_generations=2,
        max_completion_length=8, learning_rate=1e-2, weight_decay=0.0,  # no decay: only gradients move weights
        warmup_steps=0.0, precision="fp32", activation_checkpointing=False, report_to="none", num_workers=0,
        progress_bar=False, logging_steps=1)
    return [
        dict(name="rl-ddp", fields=rl),
        dict(name="rl-zero2", fields=rl, deepspeed=str(CONFIGS / "zero2.json")),
        dict(name="rl-zero3", fields=rl, deepspeed=str(CONFIGS / "zero3.json"), state_out=str(root / "rl-zero3-state.pt")),
    ]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return GeoVLM.from_pretrained(folder).state_dict()


def saved_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())  # noqa: SIM118 (not a dict)


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


def batch() -> dict[str, torch.Tensor]:
    ids = [IM_START_ID, 872, 198, VISION_START_ID] + [IMAGE_PAD_ID] * 49 + [VISION_END_ID, 100, 4, IM_END_ID]
    return {"input_ids": torch.tensor([ids]), "pixel_values": torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))}


def test_zero2_and_zero3_end_where_ddp_ends(runs):
    ddp = weights(runs["ddp"])
    initial = GeoVLM.from_pretrained(runs["ddp"] / "checkpoint-2").state_dict()
    # The weights moved between the checkpoint at step 2 and the end (agreement is not of untouched copies).
    for key in ("model.projector.linear_1.weight", "model.language_model.layers.1.mlp.up_proj.weight"):
        assert not torch.equal(initial[key], ddp[key]), key
    assert_same_weights(weights(runs["zero2"]), ddp, atol=1e-5)
    assert_same_weights(weights(runs["zero3"]), ddp, atol=5e-5)
    # The files hold what DDP's hold: tied embeddings once (the Trainer's ZeRO-2 save would write them twice).
    for name in ("zero2", "zero3", "lora-zero2"):
        assert saved_keys(runs[name]) == saved_keys(runs["ddp"]), name
    # The fast loss ran under ZeRO-2 and stepped aside under ZeRO-3, with one line per process and run
    # (four ZeRO-3 runs: pretrain-zero3, zero3, and zero3-resumed stopped then resumed; two processes each).
    assert runs["log"].count("the LM head's weight is partitioned") == 4 * 2


def test_stage1_under_zero3_ends_where_ddp_ends(runs):
    ddp, zero3 = weights(runs["pretrain-ddp"]), weights(runs["pretrain-zero3"])
    start = weights(runs["pretrain-ddp"] / "checkpoint-2")
    assert not torch.equal(start["model.projector.linear_1.weight"], ddp["model.projector.linear_1.weight"])
    for key in ddp:  # only the projector trains in stage 1
        if not key.startswith("model.projector."):
            assert torch.equal(ddp[key], start[key]), key
    assert_same_weights(zero3, ddp, atol=5e-5)


def test_zero3_folder_is_a_normal_folder_with_the_trained_weights(runs):
    from transformers import AutoModelForImageTextToText

    folder = runs["zero3"]
    assert not any(folder.glob("*.pt")) and (folder / "config.json").is_file()
    trained = torch.load(runs["root"] / "zero3-state.pt")
    model, _ = load_pretrained(folder)
    reference = GeoVLM(model.config)
    reference.load_state_dict(trained)
    auto = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    inputs = batch()
    with torch.no_grad():
        expected = reference.eval()(**inputs).logits
        torch.testing.assert_close(model.eval()(**inputs).logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(auto.eval()(**inputs).logits, expected, rtol=0, atol=0)


def test_zero3_resume_ends_where_the_uninterrupted_run_ends(runs):
    assert "resuming from" in runs["log"] and "checkpoint-2" in runs["log"]
    assert_same_weights(weights(runs["zero3-resumed"]), weights(runs["zero3"]), atol=0)


def test_lora_under_zero2_ends_where_ddp_ends(runs):
    merged = weights(runs["lora-zero2"])
    assert not (runs["lora-zero2"] / "adapter_config.json").exists()  # merged on save
    assert not torch.equal(merged["model.language_model.layers.0.self_attn.q_proj.weight"],
                           weights(runs["ddp"] / "checkpoint-2")["model.language_model.layers.0.self_attn.q_proj.weight"])
    assert_same_weights(merged, weights(runs["lora-ddp"]), atol=1e-5)


def rl_history(folder: Path) -> list[dict]:
    return [h for h in json.loads((folder / "log_history.json").read_text()) if "reward" in h]


def test_rl_under_zero2_and_zero3_ends_where_ddp_ends(runs):
    if "rl-ddp" not in runs:
        pytest.skip("TRL is not installed (pip install -e '.[rl]')")
    start, ddp = weights(runs["root"] / "rl-init"), weights(runs["rl-ddp"])
    # GRPO had something to learn from: rewards varied within groups (non-zero advantages) and the
    # gradients were not zero (with weight decay 0, only gradients move the weights).
    history = rl_history(runs["rl-ddp"])
    assert len(history) == 2, history
    # (A group of two replies of the same length has no variance: measured 0 and 1/4 of the groups.)
    assert all(h["reward_std"] > 0 and h["frac_reward_zero_std"] < 1 and h["grad_norm"] > 1 for h in history), history
    moved = {k for k in ddp if not torch.equal(ddp[k], start[k])}
    assert any(k.startswith("model.projector.") for k in moved)
    assert any(k.startswith("model.language_model.layers.1.") for k in moved)
    assert not any(k.startswith("model.language_model.layers.0.") for k in moved)  # recipe: last layer only
    assert min((ddp[k] - start[k]).abs().max().item() for k in moved) > 1e-2  # ~lr per step (measured 1.5e-2)
    for name in ("rl-zero2", "rl-zero3"):
        # The same replies were sampled (same rewards at every step), so the runs can be compared.
        assert [(h["reward"], h["reward_std"]) for h in rl_history(runs[name])] == \
            [(h["reward"], h["reward_std"]) for h in history], name
        assert [h["grad_norm"] for h in rl_history(runs[name])] == \
            pytest.approx([h["grad_norm"] for h in history], rel=1e-5), name
        trained = weights(runs[name])
        assert {k for k in trained if not torch.equal(trained[k], start[k])} == moved, name
        assert_same_weights(trained, ddp, atol=1e-5 if name == "rl-zero2" else 2e-5)


def test_rl_zero3_folder_reloads_to_the_trained_weights(runs):
    if "rl-ddp" not in runs:
        pytest.skip("TRL is not installed (pip install -e '.[rl]')")
    from PIL import Image

    from geovlm.serve.chat import answer

    trained = torch.load(runs["root"] / "rl-zero3-state.pt")
    model, processor = load_pretrained(runs["rl-zero3"])
    assert_same_weights(model.state_dict(), trained, atol=0)
    assert load_pretrained(runs["rl-zero2"])[0].state_dict().keys() == trained.keys()
    image = Image.open(next((runs["root"] / "rl-data" / "images").iterdir()))
    assert isinstance(answer(model, processor, [image], ["Which shape?"], max_new_tokens=2)[0], str)
    assert "stage 3" in (runs["rl-zero3"] / "README.md").read_text()


# ---------------------------------------------------------------------- refusals, no launch


def test_shipped_deepspeed_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from geovlm.train.config import TrainConfig
    from geovlm.train.run import deepspeed_config_path, zero_stage

    monkeypatch.chdir(tmp_path)  # no configs/ here: the package's copies are used
    for name, stage in (("configs/deepspeed/zero2.json", 2), ("zero3", 3)):
        path = Path(deepspeed_config_path(name))
        assert path.is_file() and path.name == f"zero{stage}.json"
        assert zero_stage(TrainConfig(deepspeed=name)) == stage
    with pytest.raises(ValueError, match="no such config file"):
        deepspeed_config_path("zero9.json")


def test_fsdp_on_cpu_is_refused_in_one_line(tmp_path, monkeypatch):
    from geovlm.train.config import TrainConfig
    from geovlm.train.run import train

    if torch.cuda.is_available():
        pytest.skip("on GPUs accelerate does attach FSDP")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    with pytest.raises(ValueError, match="FSDP needs GPUs") as err:
        train(TrainConfig(preset="tiny", output_dir=str(tmp_path / "out")))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_zero3_refusals_come_before_the_run(tmp_path):
    from geovlm.train.config import TrainConfig
    from geovlm.train.run import check_parallelism

    pytest.importorskip("deepspeed")
    with pytest.raises(ValueError, match="merging LoRA under ZeRO-3"):
        check_parallelism(TrainConfig(stage="sft", lm_trainable="lora", deepspeed="zero3"))
    check_parallelism(TrainConfig(stage="sft", lm_trainable="lora", lora_merge_on_save=False, init_from="x",
                                  deepspeed="zero3"))
    settings = json.loads((CONFIGS / "zero3.json").read_text())
    settings["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = False
    (tmp_path / "z3.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="stage3_gather_16bit_weights_on_model_save"):
        check_parallelism(TrainConfig(deepspeed=str(tmp_path / "z3.json")))
