"""Training speed and memory, kept out of the model's forward: `FastLoss` (the Trainer's loss) and
`lean_mlps` (a training run's MLPs)."""

from geovlm.train.fast.loss import FastLoss
from geovlm.train.fast.swiglu import lean_mlps

__all__ = ["FastLoss", "lean_mlps"]
