"""Edited or mismatched model folders are refused when they load, in one line naming the file and the fix,
before anything large is allocated (issue #24, items 9 and 12)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from geovlm import GeoVLM, load_pretrained
from geovlm.cli import main as cli_main
from geovlm.modeling import GeoVLMConfig

pytestmark = pytest.mark.integration  # edited model folders through the ask CLI (each loads a tokenizer)


def edited_copy(model_dir: Path, tmp_path: Path, name: str = "m") -> Path:
    """A writable copy of the session's saved tiny model folder."""
    return Path(shutil.copytree(model_dir, tmp_path / name))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def no_allocation(monkeypatch):
    """Fails the test if a model's weights are loaded: every refusal here must come before that."""
    def refuse(*args, **kwargs):
        raise AssertionError("GeoVLM.from_pretrained was called: the folder was not refused first")

    monkeypatch.setattr(GeoVLM, "from_pretrained", refuse)


def ask_error(tmp_path: Path, folder: Path, capsys) -> str:
    """`geovlm ask FOLDER` must exit 2 with one line on stderr; that line."""
    image = tmp_path / "d.png"
    Image.new("RGB", (32, 32), "white").save(image)
    capsys.readouterr()
    assert cli_main(["ask", str(folder), str(image), "Find x."]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("geovlm ask: error: cannot load model"), err
    return err


# ------------------------------------------------------------------------- item 9: config against weights
@pytest.mark.parametrize("key", ["text_config", "vision_config"])
@pytest.mark.parametrize("how", ["removed", "null", "empty"])
def test_a_config_without_a_backbone_config_is_refused_in_one_line(model_dir, tmp_path, capsys, no_allocation,
                                                                    key, how):
    folder = edited_copy(model_dir, tmp_path)
    edit_json(folder / "config.json",
              lambda c: c.pop(key) if how == "removed" else c.update({key: None if how == "null" else {}}))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=key) as caught:
        load_pretrained(folder)
    assert time.perf_counter() - start < 10, "the refusal must come before a default-size model is built"
    assert "\n" not in str(caught.value)
    assert key in ask_error(tmp_path, folder, capsys)


def test_a_bare_config_still_builds_for_transformers_internals():
    # transformers builds `GeoVLMConfig()` to find a config's non-default fields (`to_diff_dict`).
    assert GeoVLMConfig().text_config is not None
    assert "text_config" in GeoVLMConfig.from_preset("tiny").to_diff_dict()


def layers(count):
    """An edit giving the text config `count(old count)` layers (and dropping the per-layer list it keeps)."""
    def edit(config):
        text = config["text_config"]
        text.update(num_hidden_layers=count(text["num_hidden_layers"]), layer_types=None)
    return edit


@pytest.mark.parametrize("edit, where", [
    (lambda c: c["text_config"].update(hidden_size=2 * c["text_config"]["hidden_size"]), "is [151936, 64]"),
    (layers(lambda n: n + 1), "has no model.language_model.layers.2."),
    (layers(lambda n: n - 1), "has no place in the model of config.json"),
    (lambda c: c["vision_config"].update(hidden_size=2 * c["vision_config"]["hidden_size"]), "linear_1.weight is [64, 256]"),
    # A text config emptied of its fields describes a default (7B-size) Qwen2: refused from the headers.
    (lambda c: c.update(text_config={"model_type": "qwen2"}), "is [151936, 64]"),
], ids=["wider", "more-layers", "fewer-layers", "wider-tower", "default-qwen2"])
def test_a_config_that_does_not_fit_the_weights_is_refused_from_their_headers(model_dir, tmp_path, capsys,
                                                                               no_allocation, edit, where):
    folder = edited_copy(model_dir, tmp_path)
    edit_json(folder / "config.json", edit)
    start = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        load_pretrained(folder)
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    assert "\n" not in message and "config.json" in message and where in message, message
    assert "model.safetensors" in ask_error(tmp_path, folder, capsys)


def test_a_config_that_fails_its_own_validation_is_one_line(model_dir, tmp_path, capsys, no_allocation):
    # transformers' validators raise a multi-line error that is not a ValueError.
    folder = edited_copy(model_dir, tmp_path)
    edit_json(folder / "config.json", lambda c: c["text_config"].update(num_hidden_layers=3))
    with pytest.raises(ValueError, match=r"config\.json: .*layer_types") as caught:
        load_pretrained(folder)
    assert "\n" not in str(caught.value)
    assert "layer_types" in ask_error(tmp_path, folder, capsys)


