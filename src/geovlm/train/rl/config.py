"""`RLConfig`: a training config (the same fields and mechanics as pretrain/sft) plus GRPO's own."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from geovlm.train.config import TrainConfig, option


@dataclass
class RLConfig(TrainConfig):
    stage: Literal["rl"] = option("rl", "stage 3: GRPO from a stage-2 folder")  # type: ignore[assignment]
    # --- GRPO (TRL's GRPOConfig fields of the same names)
    num_generations: int = option(4, "replies sampled per prompt; rewards are compared within each group")
    beta: float = option(0.0, "KL penalty to a frozen reference model (0: no reference model is kept)")
    temperature: float = option(1.0, "sampling temperature of the replies")
    top_p: float = option(1.0, "nucleus sampling of the replies (1: off)")
    top_k: int = option(0, "sample among the k likeliest tokens only (0: all); a small model's flat tail "
                           "needs it")
    max_completion_length: int = option(256, "tokens per reply")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = option("dapo", "TRL's policy loss (dapo: TRL's "
                                                                           "default)")
    epsilon: float = option(0.2, "PPO-style clip range of the probability ratio")
    num_iterations: int = option(1, "optimisation passes per generated batch")
    scale_rewards: Literal["group", "batch", "none"] = option(
        "group", "how a group's rewards become advantages: group divides by the group's std (TRL's default), "
                 "batch by the batch's, none not at all; with group, a group whose replies are all equally right "
                 "or wrong turns a small bonus (format) into a full-size advantage")
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "format": 0.1}, metadata={
        "help": "reward name (accuracy, format, or module:function of your own) -> weight"})
    answer_mode: Literal["auto", "choice", "number"] = option("auto", "gold answer: the letter, the exact value, "
                                                                      "or per record")
    log_completions: bool = option(False, "print a table of sampled replies at each logging step")

    def validate(self) -> None:
        super().validate()
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: GRPO compares replies within a group")
        if self.max_completion_length < 1:
            raise ValueError("max_completion_length must be at least 1")
        from geovlm.train.rl.rewards import reward_functions

        reward_functions(self.rewards)  # unknown names or all-zero weights fail here, not hours later


def grpo_fields() -> list[str]:
    """The fields `RLConfig` adds that are TRL `GRPOConfig` fields of the same name (passed through as is)."""
    own = {f.name for f in fields(TrainConfig)} | {"stage", "rewards", "answer_mode"}
    return [f.name for f in fields(RLConfig) if f.name not in own]
