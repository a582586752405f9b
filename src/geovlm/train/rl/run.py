"""One stage-3 run: GRPO through TRL's `GRPOTrainer` on prompts whose answers are exact.

The model, recipe (what trains), checkpoints, final folder and model card are the other stages'; the
loop (sampling `num_generations` replies per prompt, group-relative advantages, the clipped policy loss,
an optional KL term to a reference model) is TRL's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from geovlm.data.encoding import special_token_strings
from geovlm.data.skips import BadDataBudget, DataQualityError
from geovlm.train.rl.config import RLConfig, grpo_fields
from geovlm.train.rl.prompts import build_prompts, to_dataset
from geovlm.train.rl.rewards import reward_functions
from geovlm.train.rl.sampling import sampling_on_support
from geovlm.train.run import run_stage, training_argument_values
from geovlm.train.trainer import CompleteCheckpoints

logger = logging.getLogger(__name__)

# TrainingArguments fields of the supervised stages that GRPO sets itself or does not use.
_NOT_FOR_GRPO = ("train_sampling_strategy", "remove_unused_columns")


def grpo_arguments(config: RLConfig, **overrides: Any) -> Any:
    """TRL's `GRPOConfig` from an `RLConfig` (the shared fields as in pretrain/sft, GRPO's by name)."""
    from trl import GRPOConfig

    values = {k: v for k, v in training_argument_values(config).items() if k not in _NOT_FOR_GRPO}
    _, weights = reward_functions(config.rewards)
    values.update({name: getattr(config, name) for name in grpo_fields()})
    values.update(reward_weights=weights)
    values.update(overrides)
    return GRPOConfig(**values)


def grpo_trainer_class() -> type:
    from trl import GRPOTrainer

    class GeoVLMGRPOTrainer(CompleteCheckpoints, GRPOTrainer):
        """TRL's GRPOTrainer whose checkpoints count only once completely written, as in pretrain/sft."""

    return GeoVLMGRPOTrainer


@contextmanager
def completion_positions_only() -> Iterator[None]:
    """TRL 1.16 scores the log-probabilities of completion tokens only on Triton devices and every
    position elsewhere (masking the prompt afterwards): on a CPU that is ~15x the lm_head work for a
    100-token prompt and a 6-token reply. Its compact selection (`hidden[mask]`, then `masked_scatter`)
    is plain torch; this turns it on for every device while the kernels keep their own device choice.
    tests/test_rl.py checks the log-probabilities against TRL's own path."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        yield
        return
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:  # a TRL without this private switch: correct, but every position is scored
        import trl

        logger.warning("TRL %s has no trl.trainer.utils._use_triton: the CPU GRPO speed-up that scores completion "
                       "positions only does not apply (results are unchanged, steps are slower)", trl.__version__)
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


def train_rl(config: RLConfig, *, callbacks: list | None = None) -> Path:
    """Run stage 3 end to end and return the folder of the final, self-contained model."""
    try:
        import trl  # noqa: F401
    except ImportError as err:
        raise ValueError(f"geovlm rl needs TRL (Python >= 3.11): pip install -e '.[rl]' ({err})") from None
    if not config.data:
        raise ValueError("no prompts: set `data` (a list of {path, images}) in the config")
    reward_funcs, _ = reward_functions(config.rewards)  # a bad reward fails before anything is loaded

    def make_trainer(model: Any, trainable: Any, processor: Any) -> Any:
        prompts, skipped = build_prompts(config.data, config.answer_mode,
                                         special_tokens=special_token_strings(processor.tokenizer))
        read = len(prompts) + skipped.total
        if not read:
            raise DataQualityError(f"no records in {', '.join(s.path for s in config.data)}: nothing to train on")
        print(f"[geovlm] rl prompts: {len(prompts)} of {read} records"
              + (f"; skipped {dict(skipped)}" if skipped.total else ""))
        BadDataBudget(config.max_bad_fraction).check(
            skipped.total, read, skipped.breakdown() + f" (records need an image and a gold answer, "
            f"answer_mode={config.answer_mode})", noun="records")
        if not prompts:
            raise DataQualityError(f"none of the {read} records can be an RL prompt: {skipped.breakdown()}")
        return grpo_trainer_class()(model=trainable, reward_funcs=reward_funcs, args=grpo_arguments(config),
                                    train_dataset=to_dataset(prompts), processing_class=processor,
                                    callbacks=callbacks)

    def loop_context(model: Any) -> ExitStack:
        stack = ExitStack()
        stack.enter_context(completion_positions_only())
        stack.enter_context(sampling_on_support())
        return stack

    def write_log_history(trainer: Any, out: Path) -> None:
        if trainer.is_world_process_zero():
            # The reward curve and the rest of the logged metrics, beside TensorBoard's event files.
            (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")

    return run_stage(config, make_trainer, loop_context=loop_context, after_training=write_log_history)
