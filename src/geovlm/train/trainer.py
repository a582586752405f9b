"""`GeoVLMTrainer`: the HF Trainer with the fast training loss (`train/fast/loss.py`), per-part learning
rates, cheap length grouping, skip accounting, tokens/s in the logs, and checkpoints that count only once
completely written."""

from __future__ import annotations

import logging
import math
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
from geovlm.data.skips import SKIP_REASONS, BadDataBudget, SkipCounter
from geovlm.train.fast.loss import FastLoss

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
        fast_loss: FastLoss | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fast_loss = fast_loss  # the training loss with less memory and time; None: the model's own
        self.part_lrs = part_lrs or {}
        self.budget = BadDataBudget(max_bad_fraction)
        self.skips = SkipCounter()  # samples drawn on this rank that could not be used
        self.load_skips = SkipCounter()  # malformed records found when the files were read (every rank alike)
        self.records_read = 0
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
        skipped = inputs.pop(SKIPPED_KEY, None)
        if model.training:
            self.skips.update(skipped, seen=len(inputs["input_ids"]))
            self.check_skip_budget(final=False)
        if "attention_mask" in inputs:
            self._tokens_since_log += int(inputs["attention_mask"].sum())
        if self.fast_loss is not None and model.training and not return_outputs:
            # HF's compute_loss keeps its bookkeeping (num_items_in_batch in, the scaling across devices
            # out); the call it makes to the model is the fast loss (train/fast/loss.py).
            model = _LossOnly(self.fast_loss, model)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # training logs (not eval or the final summary)
            now = time.perf_counter()
            tokens = self._tokens_since_log * self.args.world_size
            logs["tokens_per_second"] = round(tokens / max(now - self._last_log_time, 1e-9), 1)
            self._tokens_since_log, self._last_log_time = 0, now
            for reason, count in sorted(self.skips.items()):
                logs[f"skipped/{reason}"] = count + self.load_skips[reason]
        super().log(logs, start_time)

    def count_skips_from(self, found_at_load: SkipCounter, records_read: int) -> None:
        """Count the malformed records found when the corpus files were read: they are part of the corpus
        and of its bad share (once, though every rank read the files)."""
        self.load_skips = found_at_load
        self.records_read = records_read

    def skip_report(self) -> str:
        """This rank's account, e.g. ``36 records read, 2 malformed (...); 32 samples drawn, all usable``."""
        drawn = self.skips.report(noun="samples drawn")
        if not self.records_read:
            return drawn
        return f"{self.load_skips.report(self.records_read, noun='records read')}; {drawn}"

    def check_skip_budget(self, final: bool) -> None:
        """Stop when too many samples are unusable: at the end of an epoch when their share is over
        ``max_bad_fraction``, and during it as soon as the bad ones are more than that share of every
        sample the epoch (or the run, if it ends first) will draw -- from then on no number of good
        samples can bring the share back under the limit. Exact, so a corpus within the limit is never
        stopped by an unlucky early stretch. Draws are summed over all ranks first, so that every rank
        decides alike (one rank raising alone would leave the others hanging); malformed records found
        at load time count once."""
        reasons = sorted(set(SKIP_REASONS) | set(self.skips))
        local = torch.tensor([self.skips.seen] + [self.skips[r] for r in reasons], dtype=torch.float64)
        if self.accelerator.num_processes > 1:
            local = self.accelerator.reduce(local.to(self.accelerator.device), reduction="sum").cpu()
        drawn, bad = int(local[0]), int(local[1:].sum()) + self.load_skips.total
        seen = drawn + self.load_skips.total
        horizon = None if final else self.load_skips.total + self._draws_at_next_check(drawn)
        if not seen or self.budget.allows(bad, seen if horizon is None else horizon):
            return
        both = SkipCounter()
        both.merge(self.load_skips)
        both.merge(self.skips)
        ranks = " across all ranks" if self.accelerator.num_processes > 1 else ""
        self.budget.check(bad, seen, both.breakdown(), horizon=horizon, where=ranks)

    def _draws_at_next_check(self, drawn: int) -> int:
        """Samples drawn (all ranks) at the end of this epoch, or of the run if it ends first."""
        per_epoch = len(self.train_dataset) if self.train_dataset is not None else 0
        per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        run_end = self.state.max_steps * per_step
        if per_epoch <= 0:
            return run_end or drawn
        epoch_end = max(1, math.ceil(drawn / per_epoch)) * per_epoch
        return min(epoch_end, run_end) if run_end else epoch_end


class _LossOnly:
    """Stands in for the model inside `Trainer.compute_loss`: called with the batch, it returns the
    fast loss of the real model, which the Trainer then treats as the model's own."""

    def __init__(self, fast_loss: FastLoss, model: nn.Module) -> None:
        self.fast_loss, self.model = fast_loss, model

    def __call__(self, num_items_in_batch: Any = None, **inputs: Any) -> dict[str, torch.Tensor]:
        return {"loss": self.fast_loss(self.model, inputs, num_items_in_batch)}


class SkipReportCallback(TrainerCallback):
    """At the end of each epoch: print how many samples were unusable, and stop if too many were."""

    def __init__(self, trainer: GeoVLMTrainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            print(f"[geovlm] epoch {state.epoch:.2f}: {self.trainer.skip_report()}")
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
