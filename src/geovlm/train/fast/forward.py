"""The training forward: the model's own loss, computed with less memory and time.

`fast_training(model)` patches one model instance for the length of a training run (as Liger patches
a model) and restores it afterwards; the model class and its plain `forward` stay untouched. While
patched, a forward with `labels` and gradients on:

- drops the padding mask of right-padded batches (the causal mask already hides pads), so SDPA takes
  its causal grouped-query path (`padding_is_causally_hidden`);
- with the decoder frozen (stage 1), runs the system turn every row shares once, without autograd,
  and the rest of the batch against its cached keys and values (`shared_prefix.py`); the cache lives
  in the patch, so it ends with the run;
- computes `lm_head` and the cross-entropy on supervised positions only, in chunks whose gradient is
  formed at once (`linear_ce.py`), and returns `logits=None`;
- runs Qwen2's MLPs through `silu_mul`, which keeps two of their three wide intermediates (`swiglu.py`).

Anything else (no labels, no gradients, `inputs_embeds`, extra model kwargs) goes to the plain forward.
Each piece is tested against the plain computation.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from geovlm.constants import IGNORE_INDEX
from geovlm.train.fast.linear_ce import linear_cross_entropy_sum
from geovlm.train.fast.shared_prefix import SharedPrefix, shared_prefix_length
from geovlm.train.fast.swiglu import use_lean_mlps

_PASSED_THROUGH = {"num_items_in_batch", "use_cache", "return_dict"}


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


def unused_connector_term(base: nn.Module, embeds: torch.Tensor) -> torch.Tensor | float:
    """A zero that depends on every trainable vision/projector weight, for image-free batches: without
    it stage 1 has no gradient at all, and DDP errors on parameters a step did not use."""
    connector = [*base.projector.parameters(), *base.vision_tower.parameters()]
    if not any(p.requires_grad for p in connector):
        return 0.0
    size = base.config.vision_config.image_size
    return base.get_image_features(embeds.new_zeros(1, 3, size, size)).pooler_output.sum() * 0.0


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


class FastTraining:
    """The state of one patched model: the original forward and the shared-prefix cache."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.plain_forward = model.forward
        self.shared_prefix = SharedPrefix()
        self.lean_mlps = 0
        self.previous_forward: Any = None

    def enable(self) -> None:
        if getattr(self.model, "_geovlm_fast_training", None) is not None:
            raise RuntimeError("this model is already patched for fast training")
        self.previous_forward = self.model.__dict__.get("forward")  # an instance-level forward, if any
        self.lean_mlps = use_lean_mlps(self.model)
        self.model.forward = types.MethodType(_make_forward(self), self.model)
        self.model._geovlm_fast_training = self

    def disable(self) -> None:
        if self.previous_forward is None:
            self.model.__dict__.pop("forward", None)
        else:
            self.model.forward = self.previous_forward
        self.model.__dict__.pop("_geovlm_fast_training", None)
        use_lean_mlps(self.model, lean=False)
        self.shared_prefix.clear()

    def hidden_states(
        self, input_ids: torch.LongTensor, embeds: torch.Tensor, attention_mask: torch.Tensor | None,
        labels: torch.LongTensor,
    ) -> tuple[torch.Tensor, int]:
        """The decoder's last hidden states after the first `prefix` positions, and `prefix`."""
        base = self.model.model
        decoder = base.language_model
        prefix = 0
        if attention_mask is None and self.shared_prefix.applies(decoder, self.model.training):
            prefix = shared_prefix_length(input_ids, labels, base.config.image_token_id)
        if not prefix:
            return decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state, 0
        cache = self.shared_prefix.cache_for_batch(decoder, input_ids[0, :prefix], embeds[:1, :prefix], embeds.shape[0])
        return decoder(inputs_embeds=embeds[:, prefix:], cache=cache, use_cache=True).last_hidden_state, prefix


def _make_forward(state: FastTraining) -> Any:
    def forward(
        self: nn.Module,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        plain = (labels is None or input_ids is None or inputs_embeds is not None or position_ids is not None
                 or not torch.is_grad_enabled() or set(kwargs) - _PASSED_THROUGH)
        if plain:
            return state.plain_forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                                       position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels, **kwargs)
        base = self.model
        embeds = base.embed_inputs(input_ids, pixel_values)
        if pixel_values is None or pixel_values.shape[0] == 0:
            embeds = embeds + unused_connector_term(base, embeds)
        if padding_is_causally_hidden(attention_mask, labels):
            attention_mask = None
        hidden, prefix = state.hidden_states(input_ids, embeds, attention_mask, labels)
        loss = supervised_loss(self.lm_head, hidden, labels[:, prefix:], kwargs.get("num_items_in_batch"))
        return CausalLMOutputWithPast(loss=loss, logits=None)

    return forward


@contextmanager
def fast_training(model: nn.Module) -> Iterator[FastTraining]:
    """Patch `model` (a `GeoVLMForConditionalGeneration`) for training; restored on exit."""
    state = FastTraining(model)
    state.enable()
    try:
        yield state
    finally:
        state.disable()
