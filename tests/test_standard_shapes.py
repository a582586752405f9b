"""A GeoVLM folder in the tools users already have: transformers' Auto classes and pipeline (also where
geovlm is not installed), TRL's GRPOTrainer, and the calls vLLM's Transformers backend makes."""

from __future__ import annotations

import ast
import inspect
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


def _dispatches_through_attention_interface(module: torch.nn.Module) -> dict | None:
    """vLLM 0.34's `AttentionFuser.match` (model_executor/models/transformers/fusers/attention.py): the
    module's `forward` source assigns a local from `ALL_ATTENTION_FUNCTIONS.get_interface(...)` (or `[...]`)
    and calls it exactly once; the call's `scaling=` is what vLLM's attention layer will scale by."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(type(module).forward))))
    except (OSError, TypeError, SyntaxError):
        return None

    def lookup(node: ast.expr | None) -> bool:
        node = node.func if isinstance(node, ast.Call) else node
        return (isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.value, ast.Name)
                and node.value.id == "ALL_ATTENTION_FUNCTIONS")

    names = {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign)) and lookup(n.value)
             for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names]
    if len(calls) != 1:
        return None
    return {kw.arg: kw.value for kw in calls[0].keywords if kw.arg}


def _chat_template_content_format(template: str) -> str:
    """vLLM 0.34's `_detect_content_format` (renderers/hf.py): "openai" (content parts such as
    `{"type": "image"}` reach the template) when the template loops over a message's `content`, else
    "string" (the parts are flattened to text, which drops the image for a model without a placeholder)."""
    import jinja2

    root = jinja2.Environment().parse(template)
    loops = list(root.find_all(jinja2.nodes.For))
    messages = {loop.target.name for loop in loops if isinstance(loop.iter, jinja2.nodes.Name)
                and loop.iter.name == "messages" and isinstance(loop.target, jinja2.nodes.Name)}

    def content_of(node: jinja2.nodes.Node) -> bool:
        if isinstance(node, jinja2.nodes.Getitem):
            return (isinstance(node.node, jinja2.nodes.Name) and node.node.name in messages
                    and isinstance(node.arg, jinja2.nodes.Const) and node.arg.value == "content")
        return (isinstance(node, jinja2.nodes.Getattr) and isinstance(node.node, jinja2.nodes.Name)
                and node.node.name in messages and node.attr == "content")

    return "openai" if any(content_of(loop.iter) for loop in loops) else "string"


def test_the_calls_vllms_transformers_backend_makes_agree_with_the_model(folder):
    """vLLM cannot be installed here (CUDA wheels only; vLLM 0.34 pins torch==2.14.0 and
    transformers>=5.16.1,<5.23.0). This replays what `vllm serve DIR --trust-remote-code --model-impl
    transformers` does with a GeoVLM folder, as read from the vLLM 0.34.0 wheel:
    model_executor/models/registry.py (`_try_resolve_transformers`), config/model.py
    (`_get_transformers_backend_cls`), transformers_utils/config.py (`get_hf_text_config`, `uses_mrope`),
    model_executor/models/transformers/{__init__,base,causal,multimodal,fuser}.py and fusers/attention.py,
    model_executor/models/interfaces.py + utils.py (`embed_input_ids`, `_merge_multimodal_embeddings`),
    multimodal/processing/context.py (`call_hf_processor`) and renderers/hf.py (chat template choice and
    content format). Each step names the vLLM code it stands for; docs/VLLM.md has the serve command."""
    import transformers
    from safetensors import safe_open
    from transformers import AttentionInterface, AutoConfig, AutoModel, AutoProcessor
    from transformers.conversion_mapping import WeightRenaming, get_model_conversion_mapping
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from geovlm import load_pretrained

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    text_config = config.get_text_config()
    # registry.py `_try_resolve_transformers`: the architecture is not a transformers class, so the first
    # `AutoModel*` entry of auto_map (AutoConfig loaded first) gives the class, which must be backend-compatible.
    arch = config.architectures[0]
    assert not hasattr(transformers, arch)
    assert "AutoConfig" in config.auto_map
    first = next(name for name in config.auto_map if name.startswith("AutoModel"))
    model_cls = get_class_from_dynamic_module(config.auto_map[first], str(folder))
    assert model_cls.is_backend_compatible() or model_cls._can_set_attn_implementation()
    # config/model.py `_get_transformers_backend_cls` + `get_hf_text_config`: a nested text config makes it
    # TransformersMultiModalForCausalLM; the text config must name its heads; no M-RoPE (1-D positions).
    assert text_config is not config and text_config.num_attention_heads > 0
    assert not any("mrope_section" in (getattr(c, "rope_parameters", None) or {}) for c in (config, text_config))

    # base.py `_create_model` / `_patch_config`: AutoModel.from_config with the text config's attention set
    # to vLLM's (a counting stand-in here) and the dtype vLLM chose.
    calls: list[int] = []

    def counting_attention(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return sdpa_attention_forward(module, *args, **kwargs)

    AttentionInterface.register("geovlm_probe", counting_attention)
    text_config._attn_implementation = "geovlm_probe"
    base = AutoModel.from_config(config=config, dtype=torch.float32, trust_remote_code=True)
    assert type(base).__name__ == model_cls.__name__ and base._supports_attention_backend
    # `_pre_trained_model_classes` / `_find_encoder_classes` / `get_mm_mapping`: the decoder and the image
    # encoder are found by name; other modalities give back the model itself (or TypeError/ValueError).
    assert base.get_decoder() is base.language_model
    assert base.get_encoder(modality="image") is base.vision_tower
    assert base.get_encoder(modality="audio") is base
    # `_tp_plan` is read even on one GPU.
    assert isinstance(base.tp_plan or {}, dict)

    # fusers/attention.py + base.py `_create_attention_instances`: every decoder layer has exactly one
    # module that dispatches through the attention interface, declares its int `layer_idx`, resolves its
    # `scaling=` to a number and sees the patched implementation; the vision tower's attention also goes
    # through the interface but must keep its own implementation (vLLM only patches the text config).
    served: dict[int, float] = {}
    tower_dispatchers = 0
    for name, module in base.named_modules():
        if (keywords := _dispatches_through_attention_interface(module)) is None:
            continue
        if getattr(getattr(module, "config", None), "_attn_implementation", None) != "geovlm_probe":
            tower_dispatchers += name.startswith("vision_tower.")
            continue
        assert isinstance(module.layer_idx, int) and module.layer_idx not in served, name
        scaling = keywords["scaling"]
        assert isinstance(scaling, ast.Attribute) and isinstance(scaling.value, ast.Name) and scaling.value.id == "self"
        served[module.layer_idx] = float(getattr(module, scaling.attr))
    assert sorted(served) == list(range(text_config.num_hidden_layers))
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    assert all(scale == pytest.approx(head_dim**-0.5) for scale in served.values())
    assert tower_dispatchers == config.vision_config.num_hidden_layers

    # base.py `_create_hf_to_vllm_mapper` + causal.py: checkpoint names already match the module tree
    # (`model.<child of GeoVLMModel>...` and `lm_head.weight`), no transformers renaming touches them, and the
    # checkpoint has an lm_head exactly when the config says it is untied.
    with safe_open(folder / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    children = {n for n, _ in base.named_children()}
    assert base.base_model_prefix == "model"
    assert all(k == "lm_head.weight" or (k.startswith("model.") and k.split(".")[1] in children) for k in saved)
    renamings = [m for m in get_model_conversion_mapping(base) if isinstance(m, WeightRenaming)]
    assert all(r.rename_source_key(k)[0] == k for r in renamings for k in saved)
    tied = getattr(text_config, "tie_word_embeddings", False) or getattr(config, "tie_word_embeddings", False)
    assert tied == ("lm_head.weight" not in saved)
    reference, _ = load_pretrained(folder)
    assert set(reference.state_dict()) >= saved
    base.load_state_dict(reference.model.state_dict())
    base.eval()

    # multimodal.py `MultiModalProcessingInfo`: the modalities come from the processor's sub-processors.
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert hasattr(processor, "image_processor")
    assert not any(hasattr(processor, n) for n in ("audio_processor", "feature_extractor", "video_processor"))
    # Profiling: the most tokens over size candidates read off `image_processor.size`, via
    # `_get_num_multimodal_tokens(...)["num_image_tokens"]`; a real image must not give more.
    size = processor.image_processor.size
    candidates = [(size.get("height", size.get("max_height")), size.get("width", size.get("max_width"))), (10_000, 10_000)]
    profiled = max(processor._get_num_multimodal_tokens(image_sizes=[hw])["num_image_tokens"][0] for hw in candidates)
    counts = processor._get_num_multimodal_tokens(image_sizes=[(120, 160), (40, 300)])
    assert max(counts["num_image_tokens"]) <= profiled

    # `MultiModalDummyInputsBuilder.get_dummy_text` + `_apply_hf_processor_main` + context.py
    # `call_hf_processor`: the items are processed behind the bare placeholders, asking for the offsets.
    images = [diagram(), diagram().resize((40, 300))]
    token = getattr(processor, "image_start_token", "") + processor.image_token + getattr(processor, "image_end_token", "")
    out = processor(text=token * len(images), images=images, return_text_replacement_offsets=True, return_tensors="pt")
    for dropped in ("attention_mask", "mm_token_type_ids", "token_type_ids", "input_ids"):
        out.pop(dropped, None)
    offsets = out.pop("text_replacement_offsets")[0]
    assert [entry["type"] for entry in offsets] == ["image"] * len(images)
    replacements = [torch.tensor(processor.tokenizer.encode(e["replacement"], add_special_tokens=False)) for e in offsets]
    # `_get_embed_token_id`: the id a replacement repeats is where the embeddings go.
    assert all(int(ids.mode().values) == processor.image_token_id == config.image_token_id for ids in replacements)
    per_image = [int((ids == processor.image_token_id).sum()) for ids in replacements]
    assert per_image == counts["num_image_tokens"]
    # `_get_num_image_patches`: rows of image data per image, from the processor's count, must add up.
    assert counts["num_image_patches"] == [1, 1] and out["pixel_values"].shape[0] == sum(counts["num_image_patches"])
    image_fields = dict(out)  # one modality: every remaining key goes to get_image_features

    # renderers/hf.py: the processor's chat template is used, as "openai" content format, and a
    # `{"type": "image"}` part renders as the one token `_get_prompt_updates` targets.
    assert _chat_template_content_format(processor.chat_template) == "openai"
    target = processor.tokenizer.encode(processor.image_token, add_special_tokens=False)
    assert target == [processor.image_token_id]
    rendered = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}], add_generation_prompt=True)
    prompt_ids = processor.tokenizer.encode(rendered, add_special_tokens=False)
    assert prompt_ids.count(processor.image_token_id) == 1
    # `PromptReplacement`: vLLM expands the tokenized prompt itself; it must equal our processor's expansion.
    at = prompt_ids.index(processor.image_token_id)
    expanded = prompt_ids[:at] + replacements[0].tolist() + prompt_ids[at + 1:]
    prompt = processor(images=[images[0]], text=rendered, return_tensors="pt")
    assert expanded == prompt["input_ids"][0].tolist()

    with torch.no_grad():
        # `embed_multimodal` -> `_process_image_input` -> `_get_features` -> `_split_embeddings`.
        calls.clear()
        features = base.get_image_features(image_fields.pop("pixel_values"), return_dict=True, **image_fields).pooler_output
        assert calls == []  # the tower does not reach vLLM's (paged, causal) attention
        flat = features.reshape(-1, features.shape[-1])
        assert flat.shape[0] % len(images) == 0 and flat.shape[0] // len(images) == per_image[0]
        # interfaces.py `embed_input_ids` + `_merge_multimodal_embeddings`: text embeddings, image rows
        # written where the expanded prompt holds the embed token.
        ids = torch.tensor(expanded)
        embeds = base.get_input_embeddings()(ids)
        embeds[ids == processor.image_token_id] = flat[: per_image[0]]
        # base.py `forward`: batch of one, no ids, 1-D positions, no cache, tuple output.
        calls.clear()
        hidden = base(input_ids=None, inputs_embeds=embeds[None], use_cache=False,
                      position_ids=torch.arange(len(expanded))[None], return_dict=False)[0][0, ...]
        assert sorted(calls) == list(range(text_config.num_hidden_layers))  # one call per layer
        expected = reference(**prompt)
        # causal.py: the lm_head is text_config.vocab_size x hidden_size, loaded from `lm_head.weight`.
        lm_head = reference.lm_head.weight
        assert tuple(lm_head.shape) == (text_config.vocab_size, text_config.hidden_size)
        torch.testing.assert_close(hidden @ lm_head.T, expected.logits[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(hidden, reference.model(**prompt).last_hidden_state[0], rtol=1e-5, atol=1e-5)
