from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer():
    """The offline Qwen2.5 tokenizer, built once into the user cache (~/.cache/geovlm)."""
    from geovlm.processing.tokenizer import load_qwen_tokenizer

    return load_qwen_tokenizer()


@pytest.fixture
def tiny_pair(tokenizer):
    """A random tiny GeoVLM and its processor (real Qwen2.5 tokenizer)."""
    from geovlm import GeoVLM, GeoVLMConfig, GeoVLMProcessor

    torch.manual_seed(0)
    config = GeoVLMConfig.from_preset("tiny")
    return GeoVLM(config).eval(), GeoVLMProcessor.from_tokenizer(tokenizer, config)