def test_a_sharded_folder_is_checked_from_every_shard_header(tiny_pair, tmp_path, no_allocation):
    model, processor = tiny_pair
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size="2MB")
    processor.save_pretrained(folder)
    index = folder / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    assert len(shards) > 1
    edit_json(folder / "config.json", lambda c: c["text_config"].update(hidden_size=128))
    with pytest.raises(ValueError, match=r"model-000\d\d-of-000\d\d\.safetensors but \[.*\] by config\.json"):
        load_pretrained(folder)
    (folder / shards[-1]).unlink()
    with pytest.raises(ValueError, match=f"{shards[-1]}.*listed in model.safetensors.index.json"):
        load_pretrained(folder)


def test_a_pytorch_bin_folder_is_checked_without_reading_its_tensors(model_dir, tmp_path, no_allocation):
    import torch
    from safetensors.torch import load_file

    folder = edited_copy(model_dir, tmp_path)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    edit_json(folder / "config.json", lambda c: c["text_config"].update(hidden_size=128))
    with pytest.raises(ValueError, match=r"is \[151936, 64\] in pytorch_model\.bin but \[151936, 128\] by config"):
        load_pretrained(folder)


@pytest.mark.parametrize("damage", ["not-safetensors", "bad-index"])
def test_unreadable_weight_headers_are_one_line(model_dir, tmp_path, no_allocation, damage):
    folder = edited_copy(model_dir, tmp_path)
    if damage == "not-safetensors":
        (folder / "model.safetensors").write_bytes(b"\x00" * 3)
        match = "model.safetensors"
    else:
        (folder / "model.safetensors").unlink()
        (folder / "model.safetensors.index.json").write_text("[1]")
        match = "model.safetensors.index.json"
    with pytest.raises(ValueError, match=match) as caught:
        load_pretrained(folder)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------- item 12: processor and chat template
def test_processor_tokens_per_image_must_match_the_model(model_dir, tmp_path, capsys):
    folder = edited_copy(model_dir, tmp_path)
    edit_json(folder / "processor_config.json", lambda c: c.update(num_image_tokens=16))
    with pytest.raises(ValueError, match=r"processor_config\.json.*16.*49") as caught:
        load_pretrained(folder)
    assert "\n" not in str(caught.value) and "num_image_tokens" in str(caught.value)
    assert "processor_config.json" in ask_error(tmp_path, folder, capsys)


def test_config_image_token_id_must_be_the_tokenizers_image_pad(model_dir, tmp_path, capsys):
    folder = edited_copy(model_dir, tmp_path)
    edit_json(folder / "config.json", lambda c: c.update(image_token_id=151654))
    with pytest.raises(ValueError, match=r"config\.json.*image_token_id 151654.*151655") as caught:
        load_pretrained(folder)
    assert "\n" not in str(caught.value)
    assert "image_token_id" in ask_error(tmp_path, folder, capsys)


def test_config_span_markers_must_match_the_processors(model_dir, tmp_path):
    folder = edited_copy(model_dir, tmp_path)
    edit_json(folder / "config.json", lambda c: c.update(vision_start_token_id=None))
    with pytest.raises(ValueError, match=r"vision_start_token_id"):
        load_pretrained(folder)


@pytest.mark.parametrize("template, problem", [
    ("{%- for message in messages -%}{{ message['content'] }}", "syntax"),
    ("{{- messages | no_such_filter -}}", "no_such_filter"),
    # Inside an `if`, jinja defers an unknown filter to rendering: the template is rendered at load, too.
    ("{%- if add_generation_prompt -%}{{- 'x' | no_such_filter -}}{%- endif -%}", "no_such_filter"),
    ("{{- raise_exception('this template refuses everything') -}}", "refuses everything"),
    # A template that drops the image leaves `ask` with an image and no place for it.
    ("{%- for message in messages -%}{{- message['role'] -}}{%- endfor -%}", "no image"),
], ids=["syntax", "unknown-filter", "unknown-filter-in-if", "raises", "drops-the-image"])
def test_a_broken_chat_template_is_refused_at_load(model_dir, tmp_path, capsys, template, problem):
    folder = edited_copy(model_dir, tmp_path)
    (folder / "chat_template.jinja").write_text(template)
    with pytest.raises(ValueError, match="chat_template.jinja") as caught:
        load_pretrained(folder)
    message = str(caught.value)
    assert "\n" not in message and problem in message, message
    assert "chat_template.jinja" in ask_error(tmp_path, folder, capsys)


def test_the_saved_folder_and_a_custom_template_still_load(model_dir, tmp_path):
    model, processor = load_pretrained(model_dir)
    assert processor.num_image_tokens == model.config.num_image_tokens
    folder = edited_copy(model_dir, tmp_path)
    custom = ("{#- the user's own ChatML -#}{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] "
              "+ '<|im_end|>\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
              "{%- endif -%}")
    (folder / "chat_template.jinja").write_text(custom)
    _, processor = load_pretrained(folder)
    assert processor.chat_template == custom
