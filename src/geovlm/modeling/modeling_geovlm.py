"""GeoVLM in the shape of transformers' LLaVA family: SigLIP vision tower → token merge → projector →
Qwen2 decoder, as a base model (`GeoVLMModel`) and a generation class (`GeoVLMForConditionalGeneration`,
also named `GeoVLM`).

This file ships inside every saved model folder (with `configuration_geovlm.py`, `connector.py` and
`presets.py`), so it imports only torch, transformers and its siblings: a folder loads with
`trust_remote_code=True` where geovlm is not installed.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import (
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2ForCausalLM,
    Qwen2Model,
    SiglipVisionModel,
)
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    BaseModelOutputWithPooling,
    CausalLMOutputWithPast,
)
from transformers.utils import logging

from .configuration_geovlm import GeoVLMConfig
from .connector import MERGES, Projector
from .special_tokens import IM_END_ID

logger = logging.get_logger(__name__)

# Folders saved before the LLaVA layout kept the whole Qwen2ForCausalLM under `language_model.` and the
# tower and projector at the top; these renamings load them into the current layout. New keys all start
# with `model.` or are `lm_head.weight`, so the patterns never touch them.
LEGACY_KEY_MAPPING = {
    r"^language_model\.model\.": "model.language_model.",
    r"^language_model\.lm_head\.": "lm_head.",
    r"^vision_tower\.": "model.vision_tower.",
    r"^projector\.": "model.projector.",
}


class GeoVLMPreTrainedModel(PreTrainedModel):
    config_class = GeoVLMConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "Qwen2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Backbones initialise their own modules; only the projector is ours.
        if isinstance(module, Projector):
            std = self.config.text_config.initializer_range
            for linear in (module.linear_1, module.linear_2):
                nn.init.normal_(linear.weight, mean=0.0, std=std)
                nn.init.zeros_(linear.bias)
        else:
            super()._init_weights(module)


class GeoVLMModel(GeoVLMPreTrainedModel):
    """Vision tower, projector and the Qwen2 decoder, without a language-modelling head.

    `forward` returns the decoder's last hidden states. `pixel_values` holds one image per image span in
    the batch, in reading order; rows without an image carry no `<|image_pad|>` tokens.
    """

    def __init__(self, config: GeoVLMConfig) -> None:
        super().__init__(config)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.projector = Projector(
            config.vision_config.hidden_size * config.merge_factor,
            config.text_config.hidden_size,
            config.projector_hidden_act,
        )
        self.language_model = Qwen2Model(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        """Images (n, 3, H, W) → `pooler_output`: LM-space image tokens (n, num_image_tokens, hidden);
        `last_hidden_state`: the tower's patch features. (Other keywords, e.g. `return_dict`, are accepted
        for the callers that pass them, as vLLM does.)"""
        vision_dtype = self.vision_tower.get_input_embeddings().weight.dtype
        patches = self.vision_tower(pixel_values=pixel_values.to(vision_dtype)).last_hidden_state
        merged = MERGES[self.config.merge_mode](patches, self.config.merge_factor)
        features = self.projector(merged.to(self.projector.linear_1.weight.dtype))
        return BaseModelOutputWithPooling(last_hidden_state=patches, pooler_output=features)

    def get_placeholder_mask(self, input_ids: torch.LongTensor, image_features: torch.Tensor) -> torch.Tensor:
        """Where the image features go (b, seq, 1); the pad count must match the feature count."""
        image_mask = input_ids == self.config.image_token_id
        n_pads = int(image_mask.sum())
        n_images, per_image = image_features.shape[:2]
        if n_pads != n_images * per_image:
            raise ValueError(
                f"input_ids hold {n_pads} <|image_pad|> tokens but the {n_images} image(s) give "
                f"{n_images * per_image} features ({per_image} per image); each image needs exactly "
                f"{per_image} pad tokens"
            )
        return image_mask.unsqueeze(-1)

    def embed_inputs(
        self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None, *, decoding: bool = False
    ) -> torch.Tensor:
        """Token embeddings with each `<|image_pad|>` run replaced by its image's features. `decoding`:
        the ids follow a cache (tokens the model generated), where an image token is only a token; the
        placeholder check is for prompts."""
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None or pixel_values.shape[0] == 0:
            n_pads = int((input_ids == self.config.image_token_id).sum())
            if n_pads and not decoding:
                raise ValueError(f"input_ids hold {n_pads} <|image_pad|> tokens but no pixel_values were given")
            if self.training and torch.is_grad_enabled():
                embeds = embeds + self._unused_connector_term(embeds)
            return embeds
        features = self.get_image_features(pixel_values).pooler_output
        mask = self.get_placeholder_mask(input_ids, features)
        return embeds.masked_scatter(mask, features.to(embeds.dtype))

    def _unused_connector_term(self, embeds: torch.Tensor) -> torch.Tensor | float:
        """A zero that depends on every trainable tower and projector weight, for an image-free training
        batch: without it stage 1 has no gradient at all, and DDP fails on weights a step did not use."""
        connector = [*self.projector.parameters(), *self.vision_tower.parameters()]
        if not any(p.requires_grad for p in connector):
            return 0.0
        size = self.config.vision_config.image_size
        return self.get_image_features(embeds.new_zeros(1, 3, size, size)).pooler_output.sum() * 0.0

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            # The KV cache is `cache` in recent transformers, `past_key_values` before.
            past = kwargs.get("cache", kwargs.get("past_key_values"))
            decoding = past is not None and hasattr(past, "get_seq_length") and past.get_seq_length() > 0
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, decoding=decoding)
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids (to find the image tokens), not inputs_embeds")
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )


class _SiglipVisionTower(SiglipVisionModel):
    """Loads the vision tower out of a full SigLIP checkpoint (google/siglip-* hold text and vision
    towers) without listing every text-tower weight it leaves behind on purpose."""

    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^logit_(scale|bias)$"]


class GeoVLMForConditionalGeneration(GeoVLMPreTrainedModel, GenerationMixin):
    """A small vision-language model for geometry diagrams: `GeoVLMModel` + `lm_head`.

    `forward(..., labels, logits_to_keep)` returns logits and loss like every HF causal LM; `generate`
    is the standard one (prompt + completion; pixel values are used on the first step only, so each
    image is encoded once).
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: GeoVLMConfig) -> None:
        super().__init__(config)
        self.model = GeoVLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()
        text = config.text_config
        if self.generation_config is not None and self.generation_config.pad_token_id is None:
            # Batched generation pads; Qwen2.5 pads with <|endoftext|>, its bos id.
            pad = getattr(text, "pad_token_id", None)
            self.generation_config.pad_token_id = pad if pad is not None else text.bos_token_id
        self._never_generate_vision_tokens()

    def _never_generate_vision_tokens(self) -> None:
        """The image token and the span markers belong to prompts: suppressed in `generation_config`
        (saved with the folder, so every caller of `generate` inherits it)."""
        if self.generation_config is None:
            return
        ids = [self.config.image_token_id, self.config.vision_start_token_id, self.config.vision_end_token_id]
        suppressed = list(self.generation_config.suppress_tokens or [])
        suppressed += [i for i in ids if i is not None and i not in suppressed]
        self.generation_config.suppress_tokens = suppressed

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> GeoVLMForConditionalGeneration:
        # Folders written before the LLaVA layout keep loading (see LEGACY_KEY_MAPPING).
        kwargs["key_mapping"] = {**LEGACY_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, info) with output_loading_info
        model._never_generate_vision_tokens()  # also for folders saved before it was part of the config
        return loaded

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        # Always the current layout, also for a model loaded from an older folder (which transformers
        # would otherwise write back under the names it was loaded from).
        kwargs.setdefault("save_original_format", False)
        # Serving engines build the base model through AutoModel (vLLM's Transformers backend).
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": "modeling_geovlm.GeoVLMModel"}
        super().save_pretrained(*args, **kwargs)

    @classmethod
    def from_backbones(
        cls,
        vision: str | os.PathLike = "google/siglip-base-patch16-224",
        llm: str | os.PathLike = "Qwen/Qwen2.5-0.5B-Instruct",
        *,
        dtype: torch.dtype | str | None = None,
        **config_overrides: Any,
    ) -> GeoVLMForConditionalGeneration:
        """Join pretrained backbones (hub ids or local folders) with a freshly initialised projector.

        `vision` may name a full `SiglipModel` checkpoint (as google/siglip-* are) or a
        `SiglipVisionModel` one; only the vision tower is kept.
        """
        vision_tower = _SiglipVisionTower.from_pretrained(vision, dtype=dtype)
        if PretrainedConfig.get_config_dict(vision)[0].get("model_type") == "siglip":
            logger.warning(f"{vision} is a full SigLIP model: its vision tower is used, its text tower left out")
        language_model = Qwen2ForCausalLM.from_pretrained(llm, dtype=dtype)
        # The saved folder must stand alone: drop where the backbones came from.
        vision_dict, text_dict = vision_tower.config.to_dict(), language_model.config.to_dict()
        for sub in (vision_dict, text_dict):
            sub.pop("_name_or_path", None)
        config = GeoVLMConfig(vision_config=vision_dict, text_config=text_dict, **config_overrides)
        model = cls(config)
        missing, unexpected = model.model.vision_tower.load_state_dict(vision_tower.state_dict(), strict=False)
        unexpected = [k for k in unexpected if not k.startswith("head.")]  # the unused pooling head
        if missing or unexpected:
            raise ValueError(f"vision weights from {vision} do not fit: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        model.model.language_model.load_state_dict(language_model.model.state_dict())
        model.lm_head.load_state_dict(language_model.lm_head.state_dict())
        model.tie_weights()
        # Only the ids that end and pad a reply: an Instruct model's sampling defaults (temperature,
        # top_p, repetition penalty) would make greedy evaluation sample or differ from the plain argmax.
        source = language_model.generation_config
        if source is not None and source.pad_token_id is not None:
            model.generation_config.pad_token_id = source.pad_token_id
        eos = source.eos_token_id if source is not None and source.eos_token_id is not None else config.text_config.eos_token_id
        model.generation_config.eos_token_id = _with_im_end(eos)
        if dtype is not None:
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """`labels` (-100 where not supervised) give the mean next-token loss; `num_items_in_batch` in
        `kwargs` (passed by the HF Trainer) makes it a sum over that many tokens. `logits_to_keep`: an
        int keeps the last that many positions (0: all), a 1-D tensor the positions it lists."""
        loss_kwargs = {k: kwargs.pop(k) for k in ("num_items_in_batch", "ignore_index") if k in kwargs}
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **loss_kwargs
            )
        extra = {k: v for k, v in outputs.items() if k != "last_hidden_state"}
        return CausalLMOutputWithPast(loss=loss, logits=logits, **extra)


def _with_im_end(eos: int | list[int] | None) -> list[int] | int | None:
    """Replies are ChatML turns: they end at <|im_end|> even when the LLM's own config (a base model's)
    stops only at <|endoftext|>."""
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return ids if IM_END_ID in ids else [IM_END_ID, *ids]


GeoVLM = GeoVLMForConditionalGeneration  # the name geovlm's users import

__all__ = ["GeoVLM", "GeoVLMForConditionalGeneration", "GeoVLMModel", "GeoVLMPreTrainedModel"]
