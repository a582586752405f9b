"""Training configuration: one dataclass, read from YAML, overridable from the command line.

Every field is documented once, here; `geovlm pretrain/sft --help` lists them from this class, so
the command line can never drift from the config files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from geovlm.constants import DEFAULT_SYSTEM_PROMPT
from geovlm.data.sources import DataSource
from geovlm.errors import CLIError

logger = logging.getLogger(__name__)


class ConfigError(CLIError, ValueError):
    """A config file or a command-line value that cannot be read as YAML: one line naming the file and
    line (or the option). A ValueError for the Python API, a CLIError for `geovlm`'s one-line message."""


def read_yaml_file(path: str | Path) -> Any:
    """The YAML document in `path`; ConfigError (one line, file and line named) if it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such config file: {path}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML{_yaml_position(err)}: {_yaml_problem(err)}") from None


def _yaml_position(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(err: yaml.YAMLError) -> str:
    parts = [getattr(err, "context", None), getattr(err, "problem", None)]
    text = ", ".join(p for p in parts if p) or str(err)
    return " ".join(text.split())  # one line


def option(default: Any, help: str) -> Any:
    """A config field with its default and its one explanation, which `--help` shows (as TRL's fields
    carry theirs)."""
    return field(default=default, metadata={"help": help})


# Fields renamed to the `TrainingArguments` names they map onto; old YAML files still load, with a warning.
RENAMED_FIELDS = {"warmup_ratio": "warmup_steps", "gradient_checkpointing": "activation_checkpointing",
                  "sampling": "train_sampling_strategy"}


@dataclass
class TrainConfig:
    # --- what to train
    stage: Literal["pretrain", "sft"] = option("pretrain", "pretrain: projector only; sft: projector + part of the LM")
    init_from: str | None = option(None, "a GeoVLM folder (e.g. the stage-1 output); overrides vision/llm")
    vision: str = option("google/siglip-base-patch16-224", "vision backbone (hub id or folder) for a fresh model")
    llm: str = option("Qwen/Qwen2.5-0.5B-Instruct", "language backbone (hub id or folder) for a fresh model")
    preset: str | None = option(None, 'build a random model of a named size instead ("tiny"); no download')
    merge_mode: Literal["spatial", "sequential"] = option("spatial", "token merge for a fresh model")
    lm_trainable: Literal["none", "last_n", "all", "lora"] = option("none", "which part of the LM trains")
    lm_last_n_layers: int = option(4, "with lm_trainable=last_n: the last N decoder layers (+ final norm)")
    train_vision: bool = option(False, "also train the vision tower")
    freeze_embeddings: bool = option(False, "keep the (tied) token embeddings fixed even when the LM trains")
    lora_r: int = option(16, "LoRA rank (lm_trainable=lora)")
    lora_alpha: int = option(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA branch")
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "LM linear layers that get LoRA adapters"},
    )
    lora_merge_on_save: bool = option(True, "merge adapters into the weights in the final folder, or save adapters")

    # --- data
    data: list[DataSource] = field(default_factory=list, metadata={
        "help": "training corpora: a list of {path, images, weight} (LLaVA-format JSON/JSONL records, image "
                "paths relative to `images`); on the command line a path, or a YAML list"})
    system_prompt: str | None = option(DEFAULT_SYSTEM_PROMPT, "system turn added to every conversation (null: "
                                       "none); saved with the processor")
    max_length: int = option(1024, "longest sample in tokens, image span included (longer ones are skipped)")
    pad_to_square: bool = option(True, "pad images to a white square before resizing (LLaVA's expand2square)")
    max_bad_fraction: float = option(0.05, "stop if a larger share of the records than this is unusable")
    num_workers: int = option(2, "data loader processes")

    # --- optimisation
    learning_rate: float = option(1e-3, "peak learning rate of the LM (and of the projector and tower unless "
                                  "set below)")
    projector_lr: float | None = option(None, "the projector's own learning rate (default: learning_rate)")
    vision_lr: float | None = option(None, "the vision tower's own learning rate (default: learning_rate)")
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and norms)")
    adam_beta2: float = option(0.999, "AdamW's beta2; 0.98 adapts faster in short runs (the CPU quickstart)")
    warmup_steps: float = option(0.03, "linear warm-up: a number of steps, or (below 1) a fraction of all steps")
    lr_scheduler: str = option("cosine", "transformers' scheduler name: cosine, linear, constant, "
                               "constant_with_warmup, ...")
    max_grad_norm: float = option(1.0, "clip gradients to this global norm (0: no clipping)")
    per_device_batch_size: int = option(8, "samples per GPU (or CPU process) per step")
    gradient_accumulation_steps: int = option(1, "steps whose gradients add up before each optimiser step")
    epochs: float = option(1.0, "passes over the data (fractions allowed)")
    max_steps: int = option(-1, "optimiser steps to run; > 0 overrides epochs")
    seed: int = option(42, "seed of the model's initialisation, the data order and sampling")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = option("auto", "auto: bf16 where the hardware has it")
    activation_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, "
                                            "more time")
    train_sampling_strategy: Literal["group_by_length", "random", "sequential"] = option(
        "group_by_length", "sample order: similar lengths batched together (less padding), random, or in order")

    # --- outputs
    output_dir: str = option("save/pretrain", "where checkpoints, logs and the final model go")
    logging_steps: int = option(10, "log loss, learning rate and tokens/s every this many steps")
    save_steps: int = option(500, "write a checkpoint every this many steps")
    save_total_limit: int = option(3, "keep at most this many complete checkpoints")
    resume: bool = option(False, "continue the run in output_dir from its last complete checkpoint")
    overwrite: bool = option(False, "replace what output_dir holds (otherwise a non-empty output_dir is "
                             "refused)")
    report_to: str = option("tensorboard", "where logs go: tensorboard, wandb, ... or none")
    deepspeed: str | None = option(None, "a DeepSpeed JSON config, e.g. configs/deepspeed/zero2.json")
    push_to_hub: bool = option(False, "upload the final folder to the Hugging Face hub")
    hub_model_id: str | None = option(None, "hub repository for push_to_hub (default: the output folder's "
                                      "name)")
    progress_bar: bool = option(True, "show a progress bar")

    # ------------------------------------------------------------------ YAML
    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        raw = read_yaml_file(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields, got {type(raw).__name__}")
        return cls.from_dict({**raw, **overrides})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = _renamed(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        values = dict(raw)
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            # YAML 1.1 reads "2e-5" (no dot) as a string; take it as the number it means.
            if isinstance(value, str) and float in (typing.get_args(hints[name]) or (hints[name],)):
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        if "data" in values:
            values["data"] = [DataSource.coerce(item) for item in values["data"] or []]
        config = cls(**values)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text)
        return text

    def validate(self) -> None:
        check_field_types(self)
        if self.stage == "pretrain" and (self.lm_trainable != "none" or self.train_vision):
            raise ValueError("stage 'pretrain' trains the projector only: set lm_trainable=none, train_vision=false")
        if self.resume and self.overwrite:
            raise ValueError("resume continues the run in output_dir, overwrite replaces it: choose one")
        if self.lm_trainable == "last_n" and self.lm_last_n_layers < 1:
            raise ValueError("lm_last_n_layers must be at least 1")
        if self.lm_trainable == "lora" and not self.lora_merge_on_save and not self.init_from:
            raise ValueError("LoRA adapters saved alone need a base folder to point to: set init_from "
                             "(or lora_merge_on_save: true)")

    @property
    def effective_projector_lr(self) -> float:
        return self.projector_lr if self.projector_lr is not None else self.learning_rate

    @property
    def effective_vision_lr(self) -> float:
        return self.vision_lr if self.vision_lr is not None else self.learning_rate


def _renamed(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with the old names of renamed fields replaced by the new ones (one warning each)."""
    values = dict(raw)
    for old, new in RENAMED_FIELDS.items():
        if old in values:
            if new in values:
                raise ValueError(f"both {old} and {new} are set; {old} is the old name of {new}: keep {new}")
            logger.warning("config field %r is now %r (the TrainingArguments name); please rename it", old, new)
            values[new] = values.pop(old)
    return values


