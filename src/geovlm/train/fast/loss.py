"""`FastLoss`: the training loss of stages 1 and 2, the model's own loss computed with less memory and time.

The Trainer's `compute_loss` calls it (`train/trainer.py`); the model and its forward stay as they are.
From a batch (`input_ids`, `labels`, `attention_mask`, `pixel_values`) it

- embeds the ids with the image features in place (`GeoVLMModel.embed_inputs`, as the plain forward);
- drops the padding mask of right-padded batches (the causal mask already hides pads), so SDPA takes
  its causal grouped-query path (`padding_is_causally_hidden`);
- with the decoder frozen (stage 1), runs the system turn every row shares once, without autograd,
  and the rest of the batch against its cached keys and values (`shared_prefix.py`);
- runs the model's standard forward (through DDP or peft wrappers, whatever the Trainer holds) for the
  hidden states only (`logits_to_keep` selects no position: no vocabulary-wide tensor);
- computes `lm_head` and the cross-entropy on supervised positions only, in chunks whose gradient is
  formed at once (`linear_ce.py`).

Each piece is tested against the plain computation (tests/test_fast_training.py). Where a piece
cannot work (a head whose weight is partitioned, as under DeepSpeed ZeRO-3), the loss is the plain
forward's, and a line in the log says so once.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from geovlm.constants import IGNORE_INDEX
from geovlm.train.fast.linear_ce import linear_cross_entropy_sum
from geovlm.train.fast.shared_prefix import SharedPrefix, shared_prefix_length

logger = logging.getLogger(__name__)

BATCH_KEYS = frozenset({"input_ids", "labels", "attention_mask", "pixel_values"})
_NO_POSITION = torch.empty(0, dtype=torch.long)  # `logits_to_keep` that keeps none


def padding_is_causally_hidden(attention_mask: torch.Tensor | None, labels: torch.Tensor) -> bool:
    """True when every row is padded on the right only and no pad position is supervised.

    Then the causal mask alone keeps pads out of every real token's attention (pads come after them)
    and positions count from 0 as before, so the padding mask can be dropped. Pad positions then
    compute garbage that no label reads.
    """
    if attention_mask is None:
        return False
    mask = attention_mask.bool()
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
    return right_padded and not bool((labels[~mask] != IGNORE_INDEX).any())


def supervised_loss(
    head: nn.Module, hidden: torch.Tensor, labels: torch.LongTensor, num_items_in_batch: Any = None
) -> torch.Tensor:
    """Next-token cross-entropy over positions whose (shifted) label is not -100: the mean, or the sum
    over `num_items_in_batch` tokens (the HF Trainer's count over accumulation steps and ranks)."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    loss_sum = linear_cross_entropy_sum(head, hidden[:, :-1][keep], targets[keep])
    if num_items_in_batch is None:
        return loss_sum / keep.sum().clamp(min=1)
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(loss_sum.device)
    return loss_sum / num_items_in_batch


def geovlm_of(model: nn.Module) -> nn.Module:
    """The `GeoVLMForConditionalGeneration` inside whatever wraps it (DDP, peft, torch.compile)."""
    inner = model
    for _ in range(8):
        if hasattr(inner, "lm_head") and hasattr(inner, "model") and hasattr(inner.model, "embed_inputs"):
            return inner
        if hasattr(inner, "get_base_model"):  # peft
            inner = inner.get_base_model()
        elif hasattr(inner, "module"):  # DDP, DeepSpeed
            inner = inner.module
        elif hasattr(inner, "_orig_mod"):  # torch.compile
            inner = inner._orig_mod
        else:
            break
    raise TypeError(f"fast_loss needs a GeoVLM model, got {type(model).__name__}")


def _partitioned(weight: torch.Tensor) -> bool:
    """A weight whose full values are not in this process (DeepSpeed ZeRO-3 keeps a shard, size 0)."""
    return hasattr(weight, "ds_id") or weight.numel() == 0 or type(weight.data) is not torch.Tensor


class FastLoss:
    """`fast_loss(model, inputs)`: the loss of one training batch, equal to the plain forward's.

    One instance per run: it holds the shared prefix's keys and values (kept while the frozen LM's
    weights are unchanged; see `SharedPrefix`)."""

    def __init__(self) -> None:
        self.shared_prefix = SharedPrefix()
        self._said: set[str] = set()

    def __call__(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        unexpected = set(inputs) - BATCH_KEYS
        if unexpected:  # never a silently different loss: the collator's keys are the contract
            raise ValueError(f"fast_loss takes {sorted(BATCH_KEYS)}, got also {sorted(unexpected)}")
        geovlm = geovlm_of(model)
        input_ids, labels = inputs["input_ids"], inputs["labels"]
        attention_mask, pixel_values = inputs.get("attention_mask"), inputs.get("pixel_values")
        if _partitioned(geovlm.lm_head.weight):
            self._say_once("partitioned", "the LM head's weight is partitioned (DeepSpeed ZeRO-3): the training "
                                          "loss takes the plain forward (full logits), not the chunked fast loss")
            return model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                         labels=labels, num_items_in_batch=num_items_in_batch).loss
        base = geovlm.model
        embeds = base.embed_inputs(input_ids, pixel_values)
        if padding_is_causally_hidden(attention_mask, labels):
            attention_mask = None
        prefix, cache = 0, None
        decoder = base.language_model
        if attention_mask is None and self.shared_prefix.applies(decoder, geovlm.training):
            prefix = shared_prefix_length(input_ids, labels, base.config.image_token_id)
        if prefix:
            cache = self.shared_prefix.cache_for_batch(decoder, input_ids[0, :prefix], embeds[:1, :prefix],
                                                       embeds.shape[0])
        outputs = model(inputs_embeds=embeds[:, prefix:], attention_mask=attention_mask, cache=cache,
                        use_cache=cache is not None, output_hidden_states=True,
                        logits_to_keep=_NO_POSITION.to(embeds.device))
        hidden = outputs.hidden_states[-1]  # after the final norm: what lm_head reads
        return supervised_loss(geovlm.lm_head, hidden, labels[:, prefix:], num_items_in_batch)

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            logger.warning(message)
