"""Training configuration: one dataclass, read from YAML, overridable from the command line.

Every field is documented once, here; `geovlm pretrain/sft --help` lists them from this class, so
the command line can never drift from the config files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from geovlm.constants import DEFAULT_SYSTEM_PROMPT
from geovlm.data.sources import DataSource
from geovlm.errors import CLIError


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


@dataclass
class TrainConfig:
    # --- what to train
    stage: Literal["pretrain", "sft"] = "pretrain"  # pretrain: projector only; sft: projector + part of the LM
    init_from: str | None = None  # a GeoVLM folder (e.g. the stage-1 output); overrides vision/llm
    vision: str = "google/siglip-base-patch16-224"  # vision backbone (hub id or folder) for a fresh model
    llm: str = "Qwen/Qwen2.5-0.5B-Instruct"  # language backbone (hub id or folder) for a fresh model
    preset: str | None = None  # build a random model of a named size instead ("tiny"); no download
    merge_mode: Literal["spatial", "sequential"] = "spatial"  # token merge for a fresh model
    lm_trainable: Literal["none", "last_n", "all", "lora"] = "none"  # which part of the LM trains
    lm_last_n_layers: int = 4  # with lm_trainable=last_n: the last N decoder layers (+ final norm)
    train_vision: bool = False  # also train the vision tower
    freeze_embeddings: bool = False  # keep the (tied) token embeddings fixed even when the LM trains
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    lora_merge_on_save: bool = True  # merge adapters into the weights in the final folder, or save adapters

    # --- data
    data: list[DataSource] = field(default_factory=list)
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    max_length: int = 1024  # tokens, image span included
    pad_to_square: bool = True
    max_bad_fraction: float = 0.05  # stop if more records than this are unusable
    num_workers: int = 2  # data loader processes

    # --- optimisation
    learning_rate: float = 1e-3
    projector_lr: float | None = None  # default: learning_rate
    vision_lr: float | None = None  # default: learning_rate
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # 0.98 adapts faster in short runs (the CPU quickstart)
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    seed: int = 42
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 where the hardware has it
    gradient_checkpointing: bool = False
    sampling: Literal["group_by_length", "random", "sequential"] = "group_by_length"  # sample order

    # --- outputs
    output_dir: str = "save/pretrain"
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 3
    resume: bool = False  # continue the run in output_dir from its last complete checkpoint
    overwrite: bool = False  # replace what output_dir holds (otherwise a non-empty output_dir is refused)
    report_to: str = "tensorboard"
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. configs/deepspeed/zero2.json
    push_to_hub: bool = False
    hub_model_id: str | None = None
    progress_bar: bool = True

    # ------------------------------------------------------------------ YAML
    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        raw = read_yaml_file(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields, got {type(raw).__name__}")
        return cls.from_dict({**raw, **overrides})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
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
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        flags = [flag] if flag == f"--{f.name}" else [flag, f"--{f.name}"]
        # A bare boolean flag (`--resume`) means true.
        extra = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        group.add_argument(*flags, dest=f.name, default=None, metavar="V", help=f"default: {default!r}", **extra)


def field_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` given on the command line, parsed (see `parse_override`)."""
    return {
        f.name: parse_override(cls, f.name, getattr(args, f.name))
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


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