def check_field_types(obj: Any) -> None:
    """Raise ValueError naming the first field of the dataclass `obj` whose value has the wrong type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _check_type(f.name, getattr(obj, f.name), hints[f.name])


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Reject a value of the wrong type with a message naming the field (YAML typos fail early)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        errors = []
        for option in options:
            try:
                _check_type(name, value, option)
                return
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{name}: expected null, got {value!r}")
        return
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"{name}: expected one of {list(typing.get_args(hint))}, got {value!r}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping, got {value!r}")
        key_hint, value_hint = typing.get_args(hint) or (typing.Any, typing.Any)
        for key, item in value.items():
            if key_hint is not typing.Any:
                _check_type(f"{name} key", key, key_hint)
            if value_hint is not typing.Any:
                _check_type(f"{name}.{key}", item, value_hint)
        return
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if hint in (str, bool) and not isinstance(value, hint):
        raise ValueError(f"{name}: expected {hint.__name__}, got {value!r}")


# ---------------------------------------------------------------------- command line
def add_field_arguments(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One `--field VALUE` option per field of the dataclass `cls` (values read as YAML)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        flags = [flag] if flag == f"--{f.name}" else [flag, f"--{f.name}"]
        # A bare boolean flag (`--resume`) means true.
        extra = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        group.add_argument(*flags, dest=f.name, default=None, metavar="V", help=field_help(f, default, hints[f.name]), **extra)
        old = next((o for o, n in RENAMED_FIELDS.items() if n == f.name), None)
        if old:  # the old flag still works (field_overrides says it is renamed)
            group.add_argument("--" + old.replace("_", "-"), dest=old, default=None, help=argparse.SUPPRESS, **extra)


def field_help(f: dataclasses.Field, default: Any, hint: Any) -> str:
    """The field's explanation, its allowed values (a Literal's choices) and its default."""
    literals = [h for h in (hint, *typing.get_args(hint)) if typing.get_origin(h) is Literal]
    parts = [f.metadata.get("help", "")]
    if literals:
        parts.append("one of " + ", ".join(str(c) for c in typing.get_args(literals[0])))
    parts.append(f"default: {default!r}")
    # argparse formats help with %: a literal percent sign must be doubled.
    return "; ".join(p for p in parts if p).replace("%", "%%")


def field_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` given on the command line, parsed (see `parse_override`)."""
    given = {name: value for name in [f.name for f in dataclasses.fields(cls)] + list(RENAMED_FIELDS)
             if (value := getattr(args, name, None)) is not None}
    return {name: parse_override(cls, name, text) for name, text in _renamed(given).items()}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type | None = None) -> None:
    """`--config FILE` plus one `--field VALUE` option per field of `cls` (default `TrainConfig`;
    values read as YAML)."""
    parser.add_argument("--config", help="YAML config file (fields below override it)")
    add_field_arguments(parser, cls or TrainConfig, "config fields (each overrides the YAML file; values are YAML)")


def parse_override(cls: type, name: str, text: str) -> Any:
    """A command-line value for field `name` of `cls`: strings stay as typed, the rest is read as YAML."""
    hint = typing.get_type_hints(cls)[name]
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = set(typing.get_args(hint) if union else (hint,))  # list[str] is a list, not a str
    if options <= {str, type(None)}:
        nullable = type(None) in options
        return None if nullable and text.lower() in ("null", "none", "~") else text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        flag = "--" + name.replace("_", "-")
        raise ConfigError(f"{flag} {text!r}: invalid YAML value: {_yaml_problem(err)}") from None
    if isinstance(value, str) and float in options:
        with contextlib.suppress(ValueError):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if name == "data" and not isinstance(value, list):
        value = [value]  # a bare path or mapping means one source
    return value


def config_from_args(
    args: argparse.Namespace, default_config: str | Path | None = None, cls: type | None = None
) -> TrainConfig:
    cls = cls or TrainConfig
    overrides = field_overrides(args, cls)
    path = args.config or default_config
    return cls.from_yaml(path, **overrides) if path else cls.from_dict(overrides)
