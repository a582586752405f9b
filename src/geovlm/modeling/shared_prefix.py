"""Run the leading tokens every sample shares (the system turn) once, while the LM is frozen.

With no LM weight training, the hidden states of a prefix that every row of a batch shares are the
same in every row and no gradient flows through them. `SharedPrefix` runs such a prefix for one row
without autograd and keeps its keys and values until the LM's weights or the prefix change; the
batch then runs only the positions after it, attending to the cached keys and values. That skips the
prefix's forward in every row and its backward entirely: a tenth of a real-size stage-1 step's FLOPs.
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


def weights_fingerprint(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Changes whenever a weight is updated in place (optimizer, load_state_dict) or replaced (`.to`)."""
    return tuple((p.data_ptr(), p._version) for p in module.parameters())


class SharedPrefix:
    """Keys and values of the last shared prefix, reused while the ids and the LM's weights are the same."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.runs = 0  # how often the prefix was computed (tests read it)

    def cache_for_batch(
        self, body: nn.Module, prefix_ids: torch.LongTensor, prefix_embeds: torch.Tensor, batch_size: int
    ) -> DynamicCache:
        """A fresh cache holding the prefix's keys and values for each of `batch_size` rows."""
        key = (tuple(prefix_ids.tolist()), prefix_embeds.dtype, weights_fingerprint(body))
        if key != self._key:
            cache = DynamicCache(config=body.config)
            with torch.no_grad():
                body(inputs_embeds=prefix_embeds.detach(), cache=cache, use_cache=True)
            self._key, self._layers = key, [(layer.keys, layer.values) for layer in cache.layers]
            self.runs += 1
        cache = DynamicCache(config=body.config)
        for index, (keys, values) in enumerate(self._layers):
            cache.update(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), index)
        return cache

    def clear(self) -> None:
        self._key, self._layers = None, []
