"""The lmms-eval task class behind `geovlm_geoqa` and `geovlm_synth` (their YAMLs name it with `class:`).

lmms-eval loads a task's documents with `datasets.load_dataset(dataset_path, data_files=...)` from
paths fixed in its YAML; ours live wherever the user's files are, named by environment variables or
`dataset_kwargs`, and are read with geovlm's own GeoQA readers (see `geoqa.py`) into an in-memory
`datasets.Dataset`. Everything else is lmms-eval's `ConfigurableTask`.
"""

from __future__ import annotations

from typing import Any

import datasets
from lmms_eval.api.task import ConfigurableTask

from geovlm.eval.lmms.geoqa import load_docs, resolve_files


class GeoQATask(ConfigurableTask):
    def __init__(self, config: dict[str, Any] | None = None, model_name: str | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}  # not a TaskConfig field
        super().__init__(config=config, model_name=model_name, **kwargs)

    def download(self, dataset_kwargs: dict[str, Any] | None = None) -> None:
        files = resolve_files(self.config.task, dataset_kwargs)
        docs = datasets.Dataset.from_list(load_docs(files))
        self.dataset = datasets.DatasetDict({self.config.test_split: docs})
        self.dataset_no_image = self.dataset  # images are paths, loaded by doc_to_visual
