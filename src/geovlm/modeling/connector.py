"""The bridge from vision to language: token merge, then a two-layer projector."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.activations import ACT2FN


def merge_spatial(features: torch.Tensor, factor: int) -> torch.Tensor:
    """Concatenate each √k×√k block of the patch grid: (b, n, d) → (b, n/k, k·d).

    Within a block the channels are ordered row by row, as `pixel_unshuffle` would order them, so
    every merged token covers one compact square of the image.
    """
    b, n, d = features.shape
    side, grid = math.isqrt(factor), math.isqrt(n)
    blocks = grid // side
    x = features.view(b, blocks, side, blocks, side, d)  # (b, block_row, dy, block_col, dx, d)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (b, block_row, block_col, dy, dx, d)
    return x.reshape(b, blocks * blocks, factor * d)


def merge_sequential(features: torch.Tensor, factor: int) -> torch.Tensor:
    """Concatenate k consecutive raster-order patches, exactly as the seed code's `view(b, -1, k·d)`."""
    b, n, d = features.shape
    return features.reshape(b, n // factor, factor * d)


MERGES = {"spatial": merge_spatial, "sequential": merge_sequential}


class Projector(nn.Module):
    """`Linear(d·k → h)` → activation → `Linear(h → h)`: merged patch features to LM embeddings."""

    def __init__(self, in_features: int, hidden_size: int, act: str = "silu") -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))
