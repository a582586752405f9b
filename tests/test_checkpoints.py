"""Loading real-format backbones, self-contained folders, and checkpoints made by the seed code."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipConfig, SiglipModel

from geovlm import GeoVLM, load_pretrained
from geovlm.cli import main as cli_main
from geovlm.modeling.presets import QWEN_TINY, SIGLIP_TINY
from geovlm.modeling.special_tokens import IM_END_ID, IMAGE_PAD_ID, VISION_START_ID

PAD = IMAGE_PAD_ID


def save_backbones(root, tokenizer, with_tokenizer: bool = True):
    """A full SiglipModel (text tower included, as google/siglip-* ship) and a Qwen2 LM with its tokenizer."""
    torch.manual_seed(0)
    siglip = SiglipModel(SiglipConfig(vision_config=SIGLIP_TINY, text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100)))
    llm = Qwen2ForCausalLM(Qwen2Config(**QWEN_TINY))
    vision_dir, llm_dir = root / "siglip", root / "qwen"
    siglip.save_pretrained(vision_dir)
    llm.save_pretrained(llm_dir)
    if with_tokenizer:
        tokenizer.save_pretrained(llm_dir)
    return siglip, llm, vision_dir, llm_dir


def test_from_backbones_loads_weights_and_saves_self_contained(tmp_path, tokenizer):
    siglip, llm, vision_dir, llm_dir = save_backbones(tmp_path, tokenizer)
    model = GeoVLM.from_backbones(vision_dir, llm_dir)
    ours = model.model.vision_tower.embeddings.patch_embedding.weight
    assert torch.equal(ours, siglip.vision_model.embeddings.patch_embedding.weight)
    assert torch.equal(model.model.language_model.layers[1].mlp.up_proj.weight, llm.model.layers[1].mlp.up_proj.weight)
    assert torch.equal(model.lm_head.weight, llm.lm_head.weight)
    assert model.config.num_image_tokens == 49
    out = tmp_path / "geovlm"
    model.save_pretrained(out)
    text = (out / "config.json").read_text()
    assert str(tmp_path) not in text, "a saved folder must not point back at the backbones"
    reloaded = GeoVLM.from_pretrained(out)
    assert torch.equal(reloaded.model.projector.linear_2.weight, model.model.projector.linear_2.weight)


def seed_forward(seed_state, siglip, llm, ids, pixels, k):
    """The seed code's forward, written out: full SiglipModel → view(b, -1, k·d) → linear2(silu(linear1))
    → index-assign into the text embeddings → Qwen2 LM."""
    text_embeds = llm.get_input_embeddings()(ids)
    patches = siglip.vision_model(pixels).last_hidden_state
    b, _, d = patches.shape
    merged = patches.view(b, -1, d * k)
    feats = F.linear(F.silu(F.linear(merged, seed_state["linear1.weight"], seed_state["linear1.bias"])),
                     seed_state["linear2.weight"], seed_state["linear2.bias"])
    rows, cols = torch.where(ids == PAD)
    text_embeds = text_embeds.clone()
    text_embeds[rows, cols] = feats.reshape(-1, feats.shape[-1])
    return llm(inputs_embeds=text_embeds).logits


def save_seed_checkpoint(tmp_path, tokenizer, with_tokenizer: bool = True):
    """A checkpoint as the seed code saved it, with the backbone folders its config names."""
    siglip, llm, vision_dir, llm_dir = save_backbones(tmp_path, tokenizer, with_tokenizer)
    torch.manual_seed(1)
    k, d, h = 4, SIGLIP_TINY["hidden_size"], QWEN_TINY["hidden_size"]
    state = {f"vision_model.{key}": v for key, v in siglip.state_dict().items()}
    state |= {f"llm_model.{key}": v for key, v in llm.state_dict().items() if key != "lm_head.weight"}
    state |= {"linear1.weight": torch.randn(h, d * k) * 0.05, "linear1.bias": torch.randn(h) * 0.05,
              "linear2.weight": torch.randn(h, h) * 0.05, "linear2.bias": torch.randn(h) * 0.05}
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    save_file({key: v.contiguous() for key, v in state.items()}, seed_dir / "model.safetensors")
    (seed_dir / "config.json").write_text(json.dumps({
        "model_type": "vlm_model", "llm_model_path": str(llm_dir), "vision_model_path": str(vision_dir),
        "freeze_vision_model": True, "image_pad_num": 49}))
    return seed_dir, state, siglip, llm, k


@pytest.mark.integration
def test_seed_checkpoint_converts_to_identical_logits(tmp_path, tokenizer):
    seed_dir, state, siglip, llm, k = save_seed_checkpoint(tmp_path, tokenizer)
    out = tmp_path / "converted"
    assert cli_main(["convert", str(seed_dir), str(out)]) == 0
    model, processor = load_pretrained(out)
    assert model.config.merge_mode == "sequential" and model.config.merge_factor == k
    prompt = processor.apply_chat_template([{"role": "user", "content": "<image>\nWhat is ∠ABC?"}],
                                           add_generation_prompt=True)
    ids = processor(images=[Image.new("RGB", (8, 8))], text=prompt, return_tensors="pt")["input_ids"]
    assert VISION_START_ID not in ids and int((ids == PAD).sum()) == 49
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=pixels).logits
        theirs = seed_forward(state, siglip.eval(), llm.eval(), ids, pixels, k)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # Direct loading of the seed folder gives the same model.
    direct, _ = load_pretrained(seed_dir)
    with torch.no_grad():
        torch.testing.assert_close(direct(input_ids=ids, pixel_values=pixels).logits, ours, rtol=0, atol=0)


def test_convert_rejects_a_folder_that_is_not_a_seed_checkpoint(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert cli_main(["convert", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "not a seed checkpoint" in capsys.readouterr().err


@pytest.mark.integration
def test_convert_does_not_replace_a_folder_without_overwrite(tmp_path, tokenizer, capsys):
    seed_dir = save_seed_checkpoint(tmp_path, tokenizer)[0]
    out = tmp_path / "converted"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert cli_main(["convert", str(seed_dir), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err and (out / "notes.txt").read_text() == "mine"
    assert cli_main(["convert", str(seed_dir), str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "notes.txt").exists()


@pytest.mark.integration
def test_convert_without_tokenizer_files_uses_the_offline_qwen_tokenizer(tmp_path, tokenizer, capsys):
    seed_dir = save_seed_checkpoint(tmp_path, tokenizer, with_tokenizer=False)[0]
    capsys.readouterr()
    assert cli_main(["convert", str(seed_dir), str(tmp_path / "converted")]) == 0
    assert "using the exact offline Qwen2.5 tokenizer" in capsys.readouterr().out
    _, processor = load_pretrained(tmp_path / "converted")
    assert processor.tokenizer.convert_tokens_to_ids("<|im_end|>") == IM_END_ID


def test_ask_refuses_a_folder_of_another_model_before_building_it(tmp_path, tokenizer, capsys):
    _, _, _, llm_dir = save_backbones(tmp_path, tokenizer)
    image = tmp_path / "d.png"
    Image.new("RGB", (32, 32), "white").save(image)
    capsys.readouterr()
    assert cli_main(["ask", str(llm_dir), str(image), "Find x."]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "qwen2 model" in err and "not a GeoVLM" in err


def test_a_truncated_weights_file_is_one_line(tmp_path, tiny_pair, capsys):
    model, processor = tiny_pair
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    image = tmp_path / "d.png"
    Image.new("RGB", (32, 32), "white").save(image)
    capsys.readouterr()
    assert cli_main(["ask", str(tmp_path / "m"), str(image), "Find x."]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("geovlm ask: error: cannot load model")


def test_a_full_siglip_checkpoint_gives_one_line_not_a_wall_of_unexpected_keys(tmp_path, tokenizer, capfd, caplog):
    siglip, _, vision_dir, llm_dir = save_backbones(tmp_path, tokenizer)
    capfd.readouterr()
    model = GeoVLM.from_backbones(vision_dir, llm_dir)
    err = capfd.readouterr().err + caplog.text
    assert "UNEXPECTED" not in err and "text_model" not in err, err
    assert sum("its text tower left out" in line for line in err.splitlines()) == 1, err
    ours = model.model.vision_tower.state_dict()
    for key, value in siglip.vision_model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(ours[key], value), key
