"""The newcomer's path from the README, in miniature: `geovlm synth --out dataset/Geo170K`, then the
shipped configs/sft.yaml (data: dataset/Geo170K/qa_tuning.json, images: dataset/Geo170K/images) finds
every image, and `geovlm eval --images dataset/Geo170K/images` finds every test image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from geovlm.data.dataset import build_dataset
from geovlm.data.images import load_image
from geovlm.synth.cli import register, run
from geovlm.train.config import DataSource, TrainConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def processor():
    from geovlm import build_tiny

    return build_tiny()[1]


def test_synth_output_is_a_drop_in_geo170k_for_the_sft_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processor
) -> None:
    monkeypatch.chdir(tmp_path)  # the README's relative paths, as a newcomer types them
    parser = argparse.ArgumentParser(prog="geovlm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", "dataset/Geo170K", "--n", "12", "--test-fraction", "0.25",
                              "--workers", "1", "--quiet"])  # fmt: skip
    assert run(args) == 0

    config = TrainConfig.from_yaml(REPO / "configs" / "sft.yaml")  # unchanged: its data entry as shipped
    assert [(s.path, s.images) for s in config.data] == [
        ("dataset/Geo170K/qa_tuning.json", "dataset/Geo170K/images")
    ]
    # The optional caption file, commented out in sft.yaml, with the same image folder.
    config.data.append(DataSource(path="dataset/Geo170K/alignment.json", images="dataset/Geo170K/images"))
    # What geovlm.train.run.build_train_dataset does with a config's data entries.
    dataset = build_dataset([(s.path, s.images or str(Path(s.path).parent), s.weight) for s in config.data],
                            processor, max_length=config.max_length, pad_to_square=config.pad_to_square,
                            seed=config.seed, cache_lengths=False)  # fmt: skip
    assert len(dataset) == 2 * 9 and dataset.load_skips.total == 0
    for i in range(len(dataset)):
        sample = dataset.load(i)  # raises SampleSkipped (e.g. "missing") for an image it cannot find
        assert sample["pixel_values"] is not None and sample["num_images"] == 1

    # The GeoQA-format split: `geovlm eval --images dataset/Geo170K/images` resolves every question.
    images = Path("dataset/Geo170K/images")
    questions = [
        json.loads(line) for line in Path("dataset/Geo170K/test_questions.jsonl").read_text().splitlines()
    ]
    assert len(questions) == 3
    for q in questions:
        load_image(images / q["image"])
