"""Data parallelism for real: two gloo processes on the CPU end where one process with the same
global batch ends (within 1e-5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import set_seed

from conftest import free_port
from geovlm import GeoVLM, GeoVLMConfig
from test_train import write_corpus

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("ddp_worker.py")


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_gloo_processes_match_one_process(tmp_path):
    data = write_corpus(tmp_path / "data", n=12)
    run([sys.executable, str(WORKER), str(data), str(tmp_path / "single"), "4"])
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(WORKER), str(data), str(tmp_path / "ddp"), "2"])
    single = GeoVLM.from_pretrained(tmp_path / "single").state_dict()
    ddp = GeoVLM.from_pretrained(tmp_path / "ddp").state_dict()
    # Training moved the weights, so agreement is not agreement of two untouched copies.
    set_seed(42)
    initial = GeoVLM(GeoVLMConfig.from_preset("tiny")).state_dict()
    assert not torch.equal(initial["model.projector.linear_1.weight"], single["model.projector.linear_1.weight"])
    assert not torch.equal(initial["model.language_model.layers.1.mlp.up_proj.weight"],
                           single["model.language_model.layers.1.mlp.up_proj.weight"])
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=0, atol=1e-5, msg=key)
