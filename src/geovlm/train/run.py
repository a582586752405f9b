"""One training run: `run_stage` is the sequence every stage shares (claim the folder, build the model,
apply the recipe, train, save); `train` is stages 1 and 2 on the HF Trainer (stage 3: `train/rl/run.py`)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed

from geovlm.modeling import GeoVLM, GeoVLMProcessor
from geovlm.train.config import TrainConfig
from geovlm.train.fast import FastLoss, lean_mlps
from geovlm.train.model_card import write_model_card
from geovlm.train.recipes import apply_recipe, count_parameters, format_parameter_table
from geovlm.train.trainer import GeoVLMTrainer

logger = logging.getLogger(__name__)


def build_model(config: TrainConfig) -> tuple[GeoVLM, GeoVLMProcessor]:
    """The starting point: a GeoVLM folder (`init_from`), a random preset, or pretrained backbones."""
    if config.init_from:
        from geovlm.loading import load_pretrained

        # Absolute, so that LoRA adapters saved alone point to their base from any working directory.
        source = os.path.abspath(config.init_from) if os.path.exists(config.init_from) else config.init_from
        try:
            model, processor = load_pretrained(source)
        except OSError as err:  # no such folder or hub id, unreadable weights
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"cannot load init_from {config.init_from!r}: {first}") from err
    elif config.preset:
        from geovlm.loading import build_tiny

        model, processor = build_tiny(config.preset, merge_mode=config.merge_mode)
    else:
        from transformers import AutoImageProcessor, AutoTokenizer

        from geovlm.loading import processor_for

        model = GeoVLM.from_backbones(config.vision, config.llm, merge_mode=config.merge_mode)
        processor = processor_for(model.config, AutoTokenizer.from_pretrained(config.llm),
                                  AutoImageProcessor.from_pretrained(config.vision))
    processor.system_prompt = config.system_prompt
    processor.pad_to_square = config.pad_to_square  # inference pads as training did
    return model, processor


def precision_flags(precision: str) -> dict[str, bool]:
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_arguments(config: TrainConfig, **overrides: Any) -> TrainingArguments:
    return TrainingArguments(**training_argument_values(config, **overrides))


def training_argument_values(config: TrainConfig, **overrides: Any) -> dict[str, Any]:
    """`TrainingArguments` fields from a config: the HF Trainer's for pretrain/sft, the base of TRL's
    GRPOConfig for rl."""
    on_gpu = torch.cuda.is_available()
    args: dict[str, Any] = dict(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        adam_beta2=config.adam_beta2,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        seed=config.seed,
        activation_checkpointing=config.activation_checkpointing,
        train_sampling_strategy=config.train_sampling_strategy,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=[] if config.report_to in ("none", "") else [config.report_to],
        deepspeed=deepspeed_config_path(config.deepspeed),
        dataloader_num_workers=config.num_workers,
        remove_unused_columns=False,  # the collator's keys are the model's inputs
        disable_tqdm=not config.progress_bar,
        use_cpu=not on_gpu,
        # torchrun on CPU-only machines: gloo (NCCL needs GPUs).
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        **precision_flags(config.precision),
    )
    args.update(overrides)
    return args


def build_train_dataset(config: TrainConfig, processor: GeoVLMProcessor) -> Any:
    from geovlm.data.dataset import build_dataset

    if not config.data:
        raise ValueError("no training data: set `data` (a list of {path, images, weight}) in the config")
    return build_dataset(
        config.data,
        processor,
        max_length=config.max_length,
        pad_to_square=config.pad_to_square,
        seed=config.seed,
    )


def train(config: TrainConfig, *, train_dataset: Any = None, callbacks: list | None = None) -> Path:
    """Run stage 1 or 2 end to end and return the folder of the final, self-contained model."""
    from geovlm.data.collator import GeoVLMCollator

    def make_trainer(model: GeoVLM, trainable: Any, processor: GeoVLMProcessor) -> GeoVLMTrainer:
        if config.activation_checkpointing:
            model.config.text_config.use_cache = False
        dataset = train_dataset if train_dataset is not None else build_train_dataset(config, processor)
        trainer = GeoVLMTrainer(
            model=trainable,
            args=training_arguments(config),
            train_dataset=dataset,
            data_collator=GeoVLMCollator(pad_token_id=processor.tokenizer.pad_token_id),
            part_lrs={"projector": config.effective_projector_lr, "vision_tower": config.effective_vision_lr},
            max_bad_fraction=config.max_bad_fraction,
            fast_loss=FastLoss(),  # the loss with less memory and time (train/fast/loss.py)
            callbacks=callbacks,
        )
        if hasattr(dataset, "load_skips"):
            dataset.load_skips.check_budget(dataset.num_records_read, config.max_bad_fraction)
            trainer.count_skips_from(dataset.load_skips, dataset.num_records_read)
        return trainer

    def report(trainer: GeoVLMTrainer, out: Path) -> None:
        print(f"[geovlm] data: {trainer.skip_report()}")

    # The MLPs keep a third less for the backward while this run trains (train/fast/swiglu.py).
    return run_stage(config, make_trainer, loop_context=lean_mlps, after_training=report)


def run_stage(
    config: TrainConfig,
    make_trainer: Callable[[GeoVLM, Any, GeoVLMProcessor], Any],
    *,
    loop_context: Callable[[GeoVLM], AbstractContextManager] = lambda model: nullcontext(),
    after_training: Callable[[Any, Path], None] | None = None,
) -> Path:
    """The run sequence every stage shares: claim the output folder (one run at a time, never the inputs),
    load the starting model, only then clear an overwritten folder, apply the recipe, train (resuming
    when asked), save the final folder, and write its model card (and push it). What differs between
    stages is how the trainer is made (`make_trainer(model, trainable, processor)`), what wraps its loop,
    and `after_training(trainer, out)`, run on every process once the model is saved."""
    from geovlm.train.output_dir import RunLock, check_not_an_input, clear_previous_run

    check_parallelism(config)  # before any process claims or loads anything
    if config.deepspeed:
        single_process_launch()
    state = process_state()
    if config.deepspeed:
        join_deepspeed_comm()
    check_not_an_input(config)  # before the lock file is written into anything
    lock = RunLock(config.output_dir).acquire() if state.is_main_process else None
    try:
        resume_from = claim_run_folder(config)
        set_seed(config.seed)  # a fresh model starts from the same weights in every run (and on resume)
        model, processor = build_model(config)
        if config.overwrite and state.is_main_process:
            clear_previous_run(config)
        state.wait_for_everyone()
        trainable = apply_recipe(model, config)
        counts = count_parameters(trainable)
        print(f"[geovlm] stage {config.stage}: trainable parameters\n{format_parameter_table(counts)}")
        trainer = make_trainer(model, trainable, processor)
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        config.to_yaml(out / "train_config.yaml")
        with loop_context(model):
            trainer.train(resume_from_checkpoint=resume_from)
        save_final(trainer, processor, out, config)
        if after_training is not None:
            after_training(trainer, out)
        if trainer.is_world_process_zero():
            write_model_card(out, config, model.config, trainable=counts)
            if config.push_to_hub:
                push_folder(out, config)
        trainer.accelerator.wait_for_everyone()
        return out
    finally:
        if lock is not None:
            lock.release()


def deepspeed_config_path(name: str | None) -> str | None:
    """The DeepSpeed JSON config a run names: a path as given, or else one shipped with the package by its
    name (`configs/deepspeed/zero2.json`, `zero3.json`, or just `zero2`), so that the README's commands work
    from any folder once geovlm is installed."""
    if not name or os.path.isfile(name):
        return name
    from importlib import resources

    stem = Path(name).name.removesuffix(".json")
    shipped = resources.files("geovlm") / "configs" / "deepspeed" / f"{stem}.json"
    if shipped.is_file():
        return str(shipped)
    raise ValueError(f"deepspeed: no such config file {name!r} (shipped: configs/deepspeed/zero2.json, zero3.json)")


def deepspeed_settings(config: TrainConfig) -> dict[str, Any]:
    """The JSON config `config.deepspeed` names ({} without DeepSpeed)."""
    import json

    path = deepspeed_config_path(config.deepspeed)
    if not path:
        return {}
    try:
        settings = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"deepspeed: cannot read {path}: {err}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"deepspeed: {path} is not a JSON object")
    return settings


def zero_stage(config: TrainConfig) -> int:
    """The ZeRO stage a run's DeepSpeed config asks for (0 without DeepSpeed)."""
    stage = deepspeed_settings(config).get("zero_optimization", {}).get("stage", 0)
    return int(stage) if str(stage).isdigit() else 0


