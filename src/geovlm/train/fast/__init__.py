"""Training speed and memory, kept out of the model's forward: an explicit, reversible patch."""

from geovlm.train.fast.forward import FastTraining, fast_training

__all__ = ["FastTraining", "fast_training"]
