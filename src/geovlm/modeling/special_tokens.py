"""Qwen2.5's special tokens and their ids: the one definition every part of GeoVLM uses.

The ids are fixed by Qwen2.5's tokenizer (its 151,643 BPE ranks come first, then these, in this order);
the embedding matrix is padded past them to `QWEN_VOCAB_SIZE` rows. This file ships inside saved model
folders with the rest of `modeling/`, so it imports nothing.
"""

from __future__ import annotations

SPECIAL_TOKEN_NAMES: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
# Qwen2.5 registers these as added tokens that are *not* special (they survive skip_special_tokens).
NON_SPECIAL_ADDED = frozenset(SPECIAL_TOKEN_NAMES[SPECIAL_TOKEN_NAMES.index("<tool_call>"):])
FIRST_SPECIAL_ID = 151643  # == the number of BPE ranks in qwen.tiktoken
SPECIAL_TOKEN_IDS: dict[str, int] = {name: FIRST_SPECIAL_ID + i for i, name in enumerate(SPECIAL_TOKEN_NAMES)}
# Size of Qwen2.5's embedding matrix (padded past the 151,665 tokenizer entries); not the tokenizer length.
QWEN_VOCAB_SIZE = 151936

ENDOFTEXT_TOKEN, IM_START_TOKEN, IM_END_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
IMAGE_PAD_TOKEN, VISION_START_TOKEN, VISION_END_TOKEN = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"

ENDOFTEXT_ID = SPECIAL_TOKEN_IDS[ENDOFTEXT_TOKEN]  # 151643: Qwen's pad and base-model eos
IM_START_ID = SPECIAL_TOKEN_IDS[IM_START_TOKEN]  # 151644
IM_END_ID = SPECIAL_TOKEN_IDS[IM_END_TOKEN]  # 151645: where a ChatML reply ends
VISION_START_ID = SPECIAL_TOKEN_IDS[VISION_START_TOKEN]  # 151652
VISION_END_ID = SPECIAL_TOKEN_IDS[VISION_END_TOKEN]  # 151653
IMAGE_PAD_ID = SPECIAL_TOKEN_IDS[IMAGE_PAD_TOKEN]  # 151655: whose embeddings the image features replace
