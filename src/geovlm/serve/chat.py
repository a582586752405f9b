"""Asking a trained model: one conversation (`chat`, optionally streamed) or a batch (`answer`).

Both go through `GeoVLM.generate` (KV cache, each image encoded once, left-padded batches) and
build prompts with the same processor code as the training data, so a model is asked exactly as it
was taught.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from geovlm.constants import IMAGE_TAG
from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, expand_to_square, load_image, to_rgb

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


def conversation(question: str, history: Sequence[Any] | None = None, with_image: bool = True) -> list[dict]:
    """Turns for a new question after `history`, with `<image>` leading the first user turn as in
    the training records. `history` holds (question, answer) pairs or `{"role", "content"}` turns."""
    turns: list[dict] = []
    for item in history or []:
        if isinstance(item, dict):
            turns.append({"role": item.get("role", item.get("from")), "content": item.get("content", item.get("value"))})
        else:
            asked, answered = item
            turns += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    turns.append({"role": "user", "content": question})
    first_user = next(t for t in turns if t["role"] in ("user", "human"))
    if with_image and IMAGE_TAG not in "".join(t["content"] for t in turns):
        first_user["content"] = f"{IMAGE_TAG}\n" + first_user["content"]
    return turns


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
    turns = conversation(question, history, with_image=pil is not None)
    batch = processor.prepare_chat([turns], [pil], system_prompt=system_prompt).to(model.device)
    options = generation_options(**generation_kwargs)
    if not stream:
        new_tokens = model.generate(**batch, **options)
        return processor.decode(new_tokens[0], skip_special_tokens=True)
    return _stream(model, processor, batch, options)


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
        turns = [conversation(q, with_image=p is not None) for q, p in zip(questions[start : start + batch_size], pils, strict=True)]
        batch = processor.prepare_chat(turns, pils, system_prompt=system_prompt).to(model.device)
        new_tokens = model.generate(**batch, **options)
        replies += processor.batch_decode(new_tokens, skip_special_tokens=True)
    return replies
