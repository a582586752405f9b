"""The one conversation representation, from records through training to serving.

A conversation is a list of `{"role", "content"}` messages (ChatML roles; content a string in which
`<image>` marks an image, or a list of content blocks). Every prompt, training sample and token count in
geovlm is made from such a list with the processor's own chat template, so a model is asked exactly as
it was taught and as `processor.apply_chat_template` asks it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geovlm.constants import IGNORE_INDEX, IMAGE_TAG, ROLE_ALIASES

Message = dict[str, Any]
_NO_DEFAULT = ...  # "use the processor's system prompt"


@dataclass(frozen=True)
class EncodedConversation:
    """Token ids of a whole conversation and its labels (-100 outside assistant replies)."""

    input_ids: list[int]
    labels: list[int]
    num_images: int

    @property
    def num_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def content_text(content: Any) -> str:
    """A message content as text: a string as is, content blocks joined with `<image>` on its own line
    where an image block stands (as the chat template renders them)."""
    if isinstance(content, str):
        return content
    text = ""
    for block in content:
        if block.get("type") == "image" or "image" in block:
            text += IMAGE_TAG + "\n"
        elif block.get("type") == "text":
            text += block["text"]
    return text


def to_messages(turns: Iterable[Mapping[str, Any] | Any]) -> list[Message]:
    """Accept `{"role", "content"}`, LLaVA's `{"from", "value"}` or objects with `.role`/`.content`;
    return ChatML messages with stripped string contents (the chat template strips them too)."""
    messages = []
    for turn in turns:
        if isinstance(turn, Mapping):
            role = turn.get("role", turn.get("from"))
            content = turn.get("content", turn.get("value"))
        else:
            role, content = turn.role, turn.content
        if role not in ROLE_ALIASES:
            raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLE_ALIASES)}")
        if not isinstance(content, (str, list)):
            raise ValueError(f"turn content must be a string or a list of blocks, got {type(content).__name__}")
        messages.append({"role": ROLE_ALIASES[role], "content": content_text(content).strip()})
    return messages


def question_messages(question: str, history: Sequence[Any] | None = None, with_image: bool = True) -> list[Message]:
    """Messages for a new question after `history`, with `<image>` leading the first user turn as in the
    training records. `history` holds (question, answer) pairs or `{"role", "content"}` turns."""
    turns: list[Any] = []
    for item in history or []:
        if isinstance(item, Mapping):
            turns.append(item)
        else:
            asked, answered = item
            turns += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    messages = to_messages([*turns, {"role": "user", "content": question}])
    if with_image and not any(IMAGE_TAG in m["content"] for m in messages):
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"] = f"{IMAGE_TAG}\n" + first_user["content"]
    return messages


def with_system(processor: Any, messages: list[Message], system_prompt: str | None = _NO_DEFAULT) -> list[Message]:
    """`messages` with the system turn the chat template would add made explicit."""
    system_prompt = processor.system_prompt if system_prompt is _NO_DEFAULT else system_prompt
    if system_prompt is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render(processor: Any, messages: list[Message], add_generation_prompt: bool = False) -> str:
    """The processor's chat template over exactly `messages` (no system turn added), with each image
    placeholder expanded to its full span of image tokens."""
    text = processor.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt,
        chat_template=processor.chat_template, default_system=None,
    )
    return processor.mark_images(text).replace(processor.image_token, processor.image_token * processor.num_image_tokens)


def prompt_text(processor: Any, messages: list[Message], system_prompt: str | None = _NO_DEFAULT) -> str:
    """A generation prompt with `<image>` placeholders, as `processor(text=...)` takes it."""
    return processor.tokenizer.apply_chat_template(
        with_system(processor, messages, system_prompt), tokenize=False, add_generation_prompt=True,
        chat_template=processor.chat_template, default_system=None,
    )


def _encode(processor: Any, text: str) -> list[int]:
    return processor.tokenizer.encode(text, add_special_tokens=False)


# tokenizer -> {chat template: header ids}. Weakly keyed: an entry lives exactly as long as its tokenizer,
# so a new tokenizer can never find another's (as one at a reused id() could).
_HEADERS: weakref.WeakKeyDictionary[Any, dict[str, list[int]]] = weakref.WeakKeyDictionary()


def _assistant_header(processor: Any) -> list[int]:
    """The ids that open an assistant turn (`<|im_start|>assistant\\n` in ChatML); once per template."""
    per_template = _HEADERS.setdefault(processor.tokenizer, {})
    if processor.chat_template not in per_template:
        probe = [{"role": "user", "content": "x"}]
        text = render(processor, probe, add_generation_prompt=True)[len(render(processor, probe)) :]
        per_template[processor.chat_template] = _encode(processor, text)
    return list(per_template[processor.chat_template])


def encode_conversation(
    processor: Any, turns: Iterable[Any], system_prompt: str | None = _NO_DEFAULT, add_generation_prompt: bool = False
) -> EncodedConversation:
    """Tokenize a conversation turn by turn and label each assistant reply plus its `<|im_end|>`.

    ChatML turns are joined at special tokens, so tokenizing each turn alone gives the same ids as
    tokenizing the whole text (tests check this against `processor.apply_chat_template`).
    """
    messages = with_system(processor, to_messages(turns), system_prompt)
    header = _assistant_header(processor)
    tail = _encode(processor, "\n")
    input_ids: list[int] = []
    labels: list[int] = []
    num_images = 0
    for message in messages:
        num_images += message["content"].count(IMAGE_TAG)
        ids = _encode(processor, render(processor, [message]))
        if message["role"] != "assistant":
            input_ids += ids
            labels += [IGNORE_INDEX] * len(ids)
            continue
        if ids[: len(header)] != header or ids[len(ids) - len(tail) :] != tail:
            raise ValueError("chat template does not frame an assistant turn as ChatML expects")
        reply = ids[len(header) : len(ids) - len(tail)]  # content + <|im_end|>
        input_ids += ids
        labels += [IGNORE_INDEX] * len(header) + reply + [IGNORE_INDEX] * len(tail)
    if add_generation_prompt:
        input_ids += header
        labels += [IGNORE_INDEX] * len(header)
    return EncodedConversation(input_ids, labels, num_images)


def conversation_lengths(
    processor: Any, conversations: Sequence[list[Message]], system_prompt: str | None = _NO_DEFAULT,
    batch_size: int = 1024,
) -> list[int]:
    """Token counts of whole conversations (image spans included), without truncation: rendered at once
    and tokenized in batches, several times faster than `encode_conversation` and equal to it."""
    lengths: list[int] = []
    for start in range(0, len(conversations), batch_size):
        texts = [render(processor, with_system(processor, messages, system_prompt))
                 for messages in conversations[start : start + batch_size]]
        encoded = processor.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        lengths.extend(len(ids) for ids in encoded)
    return lengths
