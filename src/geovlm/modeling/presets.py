"""Named model sizes. `base` matches the published backbones, so that a config built from it has
the same shapes as `GeoVLM.from_backbones("google/siglip-base-patch16-224", "Qwen/Qwen2.5-0.5B-Instruct")`."""

from __future__ import annotations

from typing import Any

from .special_tokens import ENDOFTEXT_ID, IM_END_ID, QWEN_VOCAB_SIZE

SIGLIP_BASE_224: dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
)
QWEN25_05B: dict[str, Any] = dict(
    vocab_size=QWEN_VOCAB_SIZE, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
    rope_theta=1_000_000.0, tie_word_embeddings=True, bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID,
)
# Small enough to build in a fraction of a second, with the real vocabulary so that the real
# tokenizer works unchanged.
SIGLIP_TINY: dict[str, Any] = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
)
QWEN_TINY: dict[str, Any] = dict(
    vocab_size=QWEN_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
    rope_theta=10_000.0, tie_word_embeddings=True, bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID,
)

PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "base": (SIGLIP_BASE_224, QWEN25_05B),
    "tiny": (SIGLIP_TINY, QWEN_TINY),
}
