"""Summed cross-entropy of a linear head that keeps no vocabulary-wide tensor for the backward.

`F.cross_entropy(lm_head(h), t)` keeps the log-probabilities (positions × 151,936 floats) until the
backward, which then makes two more tensors of that size. Here the head runs in chunks of rows and
each chunk's gradient, `softmax - onehot`, is turned into the gradients of `h` (and of the head's
weight, if it trains) at once, so only one chunk of logits is ever alive and the backward only
scales what the forward computed. Same FLOPs as the plain computation: the backward's two matmuls
move into the forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_BYTES = 64 * 2**20  # float32 logits alive at once


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_rows: int,
    ) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        ctx.weight_dtype = weight.dtype
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        loss = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows, chunk_targets = hidden[start : start + chunk_rows], targets[start : start + chunk_rows]
            logits = F.linear(rows, weight).float()  # under autocast: the matmul in bf16, as lm_head would
            target_logits = logits.gather(1, chunk_targets[:, None]).squeeze(1)
            # logsumexp and softmax in place on the one buffer
            peak = logits.amax(dim=1, keepdim=True)
            sums = logits.sub_(peak).exp_().sum(dim=1, keepdim=True)
            loss += (peak.squeeze(1) + sums.squeeze(1).log() - target_logits).sum()
            grad_logits = logits.div_(sums)
            grad_logits[torch.arange(len(chunk_targets), device=logits.device), chunk_targets] -= 1
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_rows] = grad_logits.to(weight.dtype) @ weight
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.t(), rows.float())
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        if torch.is_grad_enabled():  # create_graph: the gradients computed in the forward are constants
            raise RuntimeError("linear_cross_entropy_sum has no double backward; use the plain computation")
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_loss.float()
        return (
            None if grad_hidden is None else (grad_hidden * scale).to(grad_hidden.dtype),
            None if grad_weight is None else (grad_weight * scale).to(ctx.weight_dtype),
            None,
            None,
        )


def linear_cross_entropy_sum(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`F.cross_entropy(head(hidden).float(), targets, reduction="sum")` for rows `hidden` (n, d) and
    valid `targets` (n,) (no ignore index: callers select the supervised rows).

    Chunked when a gradient will be taken through a plain `nn.Linear` head without bias that runs
    its own forward; otherwise (inference, a LoRA-wrapped or DeepSpeed-ZeRO-3-partitioned head, a
    head with hooks, e.g. accelerate's device map) the plain computation.
    """
    weight = getattr(head, "weight", None)
    chunkable = (
        type(head) is nn.Linear
        and head.bias is None
        and not hasattr(weight, "ds_id")  # ZeRO-3 gathers the weight only inside the module's own call
        and not (head._forward_hooks or head._forward_pre_hooks or "forward" in vars(head))
        and torch.is_grad_enabled()
        and (hidden.requires_grad or weight.requires_grad)
    )
    if not chunkable:
        return F.cross_entropy(head(hidden).float(), targets, reduction="sum")
    chunk_rows = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows)
