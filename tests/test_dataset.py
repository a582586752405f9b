"""Tests for the training data path: GeoVLMDataset, skip accounting, sources and mixing, the collator."""

from __future__ import annotations

import json
import logging
import math
import pickle
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from geovlm.constants import IGNORE_INDEX
from geovlm.data.collator import GeoVLMCollator
from geovlm.data.dataset import build_dataset
from geovlm.data.encoding import encode_record, min_keep_length
from geovlm.data.records import RecordError, parse_record
from geovlm.data.skips import (
    MALFORMED,
    SKIP_REASONS,
    TOO_LONG,
    DataQualityError,
    SampleSkipped,
    SkipCounter,
    SkipRecord,
)
from geovlm.data.sources import DataSource
from geovlm.modeling.special_tokens import IM_END_ID, IMAGE_PAD_ID, VISION_END_ID, VISION_START_ID
from geovlm.processing.conversation import encode_conversation

IMAGE_PAD, VISION_START, VISION_END, IM_END = IMAGE_PAD_ID, VISION_START_ID, VISION_END_ID, IM_END_ID
N_IMAGE_TOKENS = 49  # tiny preset


# --- fixture writers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor(tokenizer: Any) -> Any:
    from geovlm import GeoVLMConfig
    from geovlm.processing.build import processor_for

    return processor_for(GeoVLMConfig.from_preset("tiny"), tokenizer)


