"""GeoVLM inside lmms-eval, the harness the field runs standard benchmarks in (MathVista, MathVerse,
Geometry3K, ...), and GeoVLM's own GeoQA and synthetic tasks there.

- The model: `lmms-eval --model geovlm --model_args pretrained=DIR[,batch_size=8,device=cuda]`. It is
  registered through lmms-eval's entry-point group `lmms_eval.models` (see `manifest`), so installing
  geovlm with the `eval` extra is all it takes; it answers `generate_until` requests through the same
  code as `geovlm eval` (`geovlm.serve.chat.answer`), so greedy replies are the same.
- The tasks (`geovlm_geoqa`, `geovlm_synth`): YAML files in `TASKS_DIR`, which lmms-eval reads with
  `--include_path "$(python -m geovlm.eval.lmms)"`, scored exactly as `geovlm score`.

Nothing here imports lmms-eval at import time: lmms-eval imports us.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).with_name("tasks")  # the task YAMLs, for lmms-eval's --include_path
MODEL_NAME = "geovlm"
MODEL_CLASS = "geovlm.eval.lmms.model.GeoVLMLmms"


def manifest() -> Any:
    """The `lmms_eval.models` entry point: lmms-eval calls this when it builds its model registry."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=MODEL_CLASS)


__all__ = ["MODEL_CLASS", "MODEL_NAME", "TASKS_DIR", "manifest"]
