"""How the benchmark runs a training-step variant: in a fresh interpreter (the default; the protocol is
in `geovlm.bench.worker`) or in this process, one variant after another or alternated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from geovlm.bench.common import Settings


class RemoteRunner:
    """A `TrainStepRunner` in a fresh interpreter (see `geovlm.bench.worker` for the protocol)."""

    def __init__(self, settings: Settings, **params: Any) -> None:
        import geovlm
        from geovlm.bench.worker import PREFIX

        self.prefix = PREFIX
        self.name = " ".join(str(v) for v in params.values())
        package_root = str(Path(geovlm.__file__).resolve().parents[1])  # also right for a source checkout
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        payload = json.dumps({"settings": settings.to_dict(), **params})
        self.proc = subprocess.Popen([sys.executable, "-m", "geovlm.bench.worker", payload], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(self.prefix):
                message = json.loads(line[len(self.prefix) :])
                if "error" in message:
                    raise RuntimeError(f"benchmark worker {self.name} failed:\n{message['error']}")
                return message["ok"]
            sys.stderr.write(line)  # library output: pass it on, keep the protocol clean
        raise RuntimeError(f"benchmark worker {self.name} exited (status {self.proc.wait()})")

    def ready(self) -> None:
        self._read()

    def call(self, command: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class LocalRunner:
    """The same interface in this process (`--no-isolate`)."""

    def __init__(self, settings: Settings, **params: Any) -> None:
        from geovlm.bench.sections import TrainStepRunner

        self.runner = TrainStepRunner(settings, **params)

    def ready(self) -> None:
        pass

    def call(self, command: dict[str, Any]) -> Any:
        return self.runner.handle(command)

    def close(self) -> None:
        self.runner = None


def paired_training(settings: Settings, stage: str, variants: list[str]) -> dict[str, Any]:
    """Each variant in turn: build, warm-ups, timed repetitions, result (default), or, with
    `settings.interleave`, all variants alive at once and repetition i of each run back to back,
    alternating which goes first (ABBA), so that a change in background load falls on all alike.

    Sequential is the default because a second resident model is not neutral here: on this VM an idle
    process holding ~3.6 GB made the seed-style step ~15% slower (it faults in ~1.7 GB of fresh
    memory per step) while GeoVLM's step did not change, which would bias the comparison.
    """
    runner_cls = RemoteRunner if settings.isolate else LocalRunner
    reps = settings.reps_for(stage)

    def drive(runners: dict[str, Any]) -> dict[str, Any]:
        for runner in runners.values():
            runner.ready()
        for _ in range(settings.warmup):
            for runner in runners.values():
                runner.call({"cmd": "warmup"})
        order = list(runners.values())
        for i in range(reps):
            for runner in order if i % 2 == 0 else order[::-1]:
                runner.call({"cmd": "rep", "i": i})
        return {variant: runner.call({"cmd": "result"}) for variant, runner in runners.items()}

    groups = [variants] if settings.interleave else [[v] for v in variants]
    results: dict[str, Any] = {}
    for group in groups:
        runners: dict[str, Any] = {}
        try:
            for variant in group:  # isolated workers of one group build their models concurrently
                runners[variant] = runner_cls(settings, stage=stage, variant=variant)
            results.update(drive(runners))
        finally:
            for runner in runners.values():
                runner.close()
    return results


def run_job(settings: Settings, job: str, **params: Any) -> Any:
    from geovlm.bench.sections import JOBS

    return JOBS[job](settings, **params)
