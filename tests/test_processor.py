"""GeoVLMProcessor: ChatML prompts, image spans, labels, batches, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from geovlm import GeoVLMConfig, GeoVLMProcessor
from geovlm.processing.processor import IGNORE_INDEX

CONVERSATION = [
    {"from": "human", "value": "<image>\nIn triangle ABC, ∠A = 50°, ∠B = 60°. Find ∠C."},
    {"from": "gpt", "value": "∠C = 180° - 50° - 60° = 70°.\nAnswer:A"},
    {"from": "human", "value": "And the exterior angle at C?"},
    {"from": "gpt", "value": "180° - 70° = 110°."},
]


def test_image_tag_expands_to_marked_span_of_config_length(tiny_pair):
    _, processor = tiny_pair
    prompt = processor.build_prompt([{"role": "user", "content": "<image>\nWhat shape is this?"}])
    ids = processor.tokenizer.encode(prompt, add_special_tokens=False)
    start = ids.index(151652)
    assert ids[start + 1 : start + 50] == [151655] * 49 and ids[start + 50] == 151653
    assert ids.count(151655) == GeoVLMConfig.from_preset("tiny").num_image_tokens
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("What shape is this?<|im_end|>\n<|im_start|>assistant\n")


def test_labels_cover_exactly_every_assistant_reply(tiny_pair):
    _, processor = tiny_pair
    enc = processor.encode_conversation(CONVERSATION)
    tok = processor.tokenizer
    # Same ids as tokenizing the whole rendered conversation at once.
    messages = processor.with_system([{"role": r, "content": c} for r, c in
                                      [("user", CONVERSATION[0]["value"]), ("assistant", CONVERSATION[1]["value"]),
                                       ("user", CONVERSATION[2]["value"]), ("assistant", CONVERSATION[3]["value"])]])
    assert enc.input_ids == tok.encode(processor.render(messages), add_special_tokens=False)
    # Supervised runs are exactly "reply<|im_end|>" for each assistant turn, in order.
    runs, current = [], []
    for token, label in zip(enc.input_ids, enc.labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    assert [tok.decode(r) for r in runs] == [
        CONVERSATION[1]["value"] + "<|im_end|>",
        CONVERSATION[3]["value"] + "<|im_end|>",
    ]
    assert enc.num_images == 1


def test_seed_format_has_pads_only_and_its_system_prompt(tokenizer):
    config = GeoVLMConfig.from_preset("tiny", merge_mode="sequential", vision_start_token_id=None,
                                      vision_end_token_id=None)
    processor = GeoVLMProcessor.from_tokenizer(tokenizer, config)
    prompt = processor.build_prompt([{"role": "user", "content": "<image>\nQ"}])
    assert "<|vision_start|>" not in prompt and prompt.count("<|image_pad|>") == 49


def test_batch_is_left_padded_and_checks_image_count(tiny_pair):
    model, processor = tiny_pair
    image = Image.new("RGB", (300, 200), "white")
    batch = processor.prepare_chat(
        [[{"role": "user", "content": "<image>\nHi"}], [{"role": "user", "content": "<image>\nA longer question here"}]],
        [image, image],
    )
    assert batch["pixel_values"].shape == (2, 3, 224, 224)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()
    assert model.generate(**batch, max_new_tokens=2).shape[0] == 2
    with pytest.raises(ValueError, match="1 image span"):
        processor(processor.build_prompt([{"role": "user", "content": "<image>\nHi"}]), images=[image, image])


def test_processor_round_trips_with_its_settings(tmp_path, tokenizer):
    config = GeoVLMConfig.from_preset("tiny", merge_mode="sequential", merge_factor=2)
    processor = GeoVLMProcessor.from_tokenizer(tokenizer, config, system_prompt="Solve the geometry problem.")
    processor.save_pretrained(tmp_path)
    loaded = GeoVLMProcessor.from_pretrained(tmp_path)
    assert (loaded.num_image_tokens, loaded.system_prompt) == (98, "Solve the geometry problem.")
    assert loaded.encode_conversation(CONVERSATION).input_ids == processor.encode_conversation(CONVERSATION).input_ids
    image = Image.new("RGB", (64, 64), (10, 200, 30))
    assert torch.equal(loaded.preprocess_images([image]), processor.preprocess_images([image]))


def test_a_tokenizer_template_that_injects_a_system_turn_is_not_used(tokenizer):
    """Qwen2.5's own template adds "You are Qwen…" to any message list without a system turn;
    per-turn labelling would break on it, so the processor keeps its own ChatML template."""
    injecting = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    injecting.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen.<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = GeoVLMConfig.from_preset("tiny")
    ours = GeoVLMProcessor.from_tokenizer(tokenizer, config).encode_conversation(CONVERSATION)
    theirs = GeoVLMProcessor.from_tokenizer(injecting, config).encode_conversation(CONVERSATION)
    assert theirs == ours


def test_training_and_inference_prompts_agree_on_untidy_whitespace(tiny_pair):
    _, processor = tiny_pair
    turns = [{"role": "user", "content": "  <image>\nFind x.  \n"}]
    prompt_ids = processor.tokenizer.encode(processor.build_prompt(turns), add_special_tokens=False)
    assert prompt_ids == processor.encode_conversation(turns, add_generation_prompt=True).input_ids
