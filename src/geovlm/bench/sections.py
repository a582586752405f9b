"""The training-step and data-path measurements, and the table of sections a worker process runs.

Each public function takes `Settings` and returns a JSON-ready dict (inference: `bench/inference.py`)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from geovlm.bench.common import (
    CpuLoad,
    PeakMemory,
    Settings,
    autocast,
    count_flops,
    load_average,
    log,
    median,
    speed_probe,
    timed,
)
from geovlm.bench.inference import evaluation, generation
from geovlm.bench.seed_style import seed_loss
from geovlm.bench.serving import concurrency, precision
from geovlm.bench.workloads import Workload, build_model, to_device, tokenizer

# Training-step variants: GeoVLM as it trains, the seed's method, and (GPU, opt-in) GeoVLM with a
# fused linear cross-entropy.
TRAIN_VARIANTS = ("geovlm", "seed", "geovlm+flce")


# ---------------------------------------------------------------------- training steps
def _fused_ce_loss_fn() -> Callable | None:
    """Liger's fused linear cross-entropy (never materialises the logits), if the library is installed."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss()


def _geovlm_flce_loss(model: Any, batch: dict[str, Any], flce: Callable) -> torch.Tensor:
    """GeoVLM's supervised-positions loss, with lm_head + cross-entropy fused into one kernel."""
    embeds = model.model.embed_inputs(batch["input_ids"], batch["pixel_values"])
    hidden = model.model.language_model(
        inputs_embeds=embeds, attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    selected = hidden[:, :-1][keep]
    # Under autocast the hidden states are bf16 while the (frozen) head is fp32; the kernel wants one dtype.
    weight = model.lm_head.weight.to(selected.dtype)
    return flce(weight, selected, targets[keep])


class TrainStepRunner:
    """One training-step variant, driven step by step so that two variants can be interleaved in time.

    Stage 1 trains the projector only; stage 2 the projector, the last `stage2_last_n` LM layers and
    the final norm (GeoVLM's `apply_recipe` sets `requires_grad` for both variants alike). A step is
    forward, backward, AdamW. Every step runs the epoch's median batch (by padded length) of the
    variant's own sampler: length-grouped for GeoVLM (its trainer's default), random for the seed.
    """

    def __init__(self, settings: Settings, stage: str, variant: str) -> None:
        from geovlm.train.config import TrainConfig
        from geovlm.train.fast import FastLoss
        from geovlm.train.fast.swiglu import use_lean_mlps
        from geovlm.train.recipes import apply_recipe, count_parameters

        if variant not in TRAIN_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        self.settings, self.stage, self.variant = settings, stage, variant
        self.skipped = None
        self.flce = _fused_ce_loss_fn() if variant == "geovlm+flce" else None
        if variant == "geovlm+flce" and self.flce is None:
            self.skipped = "liger_kernel is not installed"
            return
        device = settings.device
        t0 = time.perf_counter()
        self.model, processor = build_model(settings.preset, seed=settings.seed)
        # GeoVLM trains with its fast loss and lean MLPs (as GeoVLMTrainer does); the seed, the plain model.
        self.fast_loss = FastLoss() if variant != "seed" else None
        if variant != "seed":
            use_lean_mlps(self.model)
        if stage == "stage1":
            recipe = TrainConfig(stage="pretrain")
        else:
            recipe = TrainConfig(stage="sft", lm_trainable="last_n", lm_last_n_layers=settings.stage2_last_n)
        apply_recipe(self.model, recipe)
        self.counts = count_parameters(self.model)
        self.model.to(device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.startswith("cuda") or None)
        self.pad_id = processor.tokenizer.pad_token_id
        self.workload = Workload(stage, processor, settings.population, settings.seed)
        self.batch_size = settings.stage1_batch if stage == "stage1" else settings.stage2_batch
        self.indices, self.padding = self.workload.median_batch(self.batch_size, grouped=variant != "seed")
        collate = self.workload.seed_batch if variant == "seed" else self.workload.geovlm_batch
        self.batch = to_device(collate(self.indices), device)
        self.build_seconds = time.perf_counter() - t0
        self.warmups = 0
        self.flops = 0
        self.times: list[float] = []
        self.others_cores: list[float | None] = []
        self.probes: list[float] = []
        self.losses: list[float] = []
        self.memory = PeakMemory(device)
        self.memory.start()
        log(f"{stage} {variant}: built in {self.build_seconds:.1f} s")

    def _loss(self) -> torch.Tensor:
        with autocast(self.settings):
            if self.variant == "seed":
                return seed_loss(self.model, self.batch, self.pad_id)
            if self.flce is not None:
                return _geovlm_flce_loss(self.model, self.batch, self.flce)
            return self.fast_loss(self.model, self.batch)

    def _step(self) -> float:
        loss = self._loss()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def warmup(self) -> float:
        """An untimed step; the first one, eager, counts the FLOPs."""
        if self.warmups == 0:
            with count_flops() as flops:
                seconds, _ = timed(self._step, self.settings.device)
            self.flops = flops["total"]
            if self.settings.compile:
                self.model.model.vision_tower.compile(dynamic=True)
                self.model.model.language_model.compile(dynamic=True)
        else:
            seconds, _ = timed(self._step, self.settings.device)
        self.warmups += 1
        return seconds

    def rep(self, i: int) -> float:
        self.probes.append(speed_probe(self.settings))
        with CpuLoad() as load:
            seconds, loss = timed(self._step, self.settings.device)
        self.times.append(seconds)
        self.others_cores.append(load.others_cores)
        self.losses.append(loss)
        log(f"{self.stage} {self.variant}: rep {i + 1}/{self.settings.reps_for(self.stage)} {seconds:.2f} s "
            f"(other processes used {load.others_cores} cores)")  # fmt: skip
        return seconds

    def result(self) -> dict[str, Any]:
        if self.skipped:
            return {"variant": self.variant, "skipped": self.skipped}
        seconds = median(self.times)
        real_tokens = int(self.batch["attention_mask"].sum()) if "attention_mask" in self.batch else (
            self.padding["median_batch_real_tokens"])
        return {
            "stage": self.stage,
            "variant": self.variant,
            "batch_size": self.batch_size,
            "padded_length": int(self.batch["input_ids"].shape[1]),
            "real_tokens": real_tokens,
            "seconds_per_step": seconds,
            "min_seconds_per_step": min(self.times),
            "samples_per_s": self.batch_size / seconds,
            "times": self.times,
            "others_cores": self.others_cores,
            "probe_flops_per_s": self.probes,
            "flops_per_step": self.flops,
            "achieved_flops_per_s": self.flops / seconds,
            "flop_count_method": "torch.utils.flop_counter.FlopCounterMode over one eager step (forward+backward)",
            "memory": self.memory.report(),
            "padding": self.padding,
            "trainable_parameters": {k: v["trainable"] for k, v in self.counts.items()},
            "losses": self.losses,
            "attn_implementation": self.model.config.text_config._attn_implementation,
            "build_seconds": self.build_seconds,
            "load_average": load_average(),
        }

    def handle(self, command: dict[str, Any]) -> Any:
        """One command of the interleaving protocol (see `geovlm.bench.worker`)."""
        if self.skipped and command["cmd"] != "result":
            return None
        if command["cmd"] == "warmup":
            return self.warmup()
        if command["cmd"] == "rep":
            return self.rep(int(command["i"]))
        if command["cmd"] == "result":
            return self.result()
        raise ValueError(f"unknown command {command!r}")


# ---------------------------------------------------------------------- data path
def _cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def _time_loader(loader: Any, batches_per_rep: int, reps: int) -> list[float]:
    """Seconds per `batches_per_rep` batches, after two warm-up batches (worker start-up, first reads)."""
    batches = _cycle(loader)
    for _ in range(2):
        next(batches)
    return [timed(lambda: list(itertools.islice(batches, batches_per_rep)), "cpu")[0] for _ in range(reps)]


def data_path(settings: Settings) -> dict[str, Any]:
    """Samples/s of GeoVLMDataset + GeoVLMCollator through a DataLoader (0, 2, ... workers), on a
    freshly written synthetic dataset: captions (stage 1) and question/answer records (stage 2)."""
    from torch.utils.data import DataLoader

    from geovlm.data.collator import GeoVLMCollator
    from geovlm.data.dataset import GeoVLMDataset
    from geovlm.modeling import GeoVLMConfig
    from geovlm.processing.build import processor_for
    from geovlm.synth import write_dataset

    processor = processor_for(GeoVLMConfig.from_preset(settings.preset), tokenizer())
    collator = GeoVLMCollator(pad_token_id=processor.tokenizer.pad_token_id)
    folder = Path(tempfile.mkdtemp(prefix="geovlm-bench-"))
    result: dict[str, Any] = {"problems": settings.data_problems, "rows": []}
    try:
        seconds, _ = timed(lambda: write_dataset(folder, settings.data_problems, settings.seed, progress=False), "cpu")
        result["write_seconds"] = seconds
        for stage, name, batch_size in (("stage1", "alignment.json", settings.stage1_batch),
                                        ("stage2", "qa_tuning.json", settings.stage2_batch)):
            dataset = GeoVLMDataset([(str(folder / name), str(folder / "images"), 1.0)], processor, cache_lengths=False)
            for workers in settings.data_workers:
                loader = DataLoader(
                    dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collator,
                    persistent_workers=workers > 0, generator=torch.Generator().manual_seed(settings.seed),
                )  # fmt: skip
                times = _time_loader(loader, settings.data_batches_per_rep, settings.reps)
                samples_per_s = settings.data_batches_per_rep * batch_size / median(times)
                result["rows"].append({"stage": stage, "file": name, "records": len(dataset), "workers": workers,
                                       "batch_size": batch_size, "samples_per_s": samples_per_s, "times": times})  # fmt: skip
                log(f"data {stage} workers={workers}: {samples_per_s:.1f} samples/s")
                del loader  # ends its worker processes
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["load_average"] = load_average()
    return result


JOBS: dict[str, Callable[..., Any]] = {
    "generation": generation,
    "evaluation": evaluation,
    "data_path": data_path,
    "precision": precision,
    "concurrency": concurrency,
}

