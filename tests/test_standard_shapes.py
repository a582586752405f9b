"""A GeoVLM folder in the tools users already have: transformers' Auto classes and pipeline (also where
geovlm is not installed), TRL's GRPOTrainer, and the calls vLLM's Transformers backend makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from geovlm import build_tiny
from geovlm.serve.chat import chat

pytestmark = pytest.mark.integration

QUESTION = "What is ∠ABC?"


def diagram() -> Image.Image:
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).polygon([(10, 100), (150, 110), (70, 10)], outline="black", width=3)
    return image


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A saved tiny model whose untied, sharpened head makes varied (random) text."""
    torch.manual_seed(3)
    model, processor = build_tiny(head_std=0.5)
    path = tmp_path_factory.mktemp("geovlm")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    diagram().save(path.parent / "diagram.png")
    return path


# Runs in a fresh interpreter in which `import geovlm` fails, as on a machine that only has transformers.
WITHOUT_GEOVLM = textwrap.dedent("""
    import importlib.abc, json, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "geovlm" or name.startswith("geovlm."):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, Blocked())
    try:
        import geovlm
        sys.exit("geovlm is importable")
    except ModuleNotFoundError:
        pass
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    folder, image_path, question = sys.argv[1:4]
    image = Image.open(image_path)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    generated = processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    pipe = pipeline("image-text-to-text", model=folder, trust_remote_code=True)
    piped = pipe(text=messages, max_new_tokens=12, generate_kwargs={"do_sample": False}, return_full_text=False)
    print(json.dumps({"generate": generated, "pipeline": piped[0]["generated_text"],
                      "model_class": type(model).__module__, "geovlm_modules": [m for m in sys.modules if m.startswith("geovlm")]}))
""")


def test_folder_loads_and_answers_through_transformers_alone(folder, tmp_path):
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", WITHOUT_GEOVLM, str(folder), str(folder.parent / "diagram.png"), QUESTION],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["geovlm_modules"] == [] and result["model_class"].startswith("transformers_modules.")
    from geovlm import load_pretrained

    model, processor = load_pretrained(folder)
    ours = chat(model, processor, diagram(), QUESTION, max_new_tokens=12)
    assert len(set(ours.split())) > 2, "degenerate reply: the comparison would not catch a difference"
    assert result["generate"] == ours
    assert result["pipeline"] == ours


def test_pipeline_and_auto_classes_with_geovlm_installed(folder):
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    from geovlm import GeoVLM, GeoVLMProcessor

    assert type(AutoModelForImageTextToText.from_pretrained(folder)) is GeoVLM
    assert type(AutoProcessor.from_pretrained(folder)) is GeoVLMProcessor
    pipe = pipeline("image-text-to-text", model=str(folder))
    messages = [{"role": "user", "content": [{"type": "image", "image": diagram()}, {"type": "text", "text": QUESTION}]}]
    reply = pipe(text=messages, max_new_tokens=12, generate_kwargs={"do_sample": False}, return_full_text=False)
    model, processor = pipe.model, pipe.processor
    assert reply[0]["generated_text"] == chat(model, processor, diagram(), QUESTION, max_new_tokens=12)


