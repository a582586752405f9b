"""Asking a trained model: one conversation (`chat`, optionally streamed) or a batch (`answer`).

Functions of a model and its processor, through the standard calls any transformers user makes: the
processor's chat template and `processor(images=, text=)`, then `model.generate` (KV cache, each image
encoded once, left-padded batches). Prompts come from the same conversation code as the training data,
so a model is asked exactly as it was taught, and every conversation goes through `conversation`, which
keeps user text text: a question holding one of the tokenizer's control tokens (`<|im_end|>`,
`<|im_start|>`, `<|image_pad|>`, ...) is refused, since the tokenizer would read it as that token and let
a user forge system or assistant turns.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from PIL import Image

from geovlm.constants import IMAGE_TAG
from geovlm.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, square_on_white
from geovlm.processing.conversation import Message, prompt_text, question_messages

ImageInput = Image.Image | str | os.PathLike | bytes
DEFAULT_MAX_NEW_TOKENS = 512


def prepare_image(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS, pad_to_square: bool = True) -> Image.Image:
    """A path, raw bytes or PIL image → RGB on white, padded to a square, as in training."""
    if isinstance(image, Image.Image):
        if image.width * image.height > max_pixels:
            raise ImageLoadError("<image>", "too_large", f"{image.width}×{image.height} is over {max_pixels:,} pixels")
        return square_on_white(image, pad_to_square)  # the one rule training and the processor follow
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


class BadQuestion(ValueError):
    """A question that cannot be asked as it stands; the message is one line saying why and what to do."""


def _control_token_in(processor: Any, text: str) -> str | None:
    """The first of the tokenizer's added tokens (special or not: all are read as one id) in `text`."""
    tokens = set(processor.tokenizer.get_added_vocab()) | set(processor.tokenizer.all_special_tokens)
    tokens.discard(IMAGE_TAG)  # the image placeholder has its own rule
    found = [(text.find(token), token) for token in tokens if token and token in text]
    return min(found)[1] if found else None


def conversation(
    processor: Any, question: Any, history: Sequence[Any] | None = None, *, with_image: bool,
    system_prompt: Any = ...,
) -> list[Message]:
    """The messages that ask `question` after `history`, refusing with `BadQuestion` what would not be asked
    as written: text that is not a string, text holding a control token, or `<image>` tags that do not
    match the image given (at most one with an image, none without)."""
    if not isinstance(question, str):
        raise BadQuestion(f"the question must be text, got {type(question).__name__} {question!r:.40}")
    messages = question_messages(question, history, with_image=with_image)
    texts = [("the question", question)] + [("the conversation history", m["content"]) for m in messages[:-1]]
    if isinstance(system_prompt, str):
        texts.append(("the system prompt", system_prompt))
    for what, text in texts:
        token = _control_token_in(processor, text)
        if token is not None:
            raise BadQuestion(f"{what} contains {token!r}, a control token of the model: user text must stay "
                              "text, so remove it")
    tags = sum(m["content"].count(IMAGE_TAG) for m in messages)
    if with_image and tags > 1:
        raise BadQuestion(f"the question has {tags} {IMAGE_TAG} tags but asks about one image: keep at most one")
    if not with_image and tags:
        raise BadQuestion(f"the question has an {IMAGE_TAG} tag but no image is given: remove the tag or give "
                          "an image")
    return messages


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
    """The model's reply to `question` about `image`; with `stream=True`, an iterator of text chunks.
    Raises `BadQuestion` (see `conversation`) and `ContextTooLong` before generating."""
    pil = prepare_image(image) if image is not None else None
    messages = conversation(processor, question, history, with_image=pil is not None, system_prompt=system_prompt)
    options = generation_options(**generation_kwargs)
    batch = prompt_batch(model, processor, [messages], [pil], system_prompt, options["max_new_tokens"])
    if not stream:
        output = model.generate(**batch, **options)
        return processor.decode(output[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return _stream(model, processor, batch, options)


class ContextTooLong(ValueError):
    """A prompt plus the tokens asked for do not fit the model's context. `rows`: which prompts of the
    batch do not fit (indices into the questions given to `answer`; 0 for `chat`), `prompt_tokens` their
    lengths; the message is about the first of them, `describe(k)` about the k-th."""

    def __init__(self, prompt_tokens: Sequence[int], max_new_tokens: int, context: int,
                 rows: Sequence[int] = (0,)) -> None:
        self.prompt_tokens, self.rows = tuple(prompt_tokens), tuple(rows)
        self.max_new_tokens, self.context = max_new_tokens, context
        super().__init__(self.describe(0))

    def describe(self, k: int) -> str:
        return (f"the prompt takes {self.prompt_tokens[k]} tokens; with max_new_tokens={self.max_new_tokens} "
                f"that exceeds the model's context of {self.context} tokens")


def prompt_batch(
    model: Any, processor: Any, conversations: Sequence[list[dict]], images: Sequence[Image.Image | None],
    system_prompt: Any, max_new_tokens: int,
) -> Any:
    """A left-padded generation batch on the model's device; refuses prompts the context cannot hold."""
    texts = [prompt_text(processor, messages, system_prompt) for messages in conversations]
    batch = processor(images=[im for im in images if im is not None] or None, text=texts, return_tensors="pt",
                      padding=True)
    limit = model.config.text_config.max_position_embeddings
    lengths = [int(n) for n in batch["attention_mask"].sum(dim=1)]
    rows = [i for i, n in enumerate(lengths) if n + max_new_tokens > limit]
    if rows:  # every row that does not fit is named, so that a caller can set them aside and go on
        raise ContextTooLong([lengths[i] for i in rows], max_new_tokens, limit, rows)
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
    """Replies to many single-turn questions, `batch_size` at a time (left-padded batches). Raises
    `BadQuestion` for a question `conversation` refuses and `ContextTooLong` naming (in `rows`) every
    question of the first batch that does not fit."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    options = generation_options(**generation_kwargs)
    replies: list[str] = []
    for start in range(0, len(questions), batch_size):
        pils = [prepare_image(im) if im is not None else None for im in images[start : start + batch_size]]
        conversations = [conversation(processor, q, with_image=p is not None, system_prompt=system_prompt)
                         for q, p in zip(questions[start : start + batch_size], pils, strict=True)]
        try:
            batch = prompt_batch(model, processor, conversations, pils, system_prompt, options["max_new_tokens"])
        except ContextTooLong as err:
            raise ContextTooLong(err.prompt_tokens, err.max_new_tokens, err.context,
                                 [start + row for row in err.rows]) from None
        output = model.generate(**batch, **options)
        replies += processor.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return replies
