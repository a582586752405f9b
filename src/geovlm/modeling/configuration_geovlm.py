"""`GeoVLMConfig`: one config that nests the SigLIP vision config and the Qwen2 text config."""

from __future__ import annotations

import math
from typing import Any, Literal

from transformers import PretrainedConfig, Qwen2Config, SiglipVisionConfig

from .special_tokens import IMAGE_PAD_ID, VISION_END_ID, VISION_START_ID

MERGE_MODES = ("spatial", "sequential")
# Older transformers (5.16.1, the oldest that vLLM 0.34 accepts) read `sub_configs` and leave turning a
# backbone's dict into its config to the subclass's `__post_init__`; newer ones do it from `sub_configs_defaults`.
BUILDS_OWN_SUB_CONFIGS = not hasattr(PretrainedConfig, "sub_configs_defaults")


class GeoVLMConfig(PretrainedConfig):
    r"""Configuration of a GeoVLM model.

    Args:
        vision_config: a `SiglipVisionConfig` (or its dict) for the vision tower.
        text_config: a `Qwen2Config` (or its dict) for the language model.
        merge_mode: how `merge_factor` patch features become one image token. `"spatial"` (default)
            concatenates each √k×√k block of the patch grid (pixel-unshuffle); `"sequential"`
            concatenates k consecutive raster-order patches, as the seed code does.
        merge_factor: patches per image token (4: 196 patches → 49 tokens on a 224 px, patch-16 tower).
        image_token_id: the `<|image_pad|>` id whose embeddings the image features replace.
        vision_start_token_id / vision_end_token_id: markers around an image span; `None` for
            checkpoints trained without them (the seed code).
        projector_hidden_act: activation between the projector's two linear layers.
    """

    model_type = "geovlm"
    sub_configs_defaults = {"vision_config": SiglipVisionConfig, "text_config": Qwen2Config}
    if BUILDS_OWN_SUB_CONFIGS:
        sub_configs = dict(sub_configs_defaults)

    vision_config: dict | PretrainedConfig | None = None
    text_config: dict | PretrainedConfig | None = None
    merge_mode: Literal["spatial", "sequential"] = "spatial"
    merge_factor: int = 4
    image_token_id: int = IMAGE_PAD_ID
    vision_start_token_id: int | None = VISION_START_ID
    vision_end_token_id: int | None = VISION_END_ID
    projector_hidden_act: str = "silu"
    tie_word_embeddings: bool = True

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> GeoVLMConfig:
        # A saved config (from_pretrained, AutoConfig, trust_remote_code) must carry both backbone configs:
        # one that lost them would silently become default-size backbones (a 7B-size Qwen2 for a lost
        # `text_config`) and be allocated before anything else fails. `GeoVLMConfig()` itself keeps its
        # defaults: transformers builds it to find a config's non-default fields (`to_diff_dict`).
        lost = [key for key in ("text_config", "vision_config") if not (kwargs.get(key) or config_dict.get(key))]
        if lost:
            raise ValueError(f"this GeoVLM config has no {' or '.join(lost)} (it was cut or edited): restore the "
                             "config.json saved with the weights; a GeoVLM config nests both backbone configs")
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs: Any) -> None:
        if BUILDS_OWN_SUB_CONFIGS:
            for key, config_class in self.sub_configs.items():
                value = getattr(self, key)
                if value is None or isinstance(value, dict):
                    setattr(self, key, config_class(**(value or {})))
        super().__post_init__(**kwargs)
        # The pooling head of SigLIP is never used: image tokens come from the patch features.
        self.vision_config.vision_use_head = False
        self.tie_word_embeddings = bool(self.text_config.tie_word_embeddings)
        self._check_merge()

    def _check_merge(self) -> None:
        if self.merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {self.merge_mode!r}")
        n, k = self.num_patches, self.merge_factor
        if k < 1 or n % k:
            raise ValueError(f"merge_factor {k} does not divide the {n} patches of the vision tower")
        if self.merge_mode == "spatial":
            side, grid = math.isqrt(k), math.isqrt(n)
            if side * side != k or grid % side:
                raise ValueError(
                    f"spatial merge needs a square merge_factor whose side divides the patch grid; "
                    f"got merge_factor={k} on a {grid}×{grid} grid (use merge_mode='sequential')"
                )

    @property
    def num_patches(self) -> int:
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    @property
    def num_image_tokens(self) -> int:
        """How many `<|image_pad|>` tokens stand for one image (49 for the real sizes)."""
        return self.num_patches // self.merge_factor

    @classmethod
    def from_preset(
        cls,
        name: str,
        vision: dict[str, Any] | None = None,
        text: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> GeoVLMConfig:
        """A named size: `"base"` (siglip-base-patch16-224 + Qwen2.5-0.5B) or `"tiny"` (tests, quickstart).

        `vision` / `text` override fields of the two backbone configs; other keywords set GeoVLM fields.
        """
        from .presets import PRESETS

        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        base_vision, base_text = PRESETS[name]
        return cls(
            vision_config=SiglipVisionConfig(**{**base_vision, **(vision or {})}),
            text_config=Qwen2Config(**{**base_text, **(text or {})}),
            **overrides,
        )
