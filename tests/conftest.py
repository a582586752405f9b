from __future__ import annotations

import os
import socket

import pytest
import torch

# The tests' results must not depend on the host: without a named dtype, inference on a CPU with bf16 units
# would run in bf16 (geovlm.precision.default_inference_dtype). Subprocesses inherit it.
os.environ["GEOVLM_CPU_DTYPE"] = "fp32"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tokenizer():
    """The offline Qwen2.5 tokenizer, built once into the user cache (~/.cache/geovlm)."""
    from geovlm.processing.tokenizer import load_qwen_tokenizer

    return load_qwen_tokenizer()


@pytest.fixture
def tiny_pair(tokenizer):
    """A random tiny GeoVLM and its processor (real Qwen2.5 tokenizer)."""
    from geovlm import build_tiny

    torch.manual_seed(0)
    model, processor = build_tiny()
    return model.eval(), processor


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A saved tiny model folder whose untied, sharpened head makes varied (random) text; read only."""
    from geovlm import build_tiny

    torch.manual_seed(3)
    model, processor = build_tiny(head_std=0.5)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
