"""GeoVLMProcessor and the conversation code: chat template, placeholder expansion, labels, save/load."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from geovlm import GeoVLMConfig, GeoVLMProcessor
from geovlm.constants import DEFAULT_SYSTEM_PROMPT, IGNORE_INDEX, IMAGE_TAG
from geovlm.modeling import processing_geovlm
from geovlm.modeling.special_tokens import IMAGE_PAD_ID, VISION_END_ID, VISION_START_ID
from geovlm.processing.build import processor_for
from geovlm.processing.conversation import encode_conversation, prompt_text, question_messages, to_messages

CONVERSATION = [
    {"from": "human", "value": "<image>\nIn triangle ABC, ∠A = 50°, ∠B = 60°. Find ∠C."},
    {"from": "gpt", "value": "∠C = 180° - 50° - 60° = 70°.\nAnswer:A"},
    {"from": "human", "value": "And the exterior angle at C?"},
    {"from": "gpt", "value": "180° - 70° = 110°."},
]
BLOCKS = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is this?"}]}]


def test_shipped_processor_code_agrees_with_geovlm_constants():
    # processing_geovlm.py ships alone in model folders, so it keeps its own copies.
    assert processing_geovlm.IMAGE_PLACEHOLDER == IMAGE_TAG
    assert processing_geovlm.DEFAULT_SYSTEM_PROMPT == DEFAULT_SYSTEM_PROMPT


def test_chat_template_renders_blocks_and_strings_alike_with_the_system_prompt(tiny_pair):
    _, processor = tiny_pair
    from_blocks = processor.apply_chat_template(BLOCKS, add_generation_prompt=True)
    from_string = processor.apply_chat_template(
        [{"role": "user", "content": "<image>\nWhat shape is this?"}], add_generation_prompt=True)
    assert from_blocks == from_string == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>\nWhat shape is this?<|im_end|>\n<|im_start|>assistant\n")
    own_system = [{"role": "system", "content": "Be brief."}, *BLOCKS]
    assert processor.apply_chat_template(own_system).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")


def test_call_expands_each_placeholder_to_a_marked_span_and_counts_images(tiny_pair):
    _, processor = tiny_pair
    image = Image.new("RGB", (300, 200), "white")
    batch = processor(images=[image], text="<image>\nWhat shape is this?", return_tensors="pt")
    ids = batch["input_ids"][0].tolist()
    start = ids.index(VISION_START_ID)
    assert ids[start + 1 : start + 50] == [IMAGE_PAD_ID] * 49 and ids[start + 50] == VISION_END_ID
    assert ids.count(IMAGE_PAD_ID) == GeoVLMConfig.from_preset("tiny").num_image_tokens == processor.num_image_tokens
    assert batch["pixel_values"].shape == (1, 3, 224, 224)
    assert processor.image_token == "<|image_pad|>" and processor.image_token_id == IMAGE_PAD_ID
    with pytest.raises(ValueError, match="number of images"):
        processor(images=[image, image], text="<image>\nHi")
    with pytest.raises(ValueError, match="no images"):
        processor(text="<image>\nHi")
    counts = processor._get_num_multimodal_tokens(image_sizes=[(200, 300), (50, 50)])
    assert counts.num_image_tokens == [49, 49] and counts.num_image_patches == [1, 1]


def test_apply_chat_template_tokenizes_with_inline_or_separate_images(tiny_pair):
    _, processor = tiny_pair
    image = Image.new("RGB", (120, 80), (20, 30, 200))
    inline = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Find x."}]}]
    out = processor.apply_chat_template(inline, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt")
    separate = processor(images=[image], text=processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find x."}]}],
        add_generation_prompt=True), return_tensors="pt")
    assert torch.equal(out["input_ids"], separate["input_ids"])
    assert torch.equal(out["pixel_values"], separate["pixel_values"])
    # The same ids as the training encoder gives the same question.
    enc = encode_conversation(processor, question_messages("Find x."), add_generation_prompt=True)
    assert out["input_ids"][0].tolist() == enc.input_ids


def test_images_are_padded_to_a_white_square_as_in_training(tiny_pair):
    _, processor = tiny_pair
    wide = Image.new("RGBA", (200, 100), (0, 0, 0, 0))  # transparent: white after compositing
    squared = processing_geovlm.square_on_white(wide)
    assert squared.size == (200, 200) and squared.mode == "RGB" and squared.getpixel((100, 10)) == (255, 255, 255)
    pixels = processor(images=[wide], text="<image>", return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels, torch.ones_like(pixels), atol=1e-2)  # all white (normalised to 1)


def test_batches_are_left_padded_for_generation(tiny_pair):
    _, processor = tiny_pair
    image = Image.new("RGB", (64, 64), "white")
    batch = processor(images=[image, image], text=["<image>\nHi", "<image>\nA longer question here"],
                      padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()


def test_labels_cover_exactly_every_assistant_reply(tiny_pair):
    _, processor = tiny_pair
    enc = encode_conversation(processor, CONVERSATION)
    tok = processor.tokenizer
    # Same ids as the processor's chat template over the whole conversation at once.
    whole = processor(text=processor.apply_chat_template(to_messages(CONVERSATION)), images=[Image.new("RGB", (8, 8))])
    assert enc.input_ids == whole["input_ids"][0]
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


def test_seed_format_has_pads_only(tokenizer):
    config = GeoVLMConfig.from_preset("tiny", merge_mode="sequential", vision_start_token_id=None,
                                      vision_end_token_id=None)
    processor = processor_for(config, tokenizer)
    ids = processor(images=[Image.new("RGB", (8, 8))], text="<image>\nQ")["input_ids"][0]
    assert VISION_START_ID not in ids and ids.count(IMAGE_PAD_ID) == 49


def test_processor_round_trips_with_its_settings(tmp_path, tokenizer):
    config = GeoVLMConfig.from_preset("tiny", merge_mode="sequential", merge_factor=2)
    processor = processor_for(config, tokenizer, system_prompt="Solve the geometry problem.")
    processor.save_pretrained(tmp_path)
    loaded = GeoVLMProcessor.from_pretrained(tmp_path)
    assert (loaded.num_image_tokens, loaded.system_prompt) == (98, "Solve the geometry problem.")
    assert loaded.chat_template == processor.chat_template
    assert "Solve the geometry problem." in loaded.apply_chat_template(BLOCKS)
    assert encode_conversation(loaded, CONVERSATION).input_ids == encode_conversation(processor, CONVERSATION).input_ids
    image = Image.new("RGB", (64, 64), (10, 200, 30))
    assert torch.equal(loaded(images=[image], text="<image>", return_tensors="pt")["pixel_values"],
                       processor(images=[image], text="<image>", return_tensors="pt")["pixel_values"])


def test_changing_the_system_prompt_changes_the_template(tiny_pair):
    _, processor = tiny_pair
    processor.system_prompt = None
    assert processor.apply_chat_template(BLOCKS).startswith("<|im_start|>user\n")
    processor.system_prompt = "Think."
    assert processor.apply_chat_template(BLOCKS).startswith("<|im_start|>system\nThink.<|im_end|>")
    expected = processor.tokenizer.encode("<|im_start|>system\nThink.<|im_end|>")
    assert encode_conversation(processor, BLOCKS).input_ids[: len(expected)] == expected


def test_a_tokenizer_template_that_injects_a_system_turn_is_not_used(tokenizer):
    """Qwen2.5's own template adds "You are Qwen…" to any message list without a system turn; the
    processor keeps its own ChatML template."""
    injecting = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    injecting.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen.<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = GeoVLMConfig.from_preset("tiny")
    ours = encode_conversation(processor_for(config, tokenizer), CONVERSATION)
    theirs = encode_conversation(processor_for(config, injecting), CONVERSATION)
    assert theirs == ours


def test_training_and_inference_prompts_agree_on_untidy_whitespace(tiny_pair):
    _, processor = tiny_pair
    turns = [{"role": "user", "content": "  <image>\nFind x.  \n"}]
    prompt_ids = processor(images=[Image.new("RGB", (8, 8))], text=prompt_text(processor, to_messages(turns)))
    assert prompt_ids["input_ids"][0] == encode_conversation(processor, turns, add_generation_prompt=True).input_ids
    untidy_blocks = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Find x.  \n"}]}]
    assert processor.apply_chat_template(untidy_blocks) == processor.apply_chat_template(to_messages(untidy_blocks))


def test_the_assistant_header_cache_lives_and_dies_with_its_tokenizer(tiny_pair):
    import gc

    from geovlm.processing import conversation

    _, processor = tiny_pair
    header = conversation._assistant_header(processor)
    assert processor.tokenizer.decode(header) == "<|im_start|>assistant\n"
    assert processor.tokenizer in conversation._HEADERS
    count = len(conversation._HEADERS)
    processor.tokenizer = None  # the only reference to the tokenizer goes
    gc.collect()
    assert len(conversation._HEADERS) == count - 1
