"""Values every layer shares, defined once (no imports: cheap for any module to use)."""

IMAGE_TAG = "<image>"  # where a record's image goes in a user turn
IGNORE_INDEX = -100  # label of positions the loss ignores
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # Qwen2.5's, and the seed code's
# Role names in LLaVA-format records (and the wild), mapped to ChatML roles.
ROLE_ALIASES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
# `--quantize` methods (geovlm.precision): int8 (torchao, through transformers' quantization_config) and bf16
# (weights only, the model computing in its own dtype).
QUANTIZE_METHODS = ("int8", "bf16")
