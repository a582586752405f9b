"""Asking a trained model: one conversation (`chat`, optionally streamed) or a batch (`answer`).

Functions of a model and its processor, through the standard calls any transformers user makes: the
processor's chat template and `processor(images=, text=)`, then `model.generate` (KV cache, each image
encoded once, left-padded batches). Prompts come from the same conversation code as the training data,
so a model is asked exactly as it was taught.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, expand_to_square, load_image, to_rgb
from geovlm.processing.conversation import prompt_text, question_messages

ImageInput = Image.Image | str | os.PathLike | bytes
DEFAULT_MAX_NEW_TOKENS = 512


def prepare_image(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS, pad_to_square: bool = True) -> Image.Image:
    """A path, raw bytes or PIL image → RGB on white, padded to a square, as in training."""
    if isinstance(image, Image.Image):
        if image.width * image.height > max_pixels:
            raise ImageLoadError("<image>", "too_large", f"{image.width}×{image.height} is over {max_pixels:,} pixels")
        rgb = to_rgb(image)
        return expand_to_square(rgb) if pad_to_square else rgb
    if isinstance(image, bytes):
        # The loader's checks work on files; bytes (e.g. from stdin) go through a temporary one.
        with tempfile.NamedTemporaryFile(suffix=".img") as tmp:
            tmp.write(image)
            tmp.flush()
            return load_image(tmp.name, max_pixels=max_pixels, pad_to_square=pad_to_square)
    return load_image(image, max_pixels=max_pixels, pad_to_square=pad_to_square)


def generation_options(**kwargs: Any) -> dict[str, Any]:
    """Greedy unless a temperature above 0 is asked for; `None` values mean "default"."""
    options = {k: v for k, v in kwargs.items() if v is not None}
    options.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    temperature = options.get("temperature", 0.0)
    if temperature and temperature > 0:
        options["do_sample"] = True
    else:
        options.pop("temperature", None)
        options.pop("top_p", None)
        options["do_sample"] = False
    return options


def chat(
    model: Any,
    processor: Any,
    image: ImageInput | None,
    question: str,
    history: Sequence[Any] | None = None,
    stream: bool = False,
    system_prompt: str | None = ...,  # type: ignore[assignment]
    **generation_kwargs: Any,
) -> str | Iterator[str]:
    """The model's reply to `question` about `image`; with `stream=True`, an iterator of text chunks."""
    pil = prepare_image(image) if image is not None else None
    messages = question_messages(question, history, with_image=pil is not None)
    options = generation_options(**generation_kwargs)
    batch = prompt_batch(model, processor, [messages], [pil], system_prompt, options["max_new_tokens"])
    if not stream:
        output = model.generate(**batch, **options)
        return processor.decode(output[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return _stream(model, processor, batch, options)


class ContextTooLong(ValueError):
    """A prompt plus the tokens asked for do not fit the model's context."""


def prompt_batch(
    model: Any, processor: Any, conversations: Sequence[list[dict]], images: Sequence[Image.Image | None],
    system_prompt: Any, max_new_tokens: int,
) -> Any:
    """A left-padded generation batch on the model's device; refuses prompts the context cannot hold."""
    texts = [prompt_text(processor, messages, system_prompt) for messages in conversations]
    batch = processor(images=[im for im in images if im is not None] or None, text=texts, return_tensors="pt",
                      padding=True)
    limit = model.config.text_config.max_position_embeddings
    n_prompt = int(batch["attention_mask"].sum(dim=1).max())
    if n_prompt + max_new_tokens > limit:
        raise ContextTooLong(f"the prompt takes {n_prompt} tokens; with max_new_tokens={max_new_tokens} that "
                             f"exceeds the model's context of {limit} tokens")
    return batch.to(model.device)


def _stream(model: Any, processor: Any, batch: Any, options: dict[str, Any]) -> Iterator[str]:
    """Generate in a thread, yield text as it comes; a consumer that stops early (a closed demo
    tab, Ctrl-C) also stops the generation, so no thread is left running in the background."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = threading.Event()
    errors: list[BaseException] = []

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    def run() -> None:
        try:
            model.generate(**batch, streamer=streamer, stopping_criteria=StoppingCriteriaList([StopWhenAsked()]),
                           **options)
        except BaseException as err:  # surfaced in the caller's thread below
            errors.append(err)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        for chunk in streamer:
            if chunk:
                yield chunk
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]


def answer(
    model: Any,
    processor: Any,
    images: Sequence[ImageInput | None],
    questions: Sequence[str],
    batch_size: int = 8,
    system_prompt: str | None = ...,  # type: ignore[assignment]
    **generation_kwargs: Any,
) -> list[str]:
    """Replies to many single-turn questions, `batch_size` at a time (left-padded batches)."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    options = generation_options(**generation_kwargs)
    replies: list[str] = []
    for start in range(0, len(questions), batch_size):
        pils = [prepare_image(im) if im is not None else None for im in images[start : start + batch_size]]
        conversations = [question_messages(q, with_image=p is not None)
                         for q, p in zip(questions[start : start + batch_size], pils, strict=True)]
        batch = prompt_batch(model, processor, conversations, pils, system_prompt, options["max_new_tokens"])
        output = model.generate(**batch, **options)
        replies += processor.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return replies
