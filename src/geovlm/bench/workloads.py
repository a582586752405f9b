"""Models at real sizes with random weights, and realistic training batches.

Speed and memory do not depend on weight values, so a randomly initialised model of the real shape
stands in for the pretrained one. Batches have the lengths of the real corpora:

* stage 1 (LLaVA-CC3M-Pretrain-595K): one image, one of LLaVA's brief-description instructions, a
  caption of 8-60 tokens (log-normal, median 16);
* stage 2 (Geo170K qa_tuning): one image, a ~100-token question (log-normal, 30-300) and a ~150-token
  worked answer (log-normal, 40-400).

Captions, questions and answers are random ordinary token ids of the drawn lengths (their values
cannot change the cost); the conversation around them comes from `geovlm.processing.conversation.encode_conversation`,
so system turn, image span and ChatML framing are exactly the training data's.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from geovlm.constants import IGNORE_INDEX
from geovlm.modeling import GeoVLM, GeoVLMProcessor
from geovlm.processing.conversation import encode_conversation

# LLaVA's instructions for the CC3M captioning stage (a subset; all are one short sentence).
CC3M_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
# Ordinary BPE ids (the special tokens start at 151643).
_TOKEN_LOW, _TOKEN_HIGH = 1000, 150000


@dataclass(frozen=True)
class LengthModel:
    """A clipped log-normal token-length distribution."""

    median: float
    sigma: float
    low: int
    high: int

    def draw(self, rng: random.Random) -> int:
        return int(min(self.high, max(self.low, round(rng.lognormvariate(math.log(self.median), self.sigma)))))


CC3M_CAPTION = LengthModel(median=16, sigma=0.5, low=8, high=60)
GEO170K_QUESTION = LengthModel(median=100, sigma=0.35, low=30, high=300)
GEO170K_ANSWER = LengthModel(median=150, sigma=0.4, low=40, high=400)


@functools.cache
def tokenizer() -> Any:
    from geovlm.processing.tokenizer import load_qwen_tokenizer

    return load_qwen_tokenizer()


def build_model(
    preset: str,
    *,
    seed: int = 0,
    merge_mode: str | None = None,
    head_std: float | None = None,
) -> tuple[GeoVLM, GeoVLMProcessor]:
    """A random GeoVLM of a named size and its processor (real Qwen2.5 tokenizer).

    `head_std` unties `lm_head` from the embeddings and draws it with that std: a random tied head
    gives nearly flat logits, and greedy outputs worth comparing need clear winners.
    """
    from geovlm.loading import build_tiny

    torch.manual_seed(seed)
    overrides: dict[str, Any] = {"merge_mode": merge_mode} if merge_mode else {}
    return build_tiny(preset, head_std=head_std, **overrides)


# ---------------------------------------------------------------------- samples
def _random_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(_TOKEN_LOW, _TOKEN_HIGH) for _ in range(n)]


def conversation_ids(processor: GeoVLMProcessor, question: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    """ids and labels of `<image>\\n{question}` → `{answer}` as the training data encodes them.

    The conversation is encoded with one-token placeholders, which are then replaced by the given
    ids: the framing (system turn, image span, ChatML headers, labels on the reply and `<|im_end|>`)
    is the processor's own.
    """
    enc = encode_conversation(processor, [{"role": "user", "content": "<image>\nQ"}, {"role": "assistant", "content": "A"}])
    ids, labels = list(enc.input_ids), list(enc.labels)
    q_id = processor.tokenizer.convert_tokens_to_ids("Q")
    a_pos = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)  # the reply starts here
    q_pos = max(i for i in range(a_pos) if ids[i] == q_id)
    if ids[a_pos] != processor.tokenizer.convert_tokens_to_ids("A"):
        raise RuntimeError("unexpected encoding of the placeholder conversation")
    new_ids = ids[:q_pos] + question + ids[q_pos + 1 : a_pos] + answer + ids[a_pos + 1 :]
    new_labels = (
        labels[:q_pos] + [IGNORE_INDEX] * len(question) + labels[q_pos + 1 : a_pos] + answer + labels[a_pos + 1 :]
    )
    return new_ids, new_labels


class Workload:
    """A population of training samples for one stage, built lazily from per-sample seeds."""

    def __init__(self, stage: str, processor: GeoVLMProcessor, population: int, seed: int = 0) -> None:
        if stage not in ("stage1", "stage2"):
            raise ValueError(f"unknown stage {stage!r}")
        self.stage, self.processor, self.seed = stage, processor, seed
        size = processor.image_processor.size
        self.image_shape = (3, size["height"], size["width"])
        self.lengths = [len(self.sample(i)["input_ids"]) for i in range(population)]

    @functools.cache  # noqa: B019 - a few hundred small samples, alive as long as the workload
    def sample(self, index: int) -> dict[str, Any]:
        rng = random.Random(f"geovlm-bench:{self.stage}:{self.seed}:{index}")
        if self.stage == "stage1":
            question = self.processor.tokenizer.encode(rng.choice(CC3M_INSTRUCTIONS), add_special_tokens=False)
            answer = _random_ids(rng, CC3M_CAPTION.draw(rng))
        else:
            question = _random_ids(rng, GEO170K_QUESTION.draw(rng))
            answer = _random_ids(rng, GEO170K_ANSWER.draw(rng))
        ids, labels = conversation_ids(self.processor, question, answer)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}

    def pixel_values(self, n: int, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100003 + index)
        return torch.rand((n, *self.image_shape), generator=gen) * 2 - 1  # SigLIP's [-1, 1] range

    def epoch_batches(self, batch_size: int, grouped: bool) -> list[list[int]]:
        """One epoch of batches: HF's length-grouped order (GeoVLM's default sampler) or a random one."""
        from transformers.trainer_pt_utils import get_length_grouped_indices

        gen = torch.Generator().manual_seed(self.seed)
        if grouped:
            order = get_length_grouped_indices(self.lengths, batch_size, generator=gen)
        else:
            order = torch.randperm(len(self.lengths), generator=gen).tolist()
        usable = len(order) - len(order) % batch_size
        return [order[i : i + batch_size] for i in range(0, usable, batch_size)]

    def padded_length(self, batch: list[int]) -> int:
        return max(self.lengths[i] for i in batch)

    def median_batch(self, batch_size: int, grouped: bool) -> tuple[list[int], dict[str, Any]]:
        """The epoch's median batch by padded length (what a typical step processes), and the
        epoch's padding statistics. Timing one fixed batch repeatedly lets repetitions be compared
        with each other (median, minimum) on a machine whose background load varies."""
        batches = sorted(self.epoch_batches(batch_size, grouped), key=self.padded_length)
        picked = batches[len(batches) // 2]
        real = sum(self.lengths[i] for b in batches for i in b)
        padded = sum(self.padded_length(b) * len(b) for b in batches)
        stats = {
            "epoch_batches": len(batches),
            "mean_real_tokens_per_sample": real / (len(batches) * batch_size),
            "mean_padded_tokens_per_sample": padded / (len(batches) * batch_size),
            "padding_fraction": 1 - real / padded,
            "median_batch_padded_length": self.padded_length(picked),
            "median_batch_real_tokens": sum(self.lengths[i] for i in picked),
        }
        return picked, stats

    # ------------------------------------------------------------------ collation
    def geovlm_batch(self, indices: list[int]) -> dict[str, Any]:
        """What `GeoVLMCollator` makes of the samples (right padding, -100 labels, attention mask)."""
        from geovlm.data.collator import GeoVLMCollator

        collator = GeoVLMCollator(pad_token_id=self.processor.tokenizer.pad_token_id)
        samples = [{**self.sample(i), "pixel_values": self.pixel_values(1, i)} for i in indices]
        batch = collator(samples)
        batch.pop("skipped")
        return batch

    def seed_batch(self, indices: list[int]) -> dict[str, Any]:
        """The seed's data path: `input_ids = ids[:-1]`, `labels = ids[1:]` shifted in the dataset, the
        prompt's labels set to the pad id (which the loss ignores), both right-padded with the pad id,
        no attention mask. (Which label positions hold the pad id changes the loss value, not its cost:
        the cross-entropy is computed over every position either way.)"""
        pad = self.processor.tokenizer.pad_token_id
        samples = [self.sample(i) for i in indices]
        length = max(len(x["input_ids"]) for x in samples) - 1
        input_ids = torch.full((len(samples), length), pad, dtype=torch.long)
        labels = torch.full((len(samples), length), pad, dtype=torch.long)
        for row, x in enumerate(samples):
            ids, target = x["input_ids"], x["labels"].clone()
            target[target == IGNORE_INDEX] = pad
            input_ids[row, : len(ids) - 1] = ids[:-1]
            labels[row, : len(ids) - 1] = target[1:]
        pixel_values = torch.cat([self.pixel_values(1, i) for i in indices])
        return {"input_ids": input_ids, "labels": labels, "pixel_values": pixel_values}


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
