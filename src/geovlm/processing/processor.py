"""`GeoVLMProcessor`: SigLIP image preprocessing + the Qwen2.5 tokenizer + ChatML prompt building.

The processor owns the one place where `<image>` becomes tokens and where labels are decided, so
that training data, `chat()` and evaluation all build identical prompts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import AutoProcessor, BatchFeature, ProcessorMixin

from geovlm.constants import DEFAULT_SYSTEM_PROMPT, IGNORE_INDEX, IMAGE_TAG, ROLE_ALIASES
from geovlm.processing.tokenizer import CHATML_TEMPLATE

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class EncodedConversation:
    """Token ids of a whole conversation and its labels (-100 outside assistant replies)."""

    input_ids: list[int]
    labels: list[int]
    num_images: int

    @property
    def num_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def normalize_turns(turns: Iterable[Mapping[str, str] | Any]) -> list[dict[str, str]]:
    """Accept `{"role", "content"}`, LLaVA's `{"from", "value"}` or objects with `.role`/`.content`."""
    messages = []
    for turn in turns:
        if isinstance(turn, Mapping):
            role = turn.get("role", turn.get("from"))
            content = turn.get("content", turn.get("value"))
        else:
            role, content = turn.role, turn.content
        if role not in ROLE_ALIASES:
            raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLE_ALIASES)}")
        if not isinstance(content, str):
            raise ValueError(f"turn content must be a string, got {type(content).__name__}")
        # Stripped here, for training and inference alike, so both tokenize a turn the same way.
        messages.append({"role": ROLE_ALIASES[role], "content": content.strip()})
    return messages


