"""The seed code's way of training and generating, rewritten on GeoVLM's modules for comparison.

What the seed did (and what is reproduced here, nothing more):

* forward: embed the ids, run the vision tower *without* `no_grad` (its frozen parameters only had
  `requires_grad=False`; with no input needing a gradient autograd records nothing, so this costs
  the same as `no_grad` -- kept for faithfulness, not as a handicap), merge with
  `view(b, -1, 4·d)`, project, write the features in with index assignment, run the whole causal LM
  with full-vocabulary logits at every position;
* loss: `CrossEntropyLoss(ignore_index=pad_id)` over the whole padded sequence, labels being the ids
  shifted by one in the dataset with the prompt's labels set to the pad id; no attention mask (its
  collator returned none; padding is on the right);
* batches: random order, padded to the longest sample (no length grouping);
* generation: for every new token, the whole model -- vision tower included -- re-run on the full
  sequence, no KV cache; greedy argmax of the last position.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from geovlm.bench.common import synchronize
from geovlm.modeling import GeoVLM


def seed_logits(
    model: GeoVLM, input_ids: torch.LongTensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The seed's `VLM.forward` up to the logits: (batch, length, vocab), every position."""
    base = model.model
    text_embeds = model.get_input_embeddings()(input_ids)
    vision_dtype = base.vision_tower.get_input_embeddings().weight.dtype
    patches = base.vision_tower(pixel_values=pixel_values.to(vision_dtype)).last_hidden_state
    b, _, d = patches.shape
    merged = patches.view(b, -1, d * model.config.merge_factor)  # (b, 196, d) -> (b, 49, 4d)
    features = base.projector(merged)
    text_embeds = text_embeds.to(features.dtype)
    batch_idx, token_idx = torch.where(input_ids == model.config.image_token_id)
    text_embeds[batch_idx, token_idx] = features.reshape(-1, features.shape[-1])
    hidden = base.language_model(inputs_embeds=text_embeds, attention_mask=attention_mask).last_hidden_state
    return model.lm_head(hidden)


def seed_loss(model: GeoVLM, batch: dict[str, Any], pad_token_id: int) -> torch.Tensor:
    """The seed's loss: cross-entropy over every position, pad id ignored."""
    logits = seed_logits(model, batch["input_ids"], batch["pixel_values"])
    return F.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1), ignore_index=pad_token_id)


@torch.no_grad()
def seed_generate(
    model: GeoVLM,
    input_ids: torch.LongTensor,
    pixel_values: torch.Tensor,
    max_new_tokens: int,
    suppress_ids: list[int] | None = None,
    step_times: list[float] | None = None,
) -> torch.LongTensor:
    """Greedy tokens from the seed's no-cache loop: (batch, max_new_tokens).

    `suppress_ids` (the eos ids) get -inf logits, as `min_new_tokens` does in `GeoVLM.generate`, so
    both produce the same number of tokens from a random model. `step_times` collects each token's
    seconds (device synchronised).
    """
    device = str(input_ids.device)
    ids = input_ids
    for _ in range(max_new_tokens):
        start = time.perf_counter()
        logits = seed_logits(model, ids, pixel_values)[:, -1, :].float()
        if suppress_ids:
            logits[:, suppress_ids] = float("-inf")
        ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
        if step_times is not None:
            synchronize(device)
            step_times.append(time.perf_counter() - start)
    return ids[:, input_ids.shape[1] :]
