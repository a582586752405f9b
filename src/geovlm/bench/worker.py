"""A training-step variant in its own process, driven over stdin/stdout.

    python -m geovlm.bench.worker '{"settings": {...}, "stage": "stage1", "variant": "seed"}'

Each variant runs in a fresh process so that its peak memory is its own; the parent keeps two of
them alive and alternates their steps (see `geovlm.bench.runners.paired_training`), so that both see the
same background load. Protocol: the worker prints `@@bench {"ok": "ready"}` once built, then answers
each JSON command line (`{"cmd": "warmup" | "rep" | "result", ...}`) with one `@@bench` line holding
`{"ok": value}` or `{"error": traceback}`. Other output (warnings) may appear between them.
"""

from __future__ import annotations

import json
import sys
import traceback

PREFIX = "@@bench "


def reply(payload: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    (raw,) = argv if argv is not None else sys.argv[1:]
    try:
        from geovlm.bench.common import Settings
        from geovlm.bench.sections import TrainStepRunner

        params = json.loads(raw)
        runner = TrainStepRunner(Settings.from_dict(params.pop("settings")), **params)
    except Exception:
        reply({"error": traceback.format_exc()})
        return 1
    reply({"ok": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            value = runner.handle(command)
        except Exception:
            reply({"error": traceback.format_exc()})
            return 1
        reply({"ok": value})
        if command["cmd"] == "result":
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
