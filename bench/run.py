"""`python bench/run.py [--quick] [--json OUT] ...`: the same as `geovlm bench` (see geovlm.bench.run)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from geovlm.bench.run import main
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from geovlm.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
