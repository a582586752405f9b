"""GeoVLM model core: token merge, mask fill, forward and loss, standard generation, save/load (old folders too)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geovlm.modeling import GeoVLM, GeoVLMConfig, processing_geovlm
from geovlm.modeling.connector import merge_sequential, merge_spatial
from geovlm.modeling.special_tokens import (
    ENDOFTEXT_ID,
    IM_END_ID,
    IM_START_ID,
    IMAGE_PAD_ID,
    VISION_END_ID,
    VISION_START_ID,
)

PAD, IM_START, IM_END, V_START, V_END = IMAGE_PAD_ID, IM_START_ID, IM_END_ID, VISION_START_ID, VISION_END_ID


def tiny(**overrides) -> GeoVLM:
    torch.manual_seed(0)
    return GeoVLM(GeoVLMConfig.from_preset("tiny", **overrides)).eval()


def random_projector_bias(model: GeoVLM) -> GeoVLM:
    with torch.no_grad():
        model.model.projector.linear_1.bias.normal_()
    return model


def image_prompt(n_pads: int, text: list[int]) -> list[int]:
    return [IM_START, 872, 198, V_START] + [PAD] * n_pads + [V_END] + text + [IM_END, 198, IM_START, 77091, 198]


# ---------------------------------------------------------------------------- merge
def test_spatial_merge_groups_each_2x2_block():
    b, grid, d = 2, 14, 3
    feats = torch.randn(b, grid * grid, d)
    merged = merge_spatial(feats, 4)
    assert merged.shape == (b, 49, 4 * d)
    for row in range(7):
        for col in range(7):
            token = merged[:, row * 7 + col]
            expected = torch.cat(
                [feats[:, (2 * row + dy) * grid + (2 * col + dx)] for dy in (0, 1) for dx in (0, 1)], dim=-1
            )
            torch.testing.assert_close(token, expected, rtol=0, atol=0)


def test_sequential_merge_equals_seed_reshape():
    feats = torch.randn(2, 196, 5)
    torch.testing.assert_close(merge_sequential(feats, 4), feats.view(2, -1, 5 * 4), rtol=0, atol=0)
    # On a 14-wide grid, 7 of the 49 sequential groups straddle two rows; spatial ones never do.
    assert not torch.equal(merge_sequential(feats, 4), merge_spatial(feats, 4))


def test_config_derives_image_tokens_and_rejects_bad_merges():
    assert GeoVLMConfig.from_preset("base").num_image_tokens == 49
    assert GeoVLMConfig.from_preset("tiny", merge_mode="sequential", merge_factor=2).num_image_tokens == 98
    with pytest.raises(ValueError, match="square"):
        GeoVLMConfig.from_preset("tiny", merge_factor=2)
    with pytest.raises(ValueError, match="merge_mode"):
        GeoVLMConfig.from_preset("tiny", merge_mode="diagonal")


def test_config_round_trips_through_json(tmp_path):
    config = GeoVLMConfig.from_preset("tiny", merge_mode="sequential")
    config.save_pretrained(tmp_path)
    loaded = GeoVLMConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.vision_config.vision_use_head is False


# ---------------------------------------------------------------------------- mask fill
def test_image_features_fill_pad_positions_only():
    model = tiny()
    ids = torch.tensor([image_prompt(49, [100, 101])])
    pixels = torch.randn(1, 3, 224, 224)
    embeds = model.model.embed_inputs(ids, pixels)
    plain = model.get_input_embeddings()(ids)
    is_pad = ids[0] == PAD
    torch.testing.assert_close(embeds[0, ~is_pad], plain[0, ~is_pad])
    features = model.get_image_features(pixels).pooler_output
    assert features.shape == (1, 49, model.config.text_config.hidden_size)
    torch.testing.assert_close(embeds[0, is_pad], features[0])


def test_pad_count_mismatch_names_both_counts():
    model = tiny()
    ids = torch.tensor([image_prompt(48, [100])])
    with pytest.raises(ValueError, match=r"48 <\|image_pad\|> tokens.*49 features"):
        model(input_ids=ids, pixel_values=torch.randn(1, 3, 224, 224))
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=torch.tensor([image_prompt(49, [100])]))


def test_text_only_rows_mix_with_image_rows():
    model = tiny()
    with_image = image_prompt(49, [100, 101, 102])
    text_only = [IM_START, 872, 198, 100, 101] + [IM_END] * (len(with_image) - 5)
    ids = torch.tensor([text_only, with_image])
    pixels = torch.randn(1, 3, 224, 224)
    batched = model(input_ids=ids, pixel_values=pixels).logits
    alone = model(input_ids=ids[1:], pixel_values=pixels).logits
    torch.testing.assert_close(batched[1:], alone, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- forward and loss
def test_forward_returns_logits_and_the_standard_shifted_loss():
    model = tiny()
    ids = torch.tensor([image_prompt(49, [100, 101, 102, 103]), image_prompt(49, [104, 105, 106, 107])])
    labels = ids.clone()
    labels[:, :-6] = -100
    labels[1, -3:] = -100
    pixels = torch.randn(2, 3, 224, 224)
    out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    assert out.logits.shape == (*ids.shape, model.config.text_config.vocab_size)
    full = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).float(),
                           labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, full)
    # num_items_in_batch turns the mean into a sum over a global token count (gradient accumulation).
    n = int((labels[:, 1:] != -100).sum())
    summed = model(input_ids=ids, pixel_values=pixels, labels=labels, num_items_in_batch=2 * n).loss
    torch.testing.assert_close(summed, full / 2)
    last = model(input_ids=ids, pixel_values=pixels, logits_to_keep=1).logits
    torch.testing.assert_close(last, out.logits[:, -1:], rtol=1e-5, atol=1e-5)
    hidden = model.model(input_ids=ids, pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(model.lm_head(hidden), out.logits)


def test_base_model_takes_embeddings_instead_of_ids():
    model = tiny()
    ids = torch.tensor([image_prompt(49, [100, 101])])
    pixels = torch.randn(1, 3, 224, 224)
    embeds = model.model.embed_inputs(ids, pixels)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(input_ids=ids, pixel_values=pixels).logits)
    with pytest.raises(ValueError, match="exactly one"):
        model(input_ids=ids, inputs_embeds=embeds)


# ---------------------------------------------------------------------------- generation
def no_cache_greedy(model: GeoVLM, ids: torch.Tensor, pixels: torch.Tensor, steps: int) -> list[int]:
    """The plain way: re-run the whole model on the whole sequence for every new token."""
    out = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values=pixels).logits[:, -1]
        nxt = int(logits.argmax(-1))
        out.append(nxt)
        if nxt == IM_END:
            break
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def generation_model() -> GeoVLM:
    # An untied, sharpened head keeps a random model from just echoing its last token.
    from geovlm import build_tiny

    torch.manual_seed(1)
    return build_tiny(head_std=0.5)[0].eval()


def test_cached_greedy_generation_equals_no_cache_loop():
    model = generation_model()
    ids = torch.tensor([image_prompt(49, [100, 2001, 3002, 57])])
    pixels = torch.randn(1, 3, 224, 224)
    output = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=12, do_sample=False)
    assert output[0, : ids.shape[1]].tolist() == ids[0].tolist()  # prompt + completion, as every HF model
    reference = no_cache_greedy(model, ids, pixels, 12)
    assert output[0, ids.shape[1] :].tolist() == reference
    assert len(set(reference)) > 2, "degenerate reference: the test would not catch a cache bug"


def test_batched_left_padded_generation_equals_one_by_one():
    model = generation_model()
    prompts = [image_prompt(49, [100, 2001]), image_prompt(49, [5, 6, 7, 8, 9, 10, 11]), image_prompt(49, [42])]
    pixels = torch.randn(3, 3, 224, 224)
    width = max(map(len, prompts))
    ids = torch.tensor([[IM_END] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=8,
                             do_sample=False)[:, width:]
    for i, prompt in enumerate(prompts):
        single = model.generate(input_ids=torch.tensor([prompt]), pixel_values=pixels[i : i + 1], max_new_tokens=8,
                                do_sample=False)[0, len(prompt) :]
        row = batched[i][: len(single)].tolist()
        assert row == single.tolist(), f"row {i}"


def test_generate_encodes_each_image_once_and_samples():
    model = generation_model()
    ids = torch.tensor([image_prompt(49, [100, 101])])
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    out = model.generate(input_ids=ids, pixel_values=torch.randn(1, 3, 224, 224), max_new_tokens=6, min_new_tokens=6,
                         do_sample=False)
    assert out.shape[1] == ids.shape[1] + 6 and len(calls) == 1  # pixel values go in on the first step only
    torch.manual_seed(0)
    sampled = model.generate(input_ids=ids, pixel_values=torch.randn(1, 3, 224, 224), max_new_tokens=4,
                             do_sample=True, temperature=1.0)
    assert sampled.shape[0] == 1 and ids.shape[1] < sampled.shape[1] <= ids.shape[1] + 4
    assert model.generation_config.pad_token_id == ENDOFTEXT_ID and model.generation_config.eos_token_id == IM_END_ID


# ---------------------------------------------------------------------------- save / load
def test_save_and_load_gives_identical_logits(tmp_path):
    model = random_projector_bias(tiny())
    ids = torch.tensor([image_prompt(49, [100, 101])])
    pixels = torch.randn(1, 3, 224, 224)
    before = model(input_ids=ids, pixel_values=pixels).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "generation_config.json").is_file()
    loaded = GeoVLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(input_ids=ids, pixel_values=pixels).logits, before, rtol=0, atol=0)
    assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()


def save_legacy_folder(model: GeoVLM, processor, folder) -> None:
    """A folder as the release before the LLaVA layout wrote it: the whole Qwen2ForCausalLM under
    `language_model.`, tower and projector at the top, no code or auto_map, the plain ChatML template."""
    import json

    from safetensors.torch import save_file

    from geovlm.modeling.processing_geovlm import LEGACY_CHATML_TEMPLATE

    renames = (("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
               ("model.projector.", "projector."))
    state = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied: the old release left it out too
        for new, old in renames:
            if key.startswith(new):
                key = old + key[len(new):]
        state[key] = tensor.contiguous()
    folder.mkdir()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("auto_map", None)
    config["architectures"] = ["GeoVLM"]
    (folder / "config.json").write_text(json.dumps(config))
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({
        "image_token": "<|image_pad|>", "num_image_tokens": 49, "processor_class": "GeoVLMProcessor",
        "system_prompt": "You are a helpful assistant.", "vision_end_token": "<|vision_end|>",
        "vision_start_token": "<|vision_start|>"}))
    (folder / "chat_template.jinja").write_text(LEGACY_CHATML_TEMPLATE)


def test_folders_of_the_previous_layout_load_with_identical_logits(tmp_path, tiny_pair):
    from geovlm import load_pretrained
    from geovlm.processing.conversation import encode_conversation, question_messages

    model, processor = tiny_pair
    random_projector_bias(model)
    save_legacy_folder(model, processor, tmp_path / "old")
    loaded, loaded_processor = load_pretrained(tmp_path / "old")
    messages = question_messages("Find x.")
    ids = encode_conversation(processor, messages, add_generation_prompt=True).input_ids
    assert encode_conversation(loaded_processor, messages, add_generation_prompt=True).input_ids == ids
    pixels = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(loaded(input_ids=torch.tensor([ids]), pixel_values=pixels).logits,
                               model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits, rtol=0, atol=0)
    assert loaded_processor.chat_template != processing_geovlm.LEGACY_CHATML_TEMPLATE  # blocks work now
