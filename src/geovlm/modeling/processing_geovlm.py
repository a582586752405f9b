"""`GeoVLMProcessor`: SigLIP image preprocessing + the Qwen2.5 tokenizer + a ChatML chat template, in the
shape of transformers' multimodal processors.

`processor(images=..., text=...)` expands each image placeholder in the text (`<image>`, as LLaVA records
write it, or a bare `<|image_pad|>`) into `<|vision_start|>` + N × `<|image_pad|>` + `<|vision_end|>` and
checks that there are as many placeholders as images. `apply_chat_template` takes messages whose content
is a string or a list of blocks (`{"type": "image"}`, `{"type": "text", "text": ...}`).

This file ships inside every saved model folder, so it imports only transformers, PIL and the standard
library.
"""

from __future__ import annotations

import json
from typing import Any

from PIL import Image, ImageOps
from transformers import ProcessorMixin
from transformers.processing_utils import MultiModalData

IMAGE_PLACEHOLDER = "<image>"  # where an image goes in a record's or a prompt's text
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # Qwen2.5's generic one, and the seed code's
WHITE = (255, 255, 255)

# The template that processors before the LLaVA layout saved; replaced by `chat_template_for` on load.
LEGACY_CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def chat_template_for(system_prompt: str | None, image_text: str = "<|vision_start|><|image_pad|><|vision_end|>") -> str:
    """ChatML with GeoVLM's conventions: the system prompt is added when the messages have no system turn
    (the template variable `default_system` overrides it, `none` leaves it out); an image block, or
    `<image>` in a string content, renders as `image_text` (one image token between the span markers,
    which `__call__` repeats), on its own line before the text as in the training records; contents are
    stripped."""
    default = json.dumps(system_prompt, ensure_ascii=False) if system_prompt is not None else "none"
    image = json.dumps(image_text, ensure_ascii=False)
    return (
        "{%- set system_text = default_system if default_system is defined else " + default + " -%}"
        "{%- if system_text is not none and (not messages or messages[0]['role'] != 'system') -%}"
        "{{- '<|im_start|>system\\n' + (system_text | trim) + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}"
        "{%- set content = message['content'] | replace('<image>', " + image + ") -%}"
        "{%- else -%}"
        "{%- set parts = namespace(text='') -%}"
        "{%- for block in message['content'] -%}"
        "{%- if block['type'] == 'image' or 'image' in block -%}"
        "{%- set parts.text = parts.text + " + image + " + '\\n' -%}"
        "{%- elif block['type'] == 'text' -%}"
        "{%- set parts.text = parts.text + block['text'] -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- set content = parts.text -%}"
        "{%- endif -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + (content | trim) + '<|im_end|>\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- '<|im_start|>assistant\\n' -}}"
        "{%- endif -%}"
    )


def square_on_white(image: Any) -> Any:
    """A PIL image → RGB (transparency composited on white), padded to a centred square on white, as in
    training. Other inputs (arrays, tensors) pass unchanged."""
    if not isinstance(image, Image.Image):
        return image
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, WHITE)
        image.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new("RGB", (side, side), WHITE)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def _flatten(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return [leaf for item in images for leaf in _flatten(item)]
    return [images]


class GeoVLMProcessor(ProcessorMixin):
    """Images to `pixel_values`, text with image placeholders to `input_ids`.

    Args:
        image_processor: a SigLIP image processor (224×224, mean = std = 0.5).
        tokenizer: the Qwen2.5 tokenizer.
        chat_template: Jinja template; by default ChatML with `system_prompt` (see `chat_template_for`).
        num_image_tokens: `<|image_pad|>` tokens per image; take it from `GeoVLMConfig.num_image_tokens`.
        image_token: the token whose embeddings the image features replace.
        vision_start_token / vision_end_token: markers around an image span, or `None` (the seed format).
        system_prompt: system turn the chat template adds when a conversation has none; `None`: no system turn.
        pad_to_square: pad images to a square on white before resizing, as training does.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        num_image_tokens: int = 49,
        image_token: str = "<|image_pad|>",
        vision_start_token: str | None = "<|vision_start|>",
        vision_end_token: str | None = "<|vision_end|>",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        pad_to_square: bool = True,
        **kwargs: Any,
    ) -> None:
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.vision_start_token = vision_start_token
        self.vision_end_token = vision_end_token
        self.pad_to_square = pad_to_square
        self._system_prompt = system_prompt
        generated = self._template()
        own = chat_template is None or chat_template in (LEGACY_CHATML_TEMPLATE, generated)
        super().__init__(image_processor, tokenizer, chat_template=generated if own else chat_template)
        self._own_template = own

    def _template(self) -> str:
        marked = (self.vision_start_token or "") + self.image_token + (self.vision_end_token or "")
        return chat_template_for(self._system_prompt, marked)

    @property
    def system_prompt(self) -> str | None:
        return self._system_prompt

    @system_prompt.setter
    def system_prompt(self, value: str | None) -> None:
        self._system_prompt = value
        if getattr(self, "_own_template", False):
            self.chat_template = self._template()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "system_prompt": self.system_prompt}  # a property, not in __dict__

    # ----------------------------------------------------------------- text
    @property
    def image_span(self) -> str:
        """What one image placeholder becomes in the tokenized text."""
        return (self.vision_start_token or "") + self.image_token * self.num_image_tokens + (
            self.vision_end_token or ""
        )

    def mark_images(self, text: str) -> str:
        """`<image>` → `<|vision_start|><|image_pad|><|vision_end|>`: one image token per image, which
        `__call__` then repeats `num_image_tokens` times."""
        marked = (self.vision_start_token or "") + self.image_token + (self.vision_end_token or "")
        return text.replace(IMAGE_PLACEHOLDER, marked)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs: Any) -> str:
        return self.image_token * self.num_image_tokens

    def _process_images(self, images: Any, **kwargs: Any) -> tuple[dict, list[str]]:
        flat = _flatten(images)
        if self.pad_to_square:
            flat = [square_on_white(image) for image in flat]
        return super()._process_images(flat, **kwargs)

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        """`text` (a string or a list) with one placeholder per image, `images` in the order their
        placeholders appear across the batch. Pads on the left unless told otherwise, as generation needs."""
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            text = [self.mark_images(t) for t in texts]
        images = _flatten(images) or None
        if "padding_side" not in kwargs and "padding_side" not in kwargs.get("text_kwargs", {}):
            kwargs["padding_side"] = "left"
        return super().__call__(images=images, text=text, **kwargs)

    def _get_num_multimodal_tokens(self, image_sizes: list | None = None, **kwargs: Any) -> MultiModalData:
        """Placeholder tokens per image (the same for every size: images are resized to the tower's)."""
        data = {}
        if image_sizes is not None:
            data = {"num_image_tokens": [self.num_image_tokens] * len(image_sizes),
                    "num_image_patches": [1] * len(image_sizes)}
        return MultiModalData(**data)


__all__ = ["DEFAULT_SYSTEM_PROMPT", "IMAGE_PLACEHOLDER", "GeoVLMProcessor", "chat_template_for", "square_on_white"]
