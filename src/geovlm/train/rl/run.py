"""One stage-3 run: GRPO through TRL's `GRPOTrainer` on prompts whose answers are exact.

The model, recipe (what trains), checkpoints, final folder and model card are the other stages'; the
loop (sampling `num_generations` replies per prompt, group-relative advantages, the clipped policy loss,
an optional KL term to a reference model) is TRL's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import set_seed

from geovlm.data.skips import DataQualityError
from geovlm.train.model_card import write_model_card
from geovlm.train.recipes import apply_recipe, count_parameters, format_parameter_table
from geovlm.train.rl.config import RLConfig, grpo_fields
from geovlm.train.rl.prompts import build_prompts, to_dataset
from geovlm.train.rl.rewards import reward_functions
from geovlm.train.rl.sampling import sampling_on_support
from geovlm.train.run import build_model, claim_run_folder, push_folder, save_final, training_argument_values
from geovlm.train.trainer import CompleteCheckpoints

# TrainingArguments fields of the supervised stages that GRPO sets itself or does not use.
_NOT_FOR_GRPO = ("activation_checkpointing", "train_sampling_strategy", "remove_unused_columns")


def grpo_arguments(config: RLConfig, **overrides: Any) -> Any:
    """TRL's `GRPOConfig` from an `RLConfig` (the shared fields as in pretrain/sft, GRPO's by name)."""
    from trl import GRPOConfig

    values = {k: v for k, v in training_argument_values(config).items() if k not in _NOT_FOR_GRPO}
    _, weights = reward_functions(config.rewards)
    values.update({name: getattr(config, name) for name in grpo_fields()})
    values.update(gradient_checkpointing=config.gradient_checkpointing, reward_weights=weights)
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
    if original is None:
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
    resume_from = claim_run_folder(config)
    set_seed(config.seed)
    prompts, skipped = build_prompts(config.data, config.answer_mode)
    read = len(prompts) + sum(skipped.values())
    print(f"[geovlm] rl prompts: {len(prompts)} of {read} records"
          + (f"; skipped {dict(skipped)}" if skipped else ""))
    if not prompts or sum(skipped.values()) > config.max_bad_fraction * read:
        raise DataQualityError(
            f"{sum(skipped.values())} of {read} records cannot be RL prompts ({dict(skipped)}), more than "
            f"max_bad_fraction={100 * config.max_bad_fraction:g}%; records need an image and a gold answer "
            f"(answer_mode={config.answer_mode})")
    model, processor = build_model(config)
    trainable = apply_recipe(model, config)
    counts = count_parameters(trainable)
    print(f"[geovlm] stage rl: trainable parameters\n{format_parameter_table(counts)}")
    reward_funcs, _ = reward_functions(config.rewards)
    args = grpo_arguments(config)
    trainer = grpo_trainer_class()(model=trainable, reward_funcs=reward_funcs, args=args,
                                   train_dataset=to_dataset(prompts), processing_class=processor,
                                   callbacks=callbacks)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out / "train_config.yaml")
    with completion_positions_only(), sampling_on_support():
        trainer.train(resume_from_checkpoint=resume_from)
    save_final(trainer, processor, out, config)
    if trainer.is_world_process_zero():
        # The reward curve and the rest of the logged metrics, beside TensorBoard's event files.
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
        write_model_card(out, config, model.config, trainable=counts)
        if config.push_to_hub:
            push_folder(out, config)
    trainer.accelerator.wait_for_everyone()
    return out
