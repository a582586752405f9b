"""`geovlm bench`: the seed-style baselines compute what the seed computed, and the quick run works end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geovlm.bench.common import count_flops
from geovlm.bench.seed_style import seed_generate, seed_logits, seed_loss
from geovlm.bench.workloads import Workload, build_model, conversation_ids
from geovlm.processing.conversation import encode_conversation

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def seq_pair(tokenizer):
    """Tiny model with the seed's sequential merge, so seed-style and GeoVLM code compute one function."""
    model, processor = build_model("tiny", merge_mode="sequential", head_std=0.5)
    return model.eval(), processor


def test_conversation_ids_splice_question_and_answer(seq_pair):
    _, processor = seq_pair
    base = encode_conversation(processor, [{"role": "user", "content": "<image>\nQ"}, {"role": "assistant", "content": "A"}])
    ids, labels = conversation_ids(processor, [1001, 1002, 1003], [2001, 2002])
    assert len(ids) == len(base.input_ids) - 2 + 5 == len(labels)
    supervised = [x for x in labels if x != -100]
    assert supervised[:2] == [2001, 2002] and supervised[2] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(processor.image_token_id) == processor.num_image_tokens


def test_seed_forward_equals_geovlm_forward(seq_pair):
    model, processor = seq_pair
    workload = Workload("stage1", processor, population=8)
    batch = workload.seed_batch([0])  # one row: no padding, so no attention mask is needed by either
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits
        seed = seed_logits(model, batch["input_ids"], batch["pixel_values"])
    torch.testing.assert_close(seed, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.integration  # builds two models and runs both collators: make test runs it
def test_seed_batches_shift_labels_and_pad_with_the_pad_id(seq_pair):
    _, processor = seq_pair
    workload = Workload("stage2", processor, population=16)
    pad = processor.tokenizer.pad_token_id
    seed, geo = workload.seed_batch([0, 1, 2]), workload.geovlm_batch([0, 1, 2])
    assert "attention_mask" not in seed and seed["input_ids"].shape[1] == geo["input_ids"].shape[1] - 1
    for row in range(3):
        n = int(geo["attention_mask"][row].sum())
        assert seed["input_ids"][row, : n - 1].tolist() == geo["input_ids"][row, : n - 1].tolist()
        target = geo["labels"][row, 1:n].clone()
        target[target == -100] = pad  # the seed marks unsupervised positions with the pad id
        assert seed["labels"][row, : n - 1].tolist() == target.tolist()
        assert (seed["labels"][row, n - 1 :] == pad).all()
    # The seed's loss runs over every position; both losses are finite numbers.
    model, _ = seq_pair
    with torch.no_grad():
        assert torch.isfinite(seed_loss(model, seed, pad))
        assert torch.isfinite(model(**geo).loss)


def test_length_grouping_pads_less_than_random_batches(seq_pair):
    _, processor = seq_pair
    workload = Workload("stage1", processor, population=200)
    _, grouped = workload.median_batch(4, grouped=True)
    _, random_order = workload.median_batch(4, grouped=False)
    assert grouped["padding_fraction"] < random_order["padding_fraction"]
    assert 8 + 80 < random_order["mean_real_tokens_per_sample"] < 60 + 100  # caption + prompt framing


def test_seed_loop_matches_generate(seq_pair):
    model, processor = seq_pair
    workload = Workload("stage1", processor, population=4)
    ids = workload.sample(0)["input_ids"][None, :-8]
    pixels = workload.pixel_values(1, 0)
    eos = [processor.tokenizer.convert_tokens_to_ids("<|im_end|>"), processor.tokenizer.eos_token_id]
    ours = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=6, min_new_tokens=6, do_sample=False)[:, ids.shape[1]:]
    assert seed_generate(model, ids, pixels, 6, suppress_ids=eos).tolist() == ours.tolist()


def test_flop_counter_counts_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with count_flops() as flops:
        a @ b
    assert flops["total"] == 2 * 8 * 16 * 4


