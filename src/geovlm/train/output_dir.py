"""A run's claim on its output folder: one run at a time (an OS lock), never the starting model or the
data, nothing there replaced without `overwrite`, and `resume` continues only a run of the same stage,
data and model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from geovlm.train.trainer import last_complete_checkpoint

RUN_CONFIG = "train_config.yaml"
# What makes two runs "the same run" for --resume; the rest (batch size, lr, steps) may change.
IDENTITY_FIELDS = ("stage", "init_from", "preset", "vision", "llm", "merge_mode", "data", "lm_trainable",
                   "lm_last_n_layers", "train_vision", "lora_r")


# Held (flock) by the run writing into the folder; the OS releases it when that process ends, however.
LOCK_FILE = ".geovlm-run.lock"


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return {name: config.get(name) for name in IDENTITY_FIELDS}


class RunLock:
    """An exclusive claim on an output folder for one run. A second run on the same folder is refused at
    once instead of mixing its files with the first's; a killed run's lock goes with its process."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no OS lock to take
            return self
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise ValueError(f"output_dir {self.path.parent} is a file")
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ValueError(f"output_dir {self.path.parent} is in use by another run (pid {holder}); wait for it "
                             "to finish or choose another --output-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
            if self._created and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()  # a run that failed before writing leaves no empty folder behind


def _inputs(config: Any) -> list[tuple[str, Path]]:
    """What a run reads and must never write into or delete: the starting model and the data."""
    found = [("init_from", Path(config.init_from))] if getattr(config, "init_from", None) else []
    for source in getattr(config, "data", None) or []:
        found.append(("data", Path(source.path)))
        if source.images is not None:
            found.append(("data images", Path(source.images)))
    return found


def check_not_an_input(config: Any) -> None:
    """Refuse an output folder that is, holds or (for the starting model) lies inside what the run reads:
    `--overwrite` would delete it before it is read, and checkpoints would mix into it."""
    out = Path(config.output_dir).resolve()
    for what, path in _inputs(config):
        path = path.resolve()
        inside = what == "init_from" and path in out.parents
        if out == path or path.is_relative_to(out) or inside:
            relation = "is" if out == path else "is inside" if inside else "holds"
            raise ValueError(f"output_dir {config.output_dir} {relation} the {what} {os.fspath(path)!r}, which this "
                             "run reads: choose an --output-dir outside it")


def clear_previous_run(config: Any) -> None:
    """`overwrite`: remove what an earlier run left in the output folder (called once the starting model
    is loaded, by the main process)."""
    out = Path(config.output_dir)
    for path in sorted(out.iterdir()) if out.is_dir() else []:
        if path.name != LOCK_FILE:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def claim_output_dir(config: Any, is_main_process: bool = True) -> str | None:
    """Check `config.output_dir` before a run writes anything; return the checkpoint to resume from.

    The folder must not be (or hold) the starting model or the data. An empty or missing folder is taken.
    A folder with anything in it needs `resume` (the recorded run config must match this one's stage,
    data and model; the last complete checkpoint is resumed, or the run starts over beside the recorded
    config when there is none) or `overwrite` (the old run's files are removed by `clear_previous_run`
    once the starting model is loaded). Raises ValueError otherwise."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out} is a file")
    check_not_an_input(config)
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if not entries or config.overwrite:
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