def png_bytes(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    import io

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(root: Path, name: str, data: bytes | None = None) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(png_bytes() if data is None else data)
    return name


def rec(record_id: str, image: str | None, *values: str, roles: tuple[str, ...] = ()) -> dict[str, Any]:
    """A LLaVA record; turns alternate human/gpt unless ``roles`` says otherwise."""
    roles = roles or tuple("human" if i % 2 == 0 else "gpt" for i in range(len(values)))
    turns = [{"from": r, "value": v} for r, v in zip(roles, values, strict=True)]
    out: dict[str, Any] = {"id": record_id, "conversations": turns}
    if image is not None:
        out["image"] = image
    return out


def write_corpus(folder: Path, records: list[Any], name: str = "data.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def make_dataset(tmp: Path, records: list[Any], processor: Any, **kwargs: Any) -> Any:
    data = write_corpus(tmp, records)
    kwargs.setdefault("cache_dir", tmp / "cache")
    return build_dataset([(data, tmp / "images", 1.0)], processor, **kwargs)


def supervised_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token  # labels are the ids themselves (the model shifts them)
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != IGNORE_INDEX
    return runs


def assert_consistent(sample: dict[str, Any], max_length: int | None = None) -> None:
    """The invariants every sample must satisfy."""
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    assert len(ids) == len(labels) > 0
    if max_length is not None:
        assert len(ids) <= max_length
    n_images = 0 if sample["pixel_values"] is None else sample["pixel_values"].shape[0]
    assert sample["num_images"] == n_images
    assert ids.count(IMAGE_PAD) == N_IMAGE_TOKENS * n_images
    assert ids.count(VISION_START) == ids.count(VISION_END) == n_images
    for start in (i for i, t in enumerate(ids) if t == VISION_START):  # every span whole
        assert ids[start + 1 : start + 1 + N_IMAGE_TOKENS] == [IMAGE_PAD] * N_IMAGE_TOKENS
        assert ids[start + 1 + N_IMAGE_TOKENS] == VISION_END
    assert any(label != IGNORE_INDEX for label in labels)


# --- labels and image spans ------------------------------------------------------------------------------


def test_single_turn_caption_labels_cover_only_the_reply(tmp_path: Path, processor: Any) -> None:
    write_image(tmp_path / "images", "GCC_train_000.jpg", png_bytes())
    record = rec("GCC_train_000", "GCC_train_000.jpg", "Give a brief description of the image.\n<image>",
                 "a right triangle drawn on a blackboard")  # fmt: skip
    dataset = make_dataset(tmp_path, [record], processor)
    sample = dataset[0]
    assert sample["skipped"] == [] and sample["id"] == "GCC_train_000"
    assert_consistent(sample)
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    runs = supervised_runs(ids, labels)
    assert [processor.tokenizer.decode(run) for run in runs] == [
        "a right triangle drawn on a blackboard<|im_end|>"
    ]
    assert runs[0][-1] == IM_END
    assert sample["pixel_values"].shape == (1, 3, 224, 224)
    # Everything before the reply is prompt: system, user turn with the image, assistant header.
    first = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    prompt = processor.tokenizer.decode(ids[:first])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_multi_turn_labels_cover_every_assistant_reply(tmp_path: Path, processor: Any) -> None:
    replies = ["∠C = 180° - 50° - 60° = 70°.\nAnswer:A", "180° - 70° = 110°.", "Yes."]
    record = rec(
        "geoqa-1", "geoqa_plus/1.png",
        "Be brief.", "<image>\nIn triangle ABC, ∠A = 50°, ∠B = 60°. Find ∠C.", replies[0],
        "And the exterior angle at C?", replies[1], "Is it obtuse?", replies[2],
        roles=("system", "human", "gpt", "human", "gpt", "human", "gpt"),
    )  # fmt: skip
    write_image(tmp_path / "images" / "geoqa_plus", "1.png")
    sample = make_dataset(tmp_path, [record], processor)[0]
    assert_consistent(sample)
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    assert [processor.tokenizer.decode(r) for r in supervised_runs(ids, labels)] == [
        reply + "<|im_end|>" for reply in replies
    ]
    text = processor.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")  # the record's own system turn wins
    assert "You are a helpful assistant." not in text
    # Same ids and labels as the processor gives for the parsed turns.
    parsed = parse_record(record, source="data.json", index=0)
    enc = encode_conversation(processor, parsed.turns)
    assert (ids, labels) == (enc.input_ids, enc.labels)


@pytest.mark.parametrize(
    "question",
    [
        "<image>\nWhat is x?",
        "What is x?\n<image>",
        "What is x? <image> Explain.",
        "<image>What is x?",
        "   <image>   \n\n What is x?",
        "What is x?",  # no tag: LLaVA puts it in front of the first user turn
    ],
)
def test_image_tag_placements_give_one_whole_span(tmp_path: Path, processor: Any, question: str) -> None:
    write_image(tmp_path / "images", "a.png")
    sample = make_dataset(tmp_path, [rec("r", "a.png", question, "x = 3")], processor)[0]
    assert_consistent(sample)
    ids = sample["input_ids"].tolist()
    start, end = ids.index(VISION_START), ids.index(VISION_END)
    assert end - start - 1 == N_IMAGE_TOKENS and ids.count(IMAGE_PAD) == N_IMAGE_TOKENS
    assert sample["pixel_values"].shape[0] == 1


def test_tag_in_a_later_user_turn(tmp_path: Path, processor: Any) -> None:
    write_image(tmp_path / "images", "a.png")
    record = rec("r", "a.png", "Hello", "Hi!", "Now look: <image>", "A square.")
    sample = make_dataset(tmp_path, [record], processor)[0]
    assert_consistent(sample)
    ids = sample["input_ids"].tolist()
    assert ids.index(VISION_START) > ids.index(IM_END)  # after the first turns, not moved to the front


def test_text_only_record(tmp_path: Path, processor: Any) -> None:
    sample = make_dataset(tmp_path, [rec("t", None, "What is 2 + 2?", "4")], processor)[0]
    assert_consistent(sample)
    assert sample["pixel_values"] is None and sample["num_images"] == 0
    assert IMAGE_PAD not in sample["input_ids"].tolist()


# --- bad images and bad records --------------------------------------------------------------------------


def bad_image_corpus(tmp: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Records with good images, a text-only one, and one of each kind of bad image; returns the
    records and {id: expected reason} for the bad ones."""
    images = tmp / "images"
    write_image(images, "good1.png", png_bytes(seed=1))
    write_image(images, "good2.png", png_bytes(seed=2))
    write_image(images, "zero.png", b"")
    whole = png_bytes(64, 64, seed=3)
    write_image(images, "cut.png", whole[: len(whole) // 2])
    write_image(images, "big.png", png_bytes(120, 100, seed=4))
    records = [
        rec("good1", "good1.png", "<image>\nDescribe.", "Noise."),
        rec("missing", "nowhere/none.png", "<image>\nDescribe.", "Invented."),
        rec("zero", "zero.png", "<image>\nDescribe.", "Invented."),
        rec("good2", "good2.png", "<image>\nDescribe.", "More noise."),
        rec("cut", "cut.png", "<image>\nDescribe.", "Invented."),
        rec("big", "big.png", "<image>\nDescribe.", "Invented."),
        rec("text", None, "Say hi.", "Hi."),
    ]
    expected = {"missing": "missing", "zero": "unreadable", "cut": "truncated", "big": "too_large"}
    return records, expected


def test_bad_images_are_skipped_counted_and_logged(
    tmp_path: Path, processor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    records, expected = bad_image_corpus(tmp_path)
    dataset = make_dataset(tmp_path, records, processor, max_pixels=100 * 100)
    assert len(dataset) == len(records)
    caplog.set_level(logging.WARNING, logger="geovlm.data.dataset")
    counter = SkipCounter()
    for epoch in (1, 2):
        for i in range(len(dataset)):
            sample = dataset[i]
            counter.update(sample["skipped"], seen=1)
            assert_consistent(sample)
            assert sample["id"] in {"good1", "good2", "text"}  # only real, usable samples come out
            record_id = records[i]["id"]
            if record_id in expected:
                (skip,) = sample["skipped"]
                assert skip["id"] == record_id and skip["reason"] == expected[record_id]
                assert skip["path"].endswith(records[i]["image"])
            else:
                assert sample["skipped"] == [] and sample["id"] == record_id
        # Counts are exact per epoch: each bad record once per pass, however often it was probed.
        assert dict(counter) == {reason: epoch for reason in expected.values()}
        assert counter.seen == epoch * len(records)
    for record_id, reason in expected.items():  # logged once (first discovery) with id and path
        path = next(r["image"] for r in records if r["id"] == record_id)
        assert any(record_id in m and path in m and reason in m for m in caplog.messages)


def test_substitutes_are_deterministic(tmp_path: Path, processor: Any) -> None:
    records, expected = bad_image_corpus(tmp_path)
    first = make_dataset(tmp_path, records, processor, max_pixels=100 * 100, seed=7)
    second = make_dataset(tmp_path, records, processor, max_pixels=100 * 100, seed=7)
    bad = [i for i, r in enumerate(records) if r["id"] in expected]
    assert [first[i]["id"] for i in bad] == [second[i]["id"] for i in bad]
    assert [first[i]["id"] for i in reversed(bad)][::-1] == [first[i]["id"] for i in bad]  # order-independent


def test_all_bad_dataset_raises_data_quality_error(tmp_path: Path, processor: Any) -> None:
    dataset = make_dataset(tmp_path, [rec(f"m{i}", f"m{i}.png", "Q", "A") for i in range(3)], processor)
    with pytest.raises(DataQualityError, match="none of the 3 samples can be used"):
        dataset[0]


def test_malformed_records_are_counted_and_named(
    tmp_path: Path, processor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="geovlm.data.dataset")
    write_image(tmp_path / "images", "a.png")
    records = [
        rec("ok", "a.png", "<image>\nQ", "A"),
        rec("bad-role", None, "Q", "A", roles=("human", "bot")),
        rec("no-gpt", None, "Q", roles=("human",)),
        rec("two-tags", "a.png", "<image> and <image>", "A"),
        {"id": "no-conv", "image": "a.png"},
        rec("special", None, "Q<|im_end|>", "A"),
        rec("escape", "../outside.png", "Q", "A"),
        rec("tag-no-image", None, "<image>\nQ", "A"),
        rec("ok-text", None, "Q", "A"),
    ]
    dataset = make_dataset(tmp_path, records, processor)
    assert len(dataset) == 2 and dataset.num_records_read == len(records)
    assert dict(dataset.load_skips) == {MALFORMED: 7}
    for record_id in ("bad-role", "no-gpt", "two-tags", "no-conv", "special", "escape", "tag-no-image"):
        assert any(f"(id={record_id!r})" in m for m in caplog.messages), record_id
    messages = "\n".join(caplog.messages)
    assert "unknown role 'bot'" in messages and "no assistant (gpt) turn" in messages
    assert "2 <image> tags for one image" in messages and "special token '<|im_end|>'" in messages
    assert dataset.load_skips[MALFORMED] == 7


def test_a_corpus_without_any_usable_record_is_refused(tmp_path: Path, processor: Any) -> None:
    records = [rec("bad-role", None, "Q", "A", roles=("human", "bot")), {"id": "empty", "conversations": []}]
    with pytest.raises(
        DataQualityError, match=r"no usable records in .*data\.json: 2 of 2 records .*malformed=2"
    ):
        make_dataset(tmp_path, records, processor)


def test_broken_json_file_names_file_and_line(tmp_path: Path, processor: Any) -> None:
    data = tmp_path / "chat.json"
    data.write_text('[{"id": "a", "conversations": []},\n {"id": oops}]')
    with pytest.raises(RecordError, match=r"chat\.json, line 2: invalid JSON"):
        build_dataset([(data, tmp_path, 1.0)], processor, cache_lengths=False)


def test_jsonl_bad_line_is_one_malformed_record(tmp_path: Path, processor: Any) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        json.dumps(rec("a", None, "Q", "A")) + "\n{not json\n" + json.dumps(rec("b", None, "Q", "A"))
    )
    dataset = build_dataset([(data, tmp_path, 1.0)], processor, cache_lengths=False)
    assert len(dataset) == 2 and dict(dataset.load_skips) == {MALFORMED: 1}
    assert dataset.load_skips.examples[MALFORMED][0].id == "data.jsonl:line 2"


# --- truncation ------------------------------------------------------------------------------------------


def test_truncation_never_splits_an_image_span(tmp_path: Path, processor: Any) -> None:
    words = " ".join(f"word{i}" for i in range(60))
    raw = rec(
        "long", "a.png", "Tell me a story.", words, f"{words}\n<image>\nWhat is this?", "A long answer " * 20
    )
    record = parse_record(raw, source="data.json", index=0)
    full = encode_conversation(processor, record.turns)
    keep = min_keep_length(full.input_ids, full.labels, processor)
    span_end = full.input_ids.index(VISION_END)
    assert keep == span_end + 1  # the image comes after the first reply: the span decides
    outcomes = Counter()
    for max_length in range(20, len(full.input_ids) + 3):
        try:
            ids, labels, n_images = encode_record(record, processor, max_length=max_length)
        except SampleSkipped as skip:
            assert skip.record.reason == TOO_LONG and max_length < keep
            outcomes["too_long"] += 1
            continue
        assert max_length >= keep and len(ids) == min(max_length, len(full.input_ids))
        assert ids == full.input_ids[: len(ids)] and labels == full.labels[: len(ids)]
        sample = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                  "pixel_values": torch.zeros(1, 3, 224, 224), "num_images": n_images}  # fmt: skip
        assert_consistent(sample, max_length)
        outcomes["truncated" if len(ids) < len(full.input_ids) else "whole"] += 1
    assert set(outcomes) == {"too_long", "truncated", "whole"}

    # Through the dataset: a cut inside the span is a counted too_long skip, never a broken sample.
    write_image(tmp_path / "images", "a.png")
    raw = [rec("long", "a.png", "Tell me a story.", words, f"{words}\n<image>\nWhat is this?", "x"),
           rec("short", None, "Q", "A")]  # fmt: skip
    dataset = make_dataset(tmp_path, raw, processor, max_length=span_end - 10)
    sample = dataset[0]
    assert sample["id"] == "short" and [s["reason"] for s in sample["skipped"]] == [TOO_LONG]
    assert "would cut an image span" in sample["skipped"][0]["detail"]


def test_truncation_keeps_partial_answer_and_skips_when_nothing_is_supervised(
    tmp_path: Path, processor: Any
) -> None:
    write_image(tmp_path / "images", "a.png")
    raw = [rec("answer", "a.png", "<image>\nDescribe.", "A very long description " * 30),
           rec("question", None, "Why? " * 200, "Because."), rec("short", None, "Q", "A")]  # fmt: skip
    dataset = make_dataset(tmp_path, raw, processor, max_length=120)
    sample = dataset[0]
    assert sample["id"] == "answer" and len(sample["input_ids"]) == 120
    assert_consistent(sample, 120)
    assert sample["labels"][-1].item() != IGNORE_INDEX  # the cut answer is still supervised
    sample = dataset[1]
    assert sample["id"] in ("answer", "short")  # a real substitute
    assert (
        sample["skipped"][0]["reason"] == TOO_LONG
        and "every supervised token" in sample["skipped"][0]["detail"]
    )


# --- lengths ---------------------------------------------------------------------------------------------


def test_lengths_match_samples_and_are_cached(
    tmp_path: Path, processor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "images", "a.png")
    records = [
        rec("a", "a.png", "<image>\nDescribe.", "A triangle."),
        rec("b", "a.png", "  Where? <image>  ", "  Here.  ", "And then?", "Done ∠ABC = 90°."),
        rec("c", None, "Text only\n\nwith blank lines", "Yes"),
        rec("d", None, "sys", "Q", "A", roles=("system", "human", "gpt")),
        rec("e", "a.png", "Long " * 50, "Answer " * 50),
    ]
    data = write_corpus(tmp_path, records)

    def build(**kwargs: Any) -> Any:
        return build_dataset(
            [(data, tmp_path / "images", 1.0)], processor, cache_dir=tmp_path / "cache", **kwargs
        )

    dataset = build(max_length=100)
    unlimited = build(max_length=None)
    full = [len(unlimited[i]["input_ids"]) for i in range(len(records))]
    assert unlimited.lengths == full
    assert dataset.lengths == [min(n, 100) for n in full]
    assert list((tmp_path / "cache" / "lengths").glob("*.json"))

    import geovlm.data.lengths as module

    def no_tokenizing(*args: Any, **kwargs: Any) -> list[int]:
        raise AssertionError("lengths should come from the cache")

    monkeypatch.setattr(module, "text_lengths", no_tokenizing)
    assert build(max_length=None).lengths == full
    # A different system prompt, or a changed file, is a cache miss.
    with pytest.raises(AssertionError, match="from the cache"):
        _ = build(max_length=None, system_prompt=None).lengths
    write_corpus(tmp_path, records[:-1])
    with pytest.raises(AssertionError, match="from the cache"):
        _ = build(max_length=None).lengths


# --- mixing ----------------------------------------------------------------------------------------------


def test_weights_repeat_and_subsample_deterministically(tmp_path: Path, processor: Any) -> None:
    paths = {}
    for name, n in (("a", 10), ("b", 8), ("c", 20)):
        paths[name] = write_corpus(tmp_path / name, [rec(f"{name}{i}", None, "Q", "A") for i in range(n)])

    def ids(seed: int) -> Counter[str]:
        sources = [
            (paths["a"], None, 1.0),  # tuple
            {"path": paths["b"], "images": tmp_path, "weight": 2.5},  # mapping
            DataSource(str(paths["c"]), weight=0.25),
        ]
        dataset = build_dataset(sources, processor, seed=seed, cache_lengths=False)
        return Counter(dataset.record(i).id for i in range(len(dataset)))

    counts = ids(seed=0)
    assert sum(counts.values()) == 10 + 20 + 5
    assert all(counts[f"a{i}"] == 1 for i in range(10))
    assert sorted(counts[f"b{i}"] for i in range(8)) == [2] * 4 + [3] * 4
    assert sum(1 for i in range(20) if counts[f"c{i}"]) == 5 and all(counts[f"c{i}"] <= 1 for i in range(20))
    assert ids(seed=0) == counts
    assert any(ids(seed) != counts for seed in (1, 2, 3))  # the subsample depends on the seed


@pytest.mark.parametrize("weight", [0, -1, math.nan, math.inf])
def test_bad_weights_are_refused(tmp_path: Path, processor: Any, weight: float) -> None:
    data = write_corpus(tmp_path, [rec("a", None, "Q", "A")])
    with pytest.raises(ValueError, match="weight must be a positive number"):
        build_dataset([{"path": str(data), "weight": weight}], processor, cache_lengths=False)


def test_default_image_root_is_the_data_folder(tmp_path: Path, processor: Any) -> None:
    write_image(tmp_path, "a.png")
    data = write_corpus(tmp_path, [rec("a", "a.png", "<image>\nQ", "A")])
    sample = build_dataset([str(data)], processor, cache_lengths=False)[0]
    assert sample["skipped"] == [] and sample["pixel_values"].shape[0] == 1


# --- skip accounting -------------------------------------------------------------------------------------


def test_data_quality_error_fires_above_the_budget() -> None:
    counter = SkipCounter()
    counter.update([SkipRecord("missing", f"m{i}", f"images/m{i}.png") for i in range(12)], seen=100)
    counter.update([{"reason": "truncated", "id": f"t{i}", "path": f"images/t{i}.png", "detail": ""}
                    for i in range(5)], seen=100)  # fmt: skip
    with pytest.raises(DataQualityError) as info:
        counter.check_budget(max_bad_fraction=0.05)
    message = str(info.value)
    assert message.startswith("17 of 200 samples (8.5%) were unusable, more than max_bad_fraction=5%: ")
    assert "missing=12 (e.g. id 'm0', path 'images/m0.png'), truncated=5 (e.g. id 't0'" in message
    assert "geovlm data check" in message
    counter.check_budget(400, 0.05)  # 4.25%: fine
    counter.check_budget(340, 0.05)  # exactly 5%: fine
    with pytest.raises(DataQualityError):
        counter.check_budget(339, 0.05)
    assert counter.report().startswith("17 of 200 samples (8.5%) were unusable: missing=12")
    assert len(counter.examples["missing"]) == counter.max_examples  # bounded

    clone = pickle.loads(pickle.dumps(counter))  # crosses process boundaries
    merged = SkipCounter()
    merged.merge(clone)
    merged.merge(counter)
    assert dict(merged) == {"missing": 24, "truncated": 10} and merged.seen == 400 and merged.total == 34


def test_skip_reasons_are_the_documented_ones() -> None:
    assert SKIP_REASONS == ("malformed", "missing", "unreadable", "truncated", "too_large", "too_long")


# --- collator --------------------------------------------------------------------------------------------


def test_collator_pads_masks_and_stacks_images(tmp_path: Path, processor: Any) -> None:
    write_image(tmp_path / "images", "a.png", png_bytes(seed=1))
    write_image(tmp_path / "images", "b.png", png_bytes(20, 50, seed=2))
    records = [
        rec("text", None, "Hi", "Hello"),
        rec("img-a", "a.png", "<image>\nDescribe.", "Noise " * 10),
        rec("missing", "missing.png", "<image>\nDescribe.", "Invented."),
        rec("img-b", "b.png", "What? <image>", "Tall noise."),
    ]
    dataset = make_dataset(tmp_path, records, processor)
    samples = [dataset[i] for i in range(4)]
    collator = GeoVLMCollator.from_processor(processor, pad_to_multiple_of=8)
    batch = collator(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values", "skipped"}
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["attention_mask"].dtype == torch.long
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and max(lengths) <= width < max(lengths) + 8
    pad = processor.tokenizer.pad_token_id
    for row, (sample, n) in enumerate(zip(samples, lengths, strict=True)):
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"][row, :n].tolist() == sample["input_ids"].tolist()
        assert batch["input_ids"][row, n:].tolist() == [pad] * (width - n)
        assert batch["labels"][row, :n].tolist() == sample["labels"].tolist()
        assert batch["labels"][row, n:].tolist() == [IGNORE_INDEX] * (width - n)
    # One row of pixel_values per image-bearing sample, in reading order.
    with_images = [s for s in samples if s["pixel_values"] is not None]
    assert batch["pixel_values"].shape == (len(with_images), 3, 224, 224)
    assert int((batch["input_ids"] == IMAGE_PAD).sum()) == N_IMAGE_TOKENS * len(with_images)
    for row, sample in enumerate(with_images):
        assert torch.equal(batch["pixel_values"][row], sample["pixel_values"][0])
    assert [s["id"] for s in batch["skipped"]] == ["missing"]

    text_batch = collator([samples[0], samples[0]])
    assert "pixel_values" not in text_batch and text_batch["skipped"] == []

    left = GeoVLMCollator(pad, padding_side="left")([samples[0], samples[1]])
    short = lengths[0]
    assert left["attention_mask"][0].tolist() == [0] * (lengths[1] - short) + [1] * short
    assert left["input_ids"][0, -short:].tolist() == samples[0]["input_ids"].tolist()


def test_tiny_model_forward_on_a_collated_mixed_batch(tmp_path: Path, tiny_pair: Any) -> None:
    model, processor = tiny_pair
    write_image(tmp_path / "images", "a.png", png_bytes(seed=1))
    write_image(tmp_path / "images", "b.png", png_bytes(30, 60, seed=2))
    records = [
        rec("img-a", "a.png", "<image>\nWhat is shown?", "Random noise."),
        rec("text", None, "What is 2 + 2?", "4"),
        rec("broken", "zero.png", "<image>\nWhat?", "Invented."),
        rec("img-b", "b.png", "Look: <image>", "Tall.", "Sure?", "Yes."),
    ]
    write_image(tmp_path / "images", "zero.png", b"")
    dataset = make_dataset(tmp_path, records, processor)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, collate_fn=GeoVLMCollator.from_processor(processor)
    )
    batch = next(iter(loader))
    skipped = batch.pop("skipped")
    assert [s["reason"] for s in skipped] == ["unreadable"]
    assert batch["pixel_values"].shape[0] == sum(
        s is not None for s in [dataset[i]["pixel_values"] for i in range(4)]
    )
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0


def test_skips_reach_the_parent_through_dataloader_workers(tmp_path: Path, processor: Any) -> None:
    records, expected = bad_image_corpus(tmp_path)
    dataset = make_dataset(tmp_path, records, processor, max_pixels=100 * 100)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=3,
        shuffle=True,
        num_workers=2,
        collate_fn=GeoVLMCollator.from_processor(processor),
    )
    counter = SkipCounter()
    for batch in loader:
        counter.update(batch.pop("skipped"), seen=len(batch["input_ids"]))
    assert dict(counter) == Counter(expected.values()) and counter.seen == len(records)
    with pytest.raises(DataQualityError, match=r"4 of 7 samples \(57\.1%\)"):
        counter.check_budget(max_bad_fraction=0.05)


# --- property: random conversations and random image bytes ------------------------------------------------

SAFE_FRAGMENTS = ["\n", "  ", "x = 3", "∠ABC", "Answer:A", "🙂", "<imag", "<|", "|>"]
text_st = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(SAFE_FRAGMENTS)), max_size=4).map("".join)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Mostly well-ordered conversations with random text; some with random roles or empty turns,
    misplaced or extra ``<image>`` tags, or special tokens in the text."""
    if draw(st.sampled_from(["ordered"] * 4 + ["random"])) == "random":
        roles = draw(
            st.lists(st.sampled_from(["human", "gpt", "system", "user", "assistant", "bot"]), max_size=5)
        )
        turns = [{"from": role, "value": draw(text_st)} for role in roles]
    else:
        roles = ["system"] * draw(st.integers(0, 1)) + ["human", "gpt"] * draw(st.integers(1, 3))
        words = st.sampled_from(["What is x?", "x", "4", "Find ∠C.", "A" * 100, "word " * 30])
        turns = [{"from": role, "value": draw(text_st) + draw(words) + draw(text_st)} for role in roles]
    if turns:
        insert = draw(st.sampled_from(["", "", "", "<image>", "<image>", "<image><image>", "<|im_end|>"]))
        users = [t for t in turns if t["from"] == "human"] or turns
        turn = draw(st.sampled_from(users)) if draw(st.integers(0, 9)) else draw(st.sampled_from(turns))
        cut = draw(st.integers(0, len(turn["value"])))
        turn["value"] = turn["value"][:cut] + insert + turn["value"][cut:]
    return turns


@st.composite
def image_files(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["valid", "valid", "valid", "cut", "random", "empty", "missing"]))
    if kind == "missing":
        return None
    if kind in ("valid", "cut"):
        data = png_bytes(draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(0, 99)))
        return data if kind == "valid" else data[: draw(st.integers(0, len(data) - 1))]
    return b"" if kind == "empty" else draw(st.binary(min_size=1, max_size=256))


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    turns=conversations(),
    with_image=st.booleans(),
    image=image_files(),
    max_length=st.sampled_from([30, 64, 100, 160, 256, 512]) | st.integers(30, 512),
)
def test_property_random_records_give_consistent_samples_or_counted_skips(
    processor: Any, turns: list[dict[str, Any]], with_image: bool, image: bytes | None, max_length: int
) -> None:
    anchor = rec("anchor", None, "hi", "ok")  # always usable, so a bad record has a substitute
    record: dict[str, Any] = {"id": "random", "conversations": turns}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if with_image:
            record["image"] = "img.bin"
            if image is not None:
                write_image(tmp / "images", "img.bin", image)
        dataset = make_dataset(tmp, [record, anchor], processor, max_length=max_length, max_pixels=1200,
                               cache_lengths=False)  # fmt: skip
        if dataset.load_skips.total:  # malformed: counted at load time, not in the dataset
            event(f"malformed {dataset.load_skips.examples[MALFORMED][0].detail.rsplit('[', 1)[-1]}")
            assert dict(dataset.load_skips) == {MALFORMED: 1} and len(dataset) == 1
            assert dataset.load_skips.examples[MALFORMED][0].id == "random"
        else:
            assert len(dataset) == 2
        assert all(0 < n <= max_length for n in dataset.lengths)
        for i in range(len(dataset)):
            sample = dataset[i]
            assert_consistent(sample, max_length)
            if sample["skipped"]:
                (skip,) = sample["skipped"]
                assert skip["id"] == "random" and skip["reason"] in SKIP_REASONS and sample["id"] == "anchor"
                event(f"skipped: {skip['reason']}")
            else:
                assert sample["id"] == dataset.record(i).id
                event(f"used ({sample['num_images']} image)" if i == 0 and len(dataset) == 2 else "anchor")
        batch = GeoVLMCollator.from_processor(processor)([dataset[i] for i in range(len(dataset))])
        n_rows = 0 if "pixel_values" not in batch else batch["pixel_values"].shape[0]
        assert int((batch["input_ids"] == IMAGE_PAD).sum()) == N_IMAGE_TOKENS * n_rows


def test_many_bad_records_list_the_first_ten_then_say_the_rest_are_counted(
    tmp_path: Path, processor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    write_image(tmp_path / "images", "ok.png")
    records = [rec("ok", "ok.png", "<image>\nQ", "A")] + [rec(f"m{i}", f"m{i}.png", "<image>\nQ", "A") for i in range(15)]
    dataset = make_dataset(tmp_path, records, processor)
    caplog.set_level(logging.WARNING, logger="geovlm.data.dataset")
    counter = SkipCounter()
    for i in range(len(dataset)):
        counter.update(dataset[i]["skipped"], seen=1)
    assert counter["missing"] == 15  # every one counted
    listed = [m for m in caplog.messages if m.startswith("skipping sample")]
    assert len(listed) == 10 and sum("counted, not listed" in m for m in caplog.messages) == 1