@pytest.mark.integration
def test_quick_run_writes_every_section(tmp_path):
    """The whole `--quick` run, as a user starts it (training variants in their own processes)."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-m", "geovlm.bench.run", "--quick", "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for section in ("meta", "roofline", "stage1", "stage2", "generation", "eval", "data", "targets"):
        assert section in results, section
    for stage in ("stage1", "stage2"):
        for variant in ("geovlm", "seed"):
            v = results[stage][variant]
            assert v["seconds_per_step"] > 0 and v["memory"]["peak_bytes"] > 0 and v["flops_per_step"] > 0
            assert len(v["probe_flops_per_s"]) == len(v["times"]) and min(v["probe_flops_per_s"]) > 0
        assert results[stage]["ratios"]["time"] > 0
    generation = results["generation"]
    assert generation["agreement_checked"] and generation["greedy_agree"]
    assert len(generation["output_ids"]) == generation["new_tokens"]
    assert {(row["preset"], row["batch_size"]) for row in results["eval"]} >= {("tiny", 1), ("tiny", 4), ("tiny", 16)}
    assert {row["workers"] for row in results["data"]["rows"]} == {0, 2}
    assert "GeoVLM / seed" in proc.stdout and "greedy outputs identical: True" in proc.stdout


def test_bench_subcommand_parses():
    import argparse

    from geovlm.bench import cli

    parser = argparse.ArgumentParser(prog="geovlm")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--quick", "--json", "out.json", "--sections", "stage1,generation"])
    assert args.quick and args.json == "out.json" and args.func is cli.run


def test_settings_come_from_the_options_without_writing_back_into_them():
    import argparse

    from geovlm.bench.cli import add_arguments
    from geovlm.bench.run import settings_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--device", "cpu", "--reps", "3", "--sections", "stage1"])
    settings = settings_from_args(args)
    assert (settings.reps, settings.stage2_reps, settings.sections) == (3, 3, ["stage1"])
    assert args.stage2_reps is None  # the parsed options stay what the user typed
    args = parser.parse_args(["--quick", "--device", "cpu", "--reps", "3", "--stage2-reps", "1"])
    assert settings_from_args(args).stage2_reps == 1


def test_weight_bytes_counts_what_is_stored(tiny_pair):
    """Against the plain sum: fp32 and bf16 by dtype; int8 (torchao) by its int8 data and scales, so each
    quantized linear weight costs a quarter of its fp32 bytes (plus one scale per row) and the bf16
    vocabulary tables half."""
    import copy

    from geovlm.bench.common import weight_bytes
    from geovlm.precision import quantize_in_place

    model, _ = tiny_pair
    unique = {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
    plain = sum(t.numel() * t.element_size() for t in unique)
    assert weight_bytes(model) == plain
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert weight_bytes(half) == sum(t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in unique)
    pytest.importorskip("torchao")
    int8 = copy.deepcopy(model)
    quantize_in_place(int8, "int8")
    quantized = [name for name, m in int8.named_modules() if "Int8" in type(getattr(m, "weight", None)).__name__]
    linears = [m for name, m in model.named_modules() if name in quantized]
    assert linears and all(isinstance(m, torch.nn.Linear) for m in linears)
    weights = sum(m.weight.numel() for m in linears)
    rows = sum(m.weight.shape[0] for m in linears)
    tables = {id(t): t for t in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}.values()
    halved = sum(t.numel() * 2 for t in tables)
    scales = weight_bytes(int8) - (plain - 3 * weights - halved)  # what the scales (and any zero points) add
    assert 0 < scales <= 8 * rows


@pytest.mark.integration
def test_the_precision_section_compares_every_weight_format(tmp_path, capsys):
    """`geovlm bench --quick --sections precision`: fp32, bf16, bf16 weights and int8 side by side, each with
    its prompt/decoding-step split, its greedy tokens and logits against fp32's, and its weight memory."""
    pytest.importorskip("torchao")
    from geovlm.cli import main as cli_main

    out = tmp_path / "precision.json"
    assert cli_main(["bench", "--quick", "--sections", "precision", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["precision"]["rows"]
    assert list(rows) == ["fp32", "bf16", "bf16 weights", "int8"]
    assert rows["fp32"]["greedy_equal_to_fp32"] and rows["fp32"]["max_abs_logit_diff"] == 0
    for name, row in rows.items():
        assert 0 < row["prompt_seconds"] < row["seconds"] and row["step_ms"] > 0, name
        assert row["max_abs_logit_diff"] <= 0.05 * row["logit_scale"], name
    # the tiny model is mostly its vocabulary tables, which every reduced format stores in 16 bits or fewer
    assert all(rows[name]["memory_vs_fp32"] <= 0.55 for name in ("bf16", "bf16 weights", "int8"))
    assert "step ms" in capsys.readouterr().out
