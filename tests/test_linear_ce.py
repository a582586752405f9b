"""The chunked linear cross-entropy against the plain `F.cross_entropy(lm_head(h))`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geovlm.train.fast import linear_ce
from geovlm.train.fast.linear_ce import linear_cross_entropy_sum

VOCAB, WIDTH, ROWS = 1000, 16, 37


def head_and_rows(dtype: torch.dtype, train_head: bool) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    head = nn.Linear(WIDTH, VOCAB, bias=False).to(dtype).requires_grad_(train_head)
    hidden = torch.randn(ROWS, WIDTH, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, VOCAB, (ROWS,))
    return head, hidden, targets


@pytest.mark.parametrize("train_head", [False, True])
def test_chunked_loss_and_gradients_equal_the_plain_computation(monkeypatch, train_head):
    monkeypatch.setattr(linear_ce, "CHUNK_BYTES", 4 * VOCAB * 8)  # 8 rows a chunk: 5 chunks, the last short
    head, hidden, targets = head_and_rows(torch.float64, train_head)
    inputs = [hidden, head.weight] if train_head else [hidden]
    plain = F.cross_entropy(head(hidden), targets, reduction="sum")
    chunked = linear_cross_entropy_sum(head, hidden, targets)
    torch.testing.assert_close(chunked, plain.float(), rtol=1e-6, atol=1e-6)
    # A scale after the loss (mean over a token count, gradient accumulation) reaches the gradients.
    for got, want in zip(torch.autograd.grad(chunked * 0.3, inputs), torch.autograd.grad(plain * 0.3, inputs),
                         strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_keeps_no_vocabulary_wide_tensor_for_the_backward():
    head, hidden, targets = head_and_rows(torch.float32, train_head=False)
    kept: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() != head.weight.data_ptr():
            kept.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(head(hidden), targets, reduction="sum")
    assert max(kept) >= ROWS * VOCAB  # what the plain computation keeps: the log-probabilities
    kept.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        linear_cross_entropy_sum(head, hidden, targets)
    assert sum(kept) == ROWS * WIDTH  # only the gradient of the rows


def test_plain_path_without_gradients_and_for_wrapped_heads():
    head, hidden, targets = head_and_rows(torch.float32, train_head=False)
    plain = F.cross_entropy(head(hidden), targets, reduction="sum")
    with torch.no_grad():
        assert torch.equal(linear_cross_entropy_sum(head, hidden, targets), plain.detach())
    assert linear_cross_entropy_sum(head, hidden, targets).grad_fn.name() == "_LinearCrossEntropyBackward"
    wrapped = nn.Sequential(head)  # e.g. a LoRA layer: its `weight` is not the whole head
    assert linear_cross_entropy_sum(wrapped, hidden, targets).grad_fn.name() == "NllLossBackward0"


@pytest.mark.parametrize(("weight_dtype", "autocast", "loss_tol", "grad_rtol", "grad_atol"), [
    (torch.float32, True, 1e-3, 2e-2, 2e-3),  # fp32 weights under bf16 autocast (HF Trainer with bf16=True)
    (torch.bfloat16, False, 1e-2, 5e-2, 5e-3),  # bf16 weights
])
def test_bf16_matches_the_plain_computation(weight_dtype, autocast, loss_tol, grad_rtol, grad_atol):
    head, hidden, targets = head_and_rows(weight_dtype, train_head=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        plain = F.cross_entropy(head(hidden).float(), targets, reduction="sum")
        chunked = linear_cross_entropy_sum(head, hidden, targets)
    torch.testing.assert_close(chunked, plain, rtol=loss_tol, atol=loss_tol)
    for got, want in zip(torch.autograd.grad(chunked, [hidden, head.weight]),
                         torch.autograd.grad(plain, [hidden, head.weight]), strict=True):
        assert got.dtype == want.dtype == weight_dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=grad_rtol, atol=grad_atol)


def test_hooked_heads_take_the_plain_path():
    head, hidden, targets = head_and_rows(torch.float32, train_head=False)
    handle = head.register_forward_hook(lambda module, args, out: out * 2)  # e.g. accelerate's device hooks
    assert linear_cross_entropy_sum(head, hidden, targets).grad_fn.name() == "NllLossBackward0"
    handle.remove()
    assert linear_cross_entropy_sum(head, hidden, targets).grad_fn.name() == "_LinearCrossEntropyBackward"


def test_double_backward_is_refused_not_silently_wrong():
    head, hidden, targets = head_and_rows(torch.float64, train_head=False)
    (grad,) = torch.autograd.grad(linear_cross_entropy_sum(head, hidden, targets), hidden, create_graph=False)
    assert grad.shape == hidden.shape
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(linear_cross_entropy_sum(head, hidden, targets), hidden, create_graph=True)