def test_grpo_trainer_runs_two_steps_on_image_prompts_and_changes_the_weights(folder, tmp_path):
    """TRL drives the model through the standard calls only: apply_chat_template with image blocks,
    processor(images=, text=, padding_side="left"), generate (prompt + completion), and the base model's
    forward (TRL computes the log-probabilities from `model.model(...).last_hidden_state` and lm_head)."""
    trl = pytest.importorskip("trl", reason="TRL needs Python >= 3.11: pip install -e '.[rl]'")
    from datasets import Dataset

    from geovlm import load_pretrained

    model, processor = load_pretrained(folder)
    model.train()
    prompts = [[{"role": "user", "content": f"Which shape is drawn? ({i})"}] for i in range(4)]
    dataset = Dataset.from_dict({"prompt": prompts, "image": [diagram()] * 4})
    seen: list[str] = []

    def reward_length(completions: list, **kwargs) -> list[float]:
        seen.extend(c[0]["content"] for c in completions)
        return [float(len(c[0]["content"])) for c in completions]

    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), use_cpu=True, bf16=False, max_steps=2,
                          per_device_train_batch_size=2, num_generations=2, max_completion_length=6, beta=0.0,
                          learning_rate=1e-2, report_to="none", logging_steps=1, save_strategy="no",
                          activation_checkpointing=False)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward_length, args=args, train_dataset=dataset,
                              processing_class=processor)
    trainer.train()
    assert len(seen) == 4 and any(seen)  # 2 steps x 1 prompt x 2 generations, decoded completions
    changed = [k for k, v in model.named_parameters() if v.requires_grad and not torch.equal(v, before[k])]
    assert any(k.startswith("model.projector.") for k in changed)
    assert any(k.startswith("model.language_model.layers.") for k in changed)


def test_the_calls_vllms_transformers_backend_makes_agree_with_the_model(folder):
    """vLLM cannot be installed here (no CPU wheel; its release pins transformers < 5.21). This replays
    the calls its Transformers backend makes on a multimodal model, as read from vLLM 0.33's source: the
    base model built from `auto_map["AutoModel"]`, attention through transformers' attention interface,
    image features from `get_image_features(...).pooler_output`, placeholder counts from the processor,
    and a decoder forward on embeddings it merged itself."""
    from transformers import AttentionInterface, AutoConfig, AutoModel, AutoProcessor
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from geovlm import load_pretrained

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert config.get_text_config() is not config  # seen as multimodal
    assert {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"} <= set(config.auto_map)
    calls: list[int] = []

    def counting_attention(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return sdpa_attention_forward(module, *args, **kwargs)

    AttentionInterface.register("geovlm_probe", counting_attention)
    config.text_config._attn_implementation = "geovlm_probe"
    base = AutoModel.from_config(config, trust_remote_code=True)
    assert type(base).__name__ == "GeoVLMModel" and base._supports_attention_backend
    reference, _ = load_pretrained(folder)
    base.load_state_dict(reference.model.state_dict())
    base.eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)

    # Placeholder expansion as vLLM finds it: the processor's image token, replaced by a run of image ids.
    dummy = (processor.vision_start_token or "") + processor.image_token + (processor.vision_end_token or "")
    out = processor(text=dummy, images=[diagram()], return_text_replacement_offsets=True, return_tensors="pt")
    replacement = out["text_replacement_offsets"][0][0]
    assert replacement["type"] == "image"
    ids = processor.tokenizer.encode(replacement["replacement"], add_special_tokens=False)
    assert max(set(ids), key=ids.count) == processor.image_token_id == config.image_token_id
    counts = processor._get_num_multimodal_tokens(image_sizes=[(120, 160)])
    assert counts.num_image_tokens == [ids.count(processor.image_token_id)] and counts.num_image_patches == [1]
    # The chat template writes the token vLLM searches for.
    rendered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}], add_generation_prompt=True)
    assert rendered.count(processor.image_token) == 1

    prompt = processor(images=[diagram()], text=rendered, return_tensors="pt")
    with torch.no_grad():
        features = base.get_image_features(prompt["pixel_values"], return_dict=True).pooler_output
        assert features.shape[:2] == (1, counts.num_image_tokens[0])
        embeds = base.get_input_embeddings()(prompt["input_ids"])
        embeds[prompt["input_ids"] == processor.image_token_id] = features.reshape(-1, features.shape[-1])
        length = embeds.shape[1]
        calls.clear()
        hidden = base(input_ids=None, inputs_embeds=embeds, use_cache=False,
                      position_ids=torch.arange(length)[None], return_dict=False)[0]
        assert sorted(calls) == list(range(config.text_config.num_hidden_layers))  # one call per layer
        expected = reference.model(**prompt).last_hidden_state
    torch.testing.assert_close(hidden, expected, rtol=1e-5, atol=1e-5)
