"""`GeoVLMTrainer`: the HF Trainer with per-part learning rates, cheap length grouping, skip
accounting, tokens/s in the logs, and checkpoints that count only once completely written."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from transformers.trainer_utils import rotate_checkpoints

from geovlm.data.collator import SKIPPED_KEY
from geovlm.data.dataset import SKIP_REASONS, DataQualityError, SkipCounter

logger = logging.getLogger(__name__)

# Key prefixes of checkpoints written before the LLaVA layout (see modeling_geovlm.LEGACY_KEY_MAPPING).
LEGACY_PREFIXES = ("language_model.", "vision_tower.", "projector.")
# Written last into a checkpoint folder: a folder without it was interrupted mid-write.
COMPLETE_MARKER = "checkpoint_complete"


class CompleteCheckpoints:
    """Trainer mixin: a checkpoint folder counts only once completely written (a marker file is its
    last write), and rotation only ever deletes checkpoints once a newer one is complete."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        # The Trainer only warns about weights it cannot place; a checkpoint of the layout before
        # GeoVLMModel would resume the step count and schedule with the initial weights.
        weights = Path(resume_from_checkpoint) / "model.safetensors"
        if weights.is_file():
            from safetensors import safe_open

            with safe_open(str(weights), "pt") as f:
                legacy = [k for k in f.keys() if k.startswith(LEGACY_PREFIXES)]  # noqa: SIM118 (not a dict)
            if legacy:
                raise ValueError(
                    f"{resume_from_checkpoint} was written by an earlier GeoVLM layout (keys like {legacy[0]!r}) "
                    "and cannot be resumed; start a new run from it with init_from instead")
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        # Hold rotation back while the parent writes, mark the new folder complete, then rotate
        # among complete ones.
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        # Every rank has written its part (RNG state, shards) before the folder is declared complete.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            run_dir = Path(self._get_output_dir(trial=trial))
            marker = run_dir / f"checkpoint-{self.state.global_step}" / COMPLETE_MARKER
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(f"{self.state.global_step}\n")
            os.replace(tmp, marker)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)


class GeoVLMTrainer(CompleteCheckpoints, Trainer):
    def __init__(
        self,
        *args: Any,
        part_lrs: dict[str, float] | None = None,
        max_bad_fraction: float = 0.05,
        min_samples_for_budget: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.part_lrs = part_lrs or {}
        self.max_bad_fraction = max_bad_fraction
        self.min_samples_for_budget = min_samples_for_budget
        self.skips = SkipCounter()
        self.add_callback(SkipReportCallback(self))
        self._tokens_since_log = 0
        self._last_log_time = time.perf_counter()

    # ------------------------------------------------------------------ optimiser
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW with one group per (part, decay) so the projector and vision tower get their own lr."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            part = next((p for p in self.part_lrs if f"{p}." in name), "default")
            groups.setdefault((part, name in decay), []).append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if with_decay else 0.0,
                "lr": self.part_lrs.get(part, self.args.learning_rate),
            }
            for (part, with_decay), params in groups.items()
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)  # each group carries its own
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------ data
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths is not None:
            # Lengths come from the text alone; the default would load every image to measure them.
            return EpochLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=list(lengths),
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        # Bad samples were replaced by real ones in the dataset; their records ride in the batch.
        self.skips.update(inputs.pop(SKIPPED_KEY, None), seen=len(inputs["input_ids"]))
        if "attention_mask" in inputs:
            self._tokens_since_log += int(inputs["attention_mask"].sum())
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # training logs (not eval or the final summary)
            now = time.perf_counter()
            tokens = self._tokens_since_log * self.args.world_size
            logs["tokens_per_second"] = round(tokens / max(now - self._last_log_time, 1e-9), 1)
            self._tokens_since_log, self._last_log_time = 0, now
            for reason, count in sorted(self.skips.items()):
                logs[f"skipped/{reason}"] = count
            self.check_skip_budget(final=False)
        super().log(logs, start_time)

    def check_skip_budget(self, final: bool) -> None:
        """Stop when too many samples were unusable. Counts are summed over all ranks first, so that
        every rank decides alike (one rank raising alone would leave the others hanging)."""
        reasons = sorted(set(SKIP_REASONS) | set(self.skips))
        local = torch.tensor([self.skips.seen] + [self.skips[r] for r in reasons], dtype=torch.float64)
        total = self.accelerator.reduce(local.to(self.accelerator.device), reduction="sum").cpu()
        seen, bad = int(total[0]), int(total[1:].sum())
        if not final and seen < self.min_samples_for_budget:
            return
        if seen and bad / seen > self.max_bad_fraction:
            self.skips.check_budget(total_seen=self.skips.seen, max_bad_fraction=self.max_bad_fraction)
            # Other ranks may have been fine locally; the global share is what counts.
            raise DataQualityError(
                f"{bad} of {seen} samples ({100 * bad / seen:.1f}%) across all ranks were unusable, more than "
                f"max_bad_fraction={100 * self.max_bad_fraction:g}%; run `geovlm data check` to list them")


class SkipReportCallback(TrainerCallback):
    """At the end of each epoch: print how many samples were unusable, and stop if too many were."""

    def __init__(self, trainer: GeoVLMTrainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            print(f"[geovlm] epoch {state.epoch:.2f}: {self.trainer.skips.report()}")
        self.trainer.check_skip_budget(final=True)


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """Length grouping whose order depends only on (seed, epoch): a resumed run skips exactly the
    batches it had already seen, in any epoch (the stock sampler draws from the global RNG)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):  # noqa: ANN204 - same signature as the parent
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def last_complete_checkpoint(output_dir: str | os.PathLike, set_aside: bool = True) -> str | None:
    """The newest `checkpoint-N` folder that was completely written. Interrupted ones are set aside
    (by the main process only, `set_aside`), so that rotation never counts them."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for folder in root.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if not (folder.is_dir() and step.isdigit()):
            continue
        if (folder / COMPLETE_MARKER).is_file():
            found.append((int(step), folder))
        elif set_aside:
            # Renamed rather than deleted: nothing a user wrote is lost, and rotation ignores it.
            aside = folder.with_name(f"incomplete-{folder.name}-{int(time.time())}")
            logger.warning("checkpoint %s was not completely written; moved to %s", folder, aside)
            shutil.move(folder, aside)
    return str(max(found)[1]) if found else None