def check_parallelism(config: TrainConfig) -> None:
    """Refuse, in one line and before anything is loaded, a parallel set-up this run would not honour:

    - FSDP on a machine without GPUs (`accelerate launch --use_fsdp` or an accelerate config with FSDP):
      accelerate attaches its FSDP plugin only on GPUs, so the Trainer would silently run plain DDP.
      (TrainConfig has no FSDP field; on GPUs FSDP goes through accelerate, untested here.)
    - DeepSpeed without the package, or a ZeRO-3 config whose final save would not gather the full weights;
    - LoRA merged on save under ZeRO-3 (the merge needs the full weights in one process), at the start
      rather than after the whole run.
    """
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_FSDP") and not torch.cuda.is_available():
        raise ValueError("FSDP needs GPUs (on a CPU the HF Trainer would silently run plain DDP instead): "
                         "use --deepspeed configs/deepspeed/zero3.json to shard on CPUs")
    if not config.deepspeed:
        return
    settings = deepspeed_settings(config)
    try:
        import deepspeed  # noqa: F401
    except ImportError as err:
        raise ValueError(f"--deepspeed needs the deepspeed package: DS_BUILD_OPS=0 pip install 'geovlm[deepspeed]' "
                         f"({err})") from None
    if zero_stage(config) == 3:
        zero = settings.get("zero_optimization", {})
        gather = zero.get("stage3_gather_16bit_weights_on_model_save", zero.get("gather_16bit_weights_on_model_save"))
        if gather is not True:
            raise ValueError(f"{config.deepspeed}: ZeRO-3 needs \"stage3_gather_16bit_weights_on_model_save\": true "
                             "in zero_optimization, so that the final folder holds the full weights")
        if config.lm_trainable == "lora" and config.lora_merge_on_save:
            raise ValueError("merging LoRA under ZeRO-3 is not supported: set lora_merge_on_save: false "
                             "(adapters saved beside init_from) or use configs/deepspeed/zero2.json")


