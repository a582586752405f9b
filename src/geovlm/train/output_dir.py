"""A run's claim on its output folder: nothing there is replaced without `overwrite`, and `resume`
continues only a run of the same stage, data and model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from geovlm.train.trainer import last_complete_checkpoint

RUN_CONFIG = "train_config.yaml"
# What makes two runs "the same run" for --resume; the rest (batch size, lr, steps) may change.
IDENTITY_FIELDS = ("stage", "init_from", "preset", "vision", "llm", "merge_mode", "data", "lm_trainable",
                   "lm_last_n_layers", "train_vision", "lora_r")


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {name: config.get(name) for name in IDENTITY_FIELDS}


def claim_output_dir(config: Any, is_main_process: bool = True) -> str | None:
    """Check `config.output_dir` before a run writes anything; return the checkpoint to resume from.

    An empty or missing folder is taken. A folder with anything in it needs `resume` (the recorded run
    config must match this one's stage, data and model; the last complete checkpoint is resumed, or the
    run starts over beside the recorded config when there is none) or `overwrite` (the old run's model
    files, checkpoints and logs are removed first, by the main process). Raises ValueError otherwise."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return None
    if config.overwrite:
        if is_main_process:
            for name in entries:
                path = out / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return None
    if not config.resume:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ValueError(f"output_dir {out} is not empty ({shown}); pass --resume to continue the run there or "
                         "--overwrite to replace it, or choose another --output-dir")
    recorded_path = out / RUN_CONFIG
    try:
        recorded = yaml.safe_load(recorded_path.read_text())
    except (OSError, yaml.YAMLError):
        recorded = None
    if not isinstance(recorded, dict):
        raise ValueError(f"cannot resume in {out}: it has no readable {RUN_CONFIG} of a geovlm run "
                         "(pass --overwrite to replace what is there)")
    ours, theirs = _identity(config.to_dict()), _identity(recorded)
    differ = [name for name in IDENTITY_FIELDS if ours[name] != theirs[name]]
    if differ:
        name = differ[0]
        raise ValueError(f"cannot resume in {out}: its run has {name}={theirs[name]!r}, this one {ours[name]!r} "
                         "(resume continues the same stage, data and model; use another --output-dir)")
    checkpoint = last_complete_checkpoint(out, set_aside=is_main_process)
    print(f"[geovlm] resuming from {checkpoint}" if checkpoint else
          f"[geovlm] {out} holds no complete checkpoint of this run yet: starting from the beginning")
    return checkpoint