class GeoVLMProcessor(ProcessorMixin):
    """Images to `pixel_values`, conversations to `input_ids` (+ `labels` for training).

    Args:
        image_processor: a SigLIP image processor (224×224, mean = std = 0.5).
        tokenizer: the Qwen2.5 tokenizer (ChatML template).
        num_image_tokens: `<|image_pad|>` tokens per image; take it from `GeoVLMConfig.num_image_tokens`.
        vision_start_token / vision_end_token: markers around an image span, or `None` for the seed
            format (pads only).
        system_prompt: system turn prepended when a conversation has none; `None` for no system turn.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        num_image_tokens: int = 49,
        image_token: str = "<|image_pad|>",
        vision_start_token: str | None = "<|vision_start|>",
        vision_end_token: str | None = "<|vision_end|>",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        self.vision_start_token = vision_start_token
        self.vision_end_token = vision_end_token
        self.system_prompt = system_prompt
        # Always our ChatML template, never the tokenizer's own: Qwen2.5's injects "You are Qwen…" when a
        # rendered message list does not start with a system turn, which per-turn labelling relies on.
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHATML_TEMPLATE)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, config: Any, image_processor: Any = None, **kwargs: Any
    ) -> GeoVLMProcessor:
        """A processor matched to a `GeoVLMConfig` (image size, tokens per image, span markers)."""
        from transformers import SiglipImageProcessorPil

        if image_processor is None:
            size = config.vision_config.image_size
            image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
        tokens = tokenizer.convert_ids_to_tokens
        start = config.vision_start_token_id
        end = config.vision_end_token_id
        kwargs.setdefault("vision_start_token", tokens(start) if start is not None else None)
        kwargs.setdefault("vision_end_token", tokens(end) if end is not None else None)
        return cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            num_image_tokens=config.num_image_tokens,
            image_token=tokens(config.image_token_id),
            **kwargs,
        )

    # ----------------------------------------------------------------- text
    @property
    def image_span(self) -> str:
        """What one `<image>` tag becomes in the prompt text."""
        return (self.vision_start_token or "") + self.image_token * self.num_image_tokens + (
            self.vision_end_token or ""
        )

    def with_system(self, messages: list[dict[str, str]], system_prompt: str | None = ...) -> list[dict[str, str]]:
        system_prompt = self.system_prompt if system_prompt is ... else system_prompt
        if system_prompt is None or (messages and messages[0]["role"] == "system"):
            return messages
        return [{"role": "system", "content": system_prompt}, *messages]

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        """ChatML text through the tokenizer's template, with each `<image>` expanded."""
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=self.chat_template
        )
        return text.replace(IMAGE_TAG, self.image_span)

    def build_prompt(
        self, turns: Iterable[Any], add_generation_prompt: bool = True, system_prompt: str | None = ...
    ) -> str:
        """The prompt text for generation: system turn, the given turns, then `<|im_start|>assistant\\n`."""
        return self.render(self.with_system(normalize_turns(turns), system_prompt), add_generation_prompt)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def generation_prompt_ids(self) -> list[int]:
        """The ids that open an assistant turn (`<|im_start|>assistant\n` in ChatML)."""
        key = self.chat_template
        cached = self.__dict__.get("_generation_prompt_cache")
        if cached is None or cached[0] != key:  # rendered once per template, not once per sample
            probe = [{"role": "user", "content": "x"}]
            text = self.render(probe, add_generation_prompt=True)[len(self.render(probe)) :]
            cached = self._generation_prompt_cache = (key, self._encode(text))
        return list(cached[1])

    def encode_conversation(
        self, turns: Iterable[Any], system_prompt: str | None = ..., add_generation_prompt: bool = False
    ) -> EncodedConversation:
        """Tokenize a conversation turn by turn and label each assistant reply plus its `<|im_end|>`.

        ChatML turns are joined at special tokens, so tokenizing each turn alone gives the same ids
        as tokenizing the whole text. Turn contents are stripped of surrounding whitespace so that
        the boundary between an assistant header and its reply is also stable.
        """
        messages = self.with_system(normalize_turns(turns), system_prompt)
        header = self.generation_prompt_ids()
        tail = self._encode("\n")
        input_ids: list[int] = []
        labels: list[int] = []
        num_images = 0
        for message in messages:
            content = message["content"]
            num_images += content.count(IMAGE_TAG)
            if message["role"] != "assistant":
                ids = self._encode(self.render([{**message, "content": content}]))
                input_ids += ids
                labels += [IGNORE_INDEX] * len(ids)
                continue
            full = self._encode(self.render([{"role": "assistant", "content": content}]))
            reply = full[len(header) : len(full) - len(tail)]  # content + <|im_end|>
            if full[: len(header)] != header or full[len(full) - len(tail) :] != tail:
                raise ValueError("chat template does not frame an assistant turn as ChatML expects")
            input_ids += full
            labels += [IGNORE_INDEX] * len(header) + reply + [IGNORE_INDEX] * len(tail)
        if add_generation_prompt:
            input_ids += header
            labels += [IGNORE_INDEX] * len(header)
        return EncodedConversation(input_ids, labels, num_images)

    # ----------------------------------------------------------------- images
    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images → normalised `pixel_values` (n, 3, H, W)."""
        if not images:
            size = self.image_processor.size
            return torch.zeros(0, 3, size["height"], size["width"])
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    # ----------------------------------------------------------------- batches
    def __call__(
        self,
        text: str | Sequence[str],
        images: Image.Image | Sequence[Image.Image] | None = None,
        padding_side: str = "left",
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenize prompt texts that already carry their image spans (see `build_prompt`).

        Left padding by default, as generation needs. `images` are given in the order their spans
        appear across the batch.
        """
        texts = [text] if isinstance(text, str) else list(text)
        image_list = [images] if isinstance(images, Image.Image) else list(images or [])
        n_spans = sum(t.count(self.image_token * self.num_image_tokens) for t in texts)
        if n_spans != len(image_list):
            raise ValueError(f"the prompts hold {n_spans} image span(s) but {len(image_list)} image(s) were given")
        batch = self.tokenizer(
            texts, add_special_tokens=False, padding=True, padding_side=padding_side, return_tensors=return_tensors
        )
        data = dict(batch)
        if image_list:
            data["pixel_values"] = self.preprocess_images(image_list)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def prepare_chat(
        self,
        conversations: Sequence[Sequence[Any]],
        images: Sequence[Image.Image | None],
        system_prompt: str | None = ...,
    ) -> BatchFeature:
        """A left-padded generation batch: one conversation (ending in a user turn) per image."""
        prompts = [self.build_prompt(turns, system_prompt=system_prompt) for turns in conversations]
        return self(prompts, [image for image in images if image is not None])

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)


# Registered here (not in modeling) so that AutoProcessor finds it wherever the processor is imported.
def _register() -> None:
    from geovlm.modeling.config import GeoVLMConfig

    AutoProcessor.register(GeoVLMConfig, GeoVLMProcessor, exist_ok=True)


_register()
