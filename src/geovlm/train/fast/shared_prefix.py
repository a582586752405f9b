"""Run the leading tokens every sample shares (the system turn) once, while the LM is frozen.

With no LM weight training, the hidden states of a prefix that every row of a batch shares are the
same in every row and no gradient flows through them. `SharedPrefix` runs such a prefix for one row
without autograd; the batch then runs only the positions after it, attending to the prefix's cached
keys and values. That skips the prefix's forward in every row but one and its backward entirely. When
nothing can change the LM's weights unseen, the keys and values are also kept across steps: in stage
1 the prefix is then computed once. Together, a tenth of a real-size stage-1 step's FLOPs.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from geovlm.constants import IGNORE_INDEX


def shared_prefix_length(input_ids: torch.LongTensor, labels: torch.LongTensor, image_token_id: int) -> int:
    """How many leading positions every row shares and no loss term needs a gradient through.

    Those are the same ids in every row, before any image and before the first position whose next
    token is supervised; at least one position is left after them.
    """
    length = input_ids.shape[1]

    def first(columns: torch.Tensor) -> int:
        return int(columns.int().argmax()) if bool(columns.any()) else length

    common = first(~(input_ids == input_ids[:1]).all(dim=0))
    first_image = first((input_ids == image_token_id).any(dim=0))
    first_target = first((labels != IGNORE_INDEX).any(dim=0))
    return max(0, min(common, first_image, first_target - 1, length - 1))


def _recomputes(layer: nn.Module) -> bool:
    """Activation checkpointing, HF's or torch's wrapper (FSDP/accelerate): the recompute would drop
    or re-append the cache."""
    return bool(getattr(layer, "gradient_checkpointing", False)) or type(layer).__name__ == "CheckpointWrapper"


class SharedPrefix:
    """Keys and values of a shared prefix for a Qwen2-style decoder, kept while its weights are unchanged."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.runs = 0  # how often the prefix was computed (tests read it)

    @staticmethod
    def applies(body: nn.Module, training: bool) -> bool:
        """True when no weight of the decoder `body` (a Qwen2-style model) takes a gradient, every row
        would compute the same prefix, and the layers can take a cache: no dropout in training, no
        sliding window, no recomputation."""
        if any(_recomputes(layer) for layer in body.layers):
            return False
        if "sliding_attention" in (getattr(body.config, "layer_types", None) or ()):
            return False  # its cache keeps only the window: positions after the prefix would shift
        if training and getattr(body.config, "attention_dropout", 0.0):
            return False
        return not torch.is_grad_enabled() or not any(p.requires_grad for p in body.parameters())

    @staticmethod
    def _fingerprint(body: nn.Module) -> tuple | None:
        """Changes when a weight is updated in place through autograd-visible ops (optimizer,
        load_state_dict) or replaced (`.to`). None when weights could change unseen: a weight that
        trains (it is only frozen for this call), a peft adapter (enabled and merged through
        `.data`), or sharded weights (ZeRO-3, DTensor) whose pointers say nothing."""
        fingerprint = []
        for p in body.parameters():
            if p.requires_grad or type(p.data) is not torch.Tensor or hasattr(p, "ds_id"):
                return None
            fingerprint.append((p.data_ptr(), p._version))
        if any(type(m).__module__.startswith("peft.") for m in body.modules()):
            return None
        return tuple(fingerprint)

    def cache_for_batch(
        self, body: nn.Module, prefix_ids: torch.LongTensor, prefix_embeds: torch.Tensor, batch_size: int
    ) -> DynamicCache:
        """A fresh cache holding the prefix's keys and values for each of `batch_size` rows."""
        device = prefix_embeds.device.type
        fingerprint = self._fingerprint(body)
        key = None if fingerprint is None else (
            tuple(prefix_ids.tolist()), prefix_embeds.dtype, torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device), fingerprint)  # fmt: skip
        if key is None or key != self._key:
            cache = DynamicCache(config=body.config)
            with torch.no_grad():
                body(inputs_embeds=prefix_embeds.detach(), cache=cache, use_cache=True)
            self._key, self._layers = key, [(layer.keys, layer.values) for layer in cache.layers]
            self.runs += 1
        cache = DynamicCache(config=body.config)
        for index, (keys, values) in enumerate(self._layers):
            cache.update(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), index)
        if key is None:
            self.clear()
        return cache

    def clear(self) -> None:
        """Forget the kept keys and values (e.g. after editing weights through `.data`)."""
        self._key, self._layers = None, []