def single_process_launch() -> None:
    """DeepSpeed in one process without a launcher (`geovlm sft --deepspeed ...`, not under torchrun): the
    environment a launcher gives a world of one, so that DeepSpeed does not look for MPI to find its peers."""
    if any(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return  # torchrun, accelerate launch, the deepspeed launcher
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def join_deepspeed_comm() -> None:
    """Let DeepSpeed's own communication layer use this run's process group before anything is built: a
    model made under ZeRO-3 before the Trainer starts DeepSpeed (TRL's GRPO reference model, created with
    `zero.Init`) would otherwise see a world of one process and fail its batch-size check."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)


def end_distributed() -> None:
    """End a multi-process run cleanly: every process waits for the others, then leaves the process group
    (without it DeepSpeed's runs can abort at interpreter exit). A no-op in one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def process_state() -> Any:
    """This run's processes as the Trainer will join them (gloo on a machine without GPUs: a plain
    `PartialState()` there sees each torchrun process as the only one), so that exactly one claims the
    output folder and all wait for it."""
    from accelerate import PartialState

    on_gpu = torch.cuda.is_available()
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=not on_gpu, **({"backend": "gloo"} if several and not on_gpu else {}))


def claim_run_folder(config: TrainConfig) -> str | None:
    """`claim_output_dir` on every process before any of them writes; the checkpoint to resume from."""
    from geovlm.train.output_dir import claim_output_dir

    state = process_state()
    try:
        checkpoint = claim_output_dir(config, is_main_process=state.is_main_process)
    finally:
        state.wait_for_everyone()
    return checkpoint


def push_folder(folder: Path, config: TrainConfig) -> None:
    """Upload the final folder (weights, processor, model card, run config) to the hub."""
    from huggingface_hub import HfApi

    repo_id = config.hub_model_id or Path(config.output_dir).name
    api = HfApi()
    repo_id = api.create_repo(repo_id, exist_ok=True).repo_id
    api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                      ignore_patterns=["checkpoint-*", "incomplete-*", "runs/*", ".final-staging/*"])
    print(f"[geovlm] pushed to https://huggingface.co/{repo_id}")


# What a final model folder holds; cleared before a new one is moved in, so that files of an earlier
# run (adapters of a LoRA run, another shard layout) can never mix with this one's.
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
               "adapter_config.json", "adapter_model.safetensors", "generation_config.json",
               "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json",
               # the code that loads the folder with trust_remote_code
               "configuration_geovlm.py", "modeling_geovlm.py", "processing_geovlm.py", "connector.py", "presets.py",
               "special_tokens.py")


def save_final(trainer: GeoVLMTrainer, processor: GeoVLMProcessor, out: Path, config: TrainConfig) -> None:
    """Write the final model into `out` through a staging folder: old model files are removed first
    and `config.json` moves in last, so an interrupted save leaves a folder that refuses to load
    rather than one that mixes two runs. Every rank takes part (ZeRO-3 gathers its shards)."""
    staging = out / ".final-staging"
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    zero3 = plugin is not None and int(plugin.zero_stage or 0) == 3
    if config.lm_trainable == "lora" and config.lora_merge_on_save:
        if zero3:  # check_parallelism refuses this before the run; never a merge of partitioned weights
            raise ValueError("merging LoRA under ZeRO-3 is not supported: set lora_merge_on_save: false")
        if trainer.is_world_process_zero():
            trainer.model.merge_and_unload().save_pretrained(staging)
    elif plugin is not None and not zero3:
        # ZeRO-1/2: every process holds the full weights; the model writes its folder itself, as without
        # DeepSpeed, so tied weights are saved once (the Trainer's DeepSpeed path saves a cloned state dict,
        # which unties them).
        if trainer.is_world_process_zero():
            trainer.model.save_pretrained(staging)  # PEFT models save their adapters
    else:
        trainer.save_model(str(staging))  # every rank: ZeRO-3 gathers its shards; PEFT models save their adapters
    if trainer.is_world_process_zero():
        processor.save_pretrained(staging)
        for pattern in MODEL_FILES:
            for stale in out.glob(pattern):
                stale.unlink()
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        for name in [n for n in names if n != "config.json"] + ["config.json"]:
            if (staging / name).exists():
                os.replace(staging / name, out / name)
        shutil.rmtree(staging, ignore_errors=True)
        print(f"[geovlm] final model: {out}")
    trainer.accelerator.wait_for_everyone()
