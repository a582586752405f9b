"""Generation never dies on its own output: a model that would rather emit `<|image_pad|>` (or a vision
marker) still answers, through `generate`, `pipeline` and `geovlm eval`."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from geovlm.modeling.special_tokens import IMAGE_PAD_ID, VISION_END_ID, VISION_START_ID

VISION_IDS = (IMAGE_PAD_ID, VISION_START_ID, VISION_END_ID)


def prefer_vision_tokens(model) -> None:
    """Push the image token far above every other logit (and the markers just below it)."""

    def boost(module, inputs, logits):
        logits = logits.clone()
        logits[..., IMAGE_PAD_ID] += 1e4
        logits[..., VISION_START_ID] += 5e3
        logits[..., VISION_END_ID] += 5e3
        return logits

    model.lm_head.register_forward_hook(boost)


def prompt_inputs(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape is drawn?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=[Image.new("RGB", (64, 64), "white")], text=text, return_tensors="pt")


def test_generate_never_emits_vision_tokens(tiny_pair):
    model, processor = tiny_pair
    prefer_vision_tokens(model)
    inputs = prompt_inputs(processor)
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(new) == 6 and not set(new) & set(VISION_IDS)


def test_a_generated_image_token_is_only_a_token(tiny_pair):
    # Without the suppression (a user's own generation config), an emitted <|image_pad|> is embedded as
    # text on the next step instead of failing the placeholder check meant for prompts.
    model, processor = tiny_pair
    prefer_vision_tokens(model)
    model.generation_config.suppress_tokens = None
    inputs = prompt_inputs(processor)
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out[0, inputs["input_ids"].shape[1]:].tolist() == [IMAGE_PAD_ID] * 4
    # The prompt check itself still holds: pads without an image are refused.
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=inputs["input_ids"])


def test_the_suppression_is_saved_and_reaches_folders_saved_without_it(tiny_pair, tmp_path):
    model, processor = tiny_pair
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert set(VISION_IDS) <= set(saved["suppress_tokens"])
    saved.pop("suppress_tokens")  # as folders saved before this rule hold it
    (tmp_path / "generation_config.json").write_text(json.dumps(saved))
    from geovlm.modeling import GeoVLM

    reloaded = GeoVLM.from_pretrained(tmp_path)
    assert set(VISION_IDS) <= set(reloaded.generation_config.suppress_tokens)


def test_pipeline_answers_with_a_model_that_prefers_vision_tokens(tiny_pair):
    from transformers import pipeline

    model, processor = tiny_pair
    prefer_vision_tokens(model)
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64), "white")},
                                             {"type": "text", "text": "Which shape is drawn?"}]}]
    out = pipe(text=messages, max_new_tokens=5, generate_kwargs={"do_sample": False, "min_new_tokens": 5},
               return_full_text=False)
    ids = processor.tokenizer(out[0]["generated_text"], split_special_tokens=False)["input_ids"]
    assert out[0]["generated_text"] and not set(ids) & set(VISION_IDS)


def test_eval_finishes_with_a_model_that_prefers_vision_tokens(tiny_pair, tmp_path):
    from geovlm.eval.evaluate import evaluate

    model, processor = tiny_pair
    prefer_vision_tokens(model)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64), "white").save(tmp_path / "images" / "a.png")
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": "a.png", "text": "Which one? A B C D"}) + "\n"
                                 for i in range(3)))
    out = tmp_path / "pred.jsonl"
    evaluate(model, processor, questions, None, tmp_path / "images", out, batch_size=2, max_new_tokens=4,
             progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in records] == [0, 1, 2]
    assert all(r["text"] and not r.get("error") for r in records)
