"""One benchmark job in a fresh process: `python -m geovlm.bench.worker JOB PARAMS.json OUT.json`.

Training variants run here one at a time so that each peak-memory figure is that variant's alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    job, params_path, out_path = argv if argv is not None else sys.argv[1:]
    from geovlm.bench.common import Settings
    from geovlm.bench.sections import JOBS

    params = json.loads(Path(params_path).read_text())
    settings = Settings.from_dict(params.pop("settings"))
    result = JOBS[job](settings, **params)
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
