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
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from transformers import ProcessorMixin
from transformers.processing_utils import MultiModalData

IMAGE_PLACEHOLDER = "<image>"  # where an image goes in a record's or a prompt's text
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # Qwen2.5's generic one, and the seed code's
WHITE: tuple[int, int, int] = (255, 255, 255)
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
logger = logging.getLogger(__name__)

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


def square_on_white(image: Any, pad_to_square: bool = True, background: tuple[int, int, int] = WHITE) -> Any:
    """The one rule for how a decoded image enters the model, in training (`geovlm.data.images.load_image`)
    and through this processor alike: EXIF orientation applied, any Pillow mode converted to RGB with
    transparency composited on `background`, then (optionally) padded to a centred square of it.
    Other inputs (arrays, tensors) pass unchanged."""
    if not isinstance(image, Image.Image):
        return image
    background = check_background(background)
    rgb = to_rgb(_exif_transpose(image), background)
    return expand_to_square(rgb, background) if pad_to_square else rgb


def to_rgb(image: Image.Image, background: Sequence[int] = WHITE) -> Image.Image:
    """Convert an image of any Pillow mode to RGB, compositing transparency on `background`.

    16-bit and 32-bit integer greys (`I;16*`, `I`) are read as 0..65535 and scaled to 0..255 (so mid-grey
    stays mid-grey instead of clipping to white); `F` follows Pillow's own convention of values on the
    0..255 scale. Raises ValueError for a mode Pillow cannot convert."""
    bg = check_background(background)
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_depth_to_grey(image)
    elif image.mode == "La":
        image = image.convert("LA")  # Pillow cannot go from premultiplied La straight to RGBA
    if image.mode in _ALPHA_MODES or image.has_transparency_data:
        rgba = image.convert("RGBA")  # handles palette alpha and info["transparency"] colour keys
        out = Image.new("RGB", rgba.size, bg)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return image if image.mode == "RGB" else image.convert("RGB")


def expand_to_square(image: Image.Image, background: Sequence[int] = WHITE) -> Image.Image:
    """Pad `image` with `background` to a square, keeping it centred (LLaVA's `expand2square`)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = Image.new(image.mode, (side, side), check_background(background))
    out.paste(image, ((side - width) // 2, (side - height) // 2))
    return out


def _exif_transpose(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block is not a broken image
        # The pixels decoded fine; like browsers, show them as stored rather than dropping the image.
        logger.warning("ignoring an unreadable EXIF orientation: %s: %s", type(exc).__name__, exc)
        return image


def _high_depth_to_grey(image: Image.Image) -> Image.Image:
    """Scale an I/I;16*/F image to 8-bit L (or LA when a colour key marks transparency)."""
    values = np.asarray(image)
    if image.mode == "F":
        grey = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    else:
        # 65535 / 255 == 257, so (v + 128) // 257 rounds to nearest; values above 16 bits saturate.
        wide = values.astype(np.int64)
        grey8 = np.clip((wide + 128) // 257, 0, 255).astype(np.uint8)
    out = Image.fromarray(grey8)
    key = image.info.get("transparency")
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        alpha = np.where(values == key, 0, 255).astype(np.uint8)
        out = Image.merge("LA", (out, Image.fromarray(alpha)))
    return out


def check_background(background: Sequence[int]) -> tuple[int, int, int]:
    bg = tuple(background)
    if len(bg) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in bg):
        raise ValueError(f"background must be three integers in 0..255, got {background!r}")
    return bg  # type: ignore[return-value]


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
        flat = [square_on_white(image, self.pad_to_square) for image in _flatten(images)]
        return super()._process_images(flat, **kwargs)

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        """`text` (a string or a list) with one placeholder per image, `images` in the order their
        placeholders appear across the batch. Pads on the left unless told otherwise, as generation needs.

        Harnesses (lmms-eval, TRL, vLLM) pass `videos`/`video`/`audio`/`audios` to every processor: empty
        ones (None, an empty list) are accepted and dropped; non-empty ones are refused, since GeoVLM
        reads images only (transformers would otherwise ignore them silently)."""
        for name in ("videos", "video", "audio", "audios"):
            if _flatten(kwargs.pop(name, None)):
                raise ValueError(f"GeoVLM reads images and text only; got a non-empty `{name}` argument")
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            text = [self.mark_images(t) for t in texts]
        images = _flatten(images) or None
        if text is not None:
            # transformers >= 5.2x checks this too; the oldest that vLLM accepts (5.16.1) would drop an image.
            found, given = sum(t.count(self.image_token) for t in text), len(images or ())
            if found != given:
                raise ValueError(f"the text holds {found} image placeholder(s) but {given or 'no images'} were given: "
                                 "the number of images must equal the number of placeholders")
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


__all__ = ["DEFAULT_SYSTEM_PROMPT", "IMAGE_PLACEHOLDER", "WHITE", "GeoVLMProcessor", "chat_template_for",
           "expand_to_square", "square_on_white", "to_rgb"]
