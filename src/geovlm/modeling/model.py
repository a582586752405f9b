"""`GeoVLM`: SigLIP vision tower → token merge → projector → Qwen2 causal LM, as one `PreTrainedModel`."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Qwen2ForCausalLM, SiglipVisionModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from geovlm.constants import IGNORE_INDEX
from geovlm.modeling.config import GeoVLMConfig
from geovlm.modeling.connector import MERGES, Projector
from geovlm.modeling.linear_ce import linear_cross_entropy_sum
from geovlm.modeling.shared_prefix import SharedPrefix, shared_prefix_length
from geovlm.modeling.swiglu import use_lean_mlps


class GeoVLMPreTrainedModel(PreTrainedModel):
    config_class = GeoVLMConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "Qwen2DecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_sdpa = True
    _supports_flash_attn = True
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


def padding_is_causally_hidden(attention_mask: torch.Tensor | None, labels: torch.Tensor) -> bool:
    """True when every row is padded on the right only and no pad position is supervised.

    Then the causal mask alone already keeps pads out of every real token's attention (pads come
    after them) and positions count from 0 as before, so the padding mask can be dropped: SDPA takes
    its causal, grouped-query path instead of a materialised 4-D mask and key/value heads copied to
    match the query heads. Pad positions then compute garbage that no label reads.
    """
    if attention_mask is None:
        return False
    mask = attention_mask.bool()
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
    return right_padded and not bool((labels[~mask] != IGNORE_INDEX).any())


class GeoVLM(GeoVLMPreTrainedModel):
    """A small vision-language model for geometry diagrams.

    `forward(input_ids, pixel_values, attention_mask, labels)` returns a `CausalLMOutputWithPast`.
    `pixel_values` holds one image per image span in the batch, in reading order; rows without an
    image (text-only samples) simply carry no `<|image_pad|>` tokens.
    """

    def __init__(self, config: GeoVLMConfig) -> None:
        super().__init__(config)
        self.vision_tower = SiglipVisionModel(config.vision_config)
        self.projector = Projector(
            config.vision_config.hidden_size * config.merge_factor,
            config.text_config.hidden_size,
            config.projector_hidden_act,
        )
        self.language_model = Qwen2ForCausalLM(config.text_config)
        use_lean_mlps(self.language_model)  # a third less activation memory, same outputs
        self.shared_prefix = SharedPrefix()
        self.post_init()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_backbones(
        cls,
        vision: str | os.PathLike = "google/siglip-base-patch16-224",
        llm: str | os.PathLike = "Qwen/Qwen2.5-0.5B-Instruct",
        *,
        dtype: torch.dtype | str | None = None,
        **config_overrides: Any,
    ) -> GeoVLM:
        """Join pretrained backbones (hub ids or local folders) with a freshly initialised projector.

        `vision` may name a full `SiglipModel` checkpoint (as google/siglip-* are) or a
        `SiglipVisionModel` one; only the vision tower is kept.
        """
        vision_tower = SiglipVisionModel.from_pretrained(vision, dtype=dtype)
        language_model = Qwen2ForCausalLM.from_pretrained(llm, dtype=dtype)
        # The saved folder must stand alone: drop where the backbones came from.
        vision_dict, text_dict = vision_tower.config.to_dict(), language_model.config.to_dict()
        for sub in (vision_dict, text_dict):
            sub.pop("_name_or_path", None)
        config = GeoVLMConfig(vision_config=vision_dict, text_config=text_dict, **config_overrides)
        model = cls(config)
        missing, unexpected = model.vision_tower.load_state_dict(vision_tower.state_dict(), strict=False)
        unexpected = [k for k in unexpected if not k.startswith("head.")]  # the unused pooling head
        if missing or unexpected:
            raise ValueError(f"vision weights from {vision} do not fit: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        model.language_model.load_state_dict(language_model.state_dict())
        model.language_model.tie_weights()
        if dtype is not None:
            model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model

    # ----------------------------------------------------------------- pieces
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, H, W) → LM-space image tokens (n, num_image_tokens, hidden)."""
        vision_dtype = self.vision_tower.get_input_embeddings().weight.dtype
        # Stage 1 freezes the tower: skip its autograd graph entirely.
        trainable = any(p.requires_grad for p in self.vision_tower.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            patches = self.vision_tower(pixel_values=pixel_values.to(vision_dtype)).last_hidden_state
        merged = MERGES[self.config.merge_mode](patches, self.config.merge_factor)
        return self.projector(merged.to(self.projector.linear_1.weight.dtype))

    def embed_inputs(
        self, input_ids: torch.LongTensor, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token embeddings with each `<|image_pad|>` run replaced by its image's features."""
        embeds = self.get_input_embeddings()(input_ids)
        image_mask = input_ids == self.config.image_token_id
        n_pads = int(image_mask.sum())
        if pixel_values is None or pixel_values.shape[0] == 0:
            if n_pads:
                raise ValueError(f"input_ids hold {n_pads} <|image_pad|> tokens but no pixel_values were given")
            return embeds + self._unused_connector_term(embeds)
        features = self.encode_images(pixel_values)
        n_images, per_image = features.shape[:2]
        if n_pads != features.shape[0] * per_image:
            raise ValueError(
                f"input_ids hold {n_pads} <|image_pad|> tokens but the {n_images} image(s) give "
                f"{n_images * per_image} features ({per_image} per image); each image needs exactly "
                f"{per_image} pad tokens"
            )
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))

    def _unused_connector_term(self, embeds: torch.Tensor) -> torch.Tensor | float:
        """A zero that depends on every trainable vision/projector weight, for image-free batches:
        without it stage 1 has no gradient at all, and DDP errors on parameters a step did not use."""
        connector = [*self.projector.parameters(), *self.vision_tower.parameters()]
        if not (self.training and torch.is_grad_enabled() and any(p.requires_grad for p in connector)):
            return 0.0
        size = self.config.vision_config.image_size
        blank = embeds.new_zeros(1, 3, size, size)
        return self.encode_images(blank).sum() * 0.0

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """With `labels`, the loss is computed from the supervised positions only and `logits` is
        None: `lm_head` over all 151,936 vocabulary entries at every position would dominate memory.
        `num_items_in_batch` (passed by the HF Trainer) makes the loss a sum over the global count
        of supervised tokens, so gradient accumulation and data parallelism weigh tokens equally."""
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        if labels is None:
            return self.language_model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, **kwargs
            )
        if position_ids is None and padding_is_causally_hidden(attention_mask, labels):
            attention_mask = None
        prefix = 0
        plain_positions = attention_mask is None and position_ids is None and input_ids is not None
        if plain_positions and self.shared_prefix.applies(self.language_model, self.training):
            prefix = shared_prefix_length(input_ids, labels, self.config.image_token_id)
        hidden = self._hidden_states(input_ids, inputs_embeds, attention_mask, position_ids, prefix)
        loss = self.supervised_loss(hidden, labels[:, prefix:], num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=None)

    def _hidden_states(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        prefix: int,
    ) -> torch.Tensor:
        """The LM's final hidden states after the first `prefix` positions (all of them for 0), which
        come from `self.shared_prefix` (see `modeling/shared_prefix.py`)."""
        body = self.language_model.model
        if not prefix:
            return body(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        cache = self.shared_prefix.cache_for_batch(
            self.language_model, input_ids[0, :prefix], inputs_embeds[:1, :prefix], inputs_embeds.shape[0]
        )
        return body(inputs_embeds=inputs_embeds[:, prefix:], cache=cache, use_cache=True).last_hidden_state

    def supervised_loss(
        self,
        hidden: torch.Tensor,
        labels: torch.LongTensor,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token cross-entropy over positions whose (shifted) label is not -100."""
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        loss_sum = linear_cross_entropy_sum(self.language_model.lm_head, hidden[:, :-1][keep], targets[keep])
        if num_items_in_batch is None:
            return loss_sum / keep.sum().clamp(min=1)
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(loss_sum.device)
        return loss_sum / num_items_in_batch

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.LongTensor:
        """Encode the images once, then let the LM's `generate` run with its KV cache.

        Batches must be left-padded (the processor does so for generation). Returns only the new
        tokens, shape (batch, new_len). Accepts every `GenerationConfig` option and `streamer`.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif bool((attention_mask[:, -1] == 0).any()):
            raise ValueError("generate() needs left-padded inputs: some rows end in padding")
        inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        generate_kwargs.setdefault("pad_token_id", self._pad_token_id())
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
        )

    # ----------------------------------------------------------------- asking
    def chat(self, image: Any, question: str, history: Any = None, stream: bool = False,
             processor: Any = None, **generation_kwargs: Any) -> Any:
        """Reply to `question` about `image` (a path, bytes or PIL image), after `history`; see
        `geovlm.serve.chat.chat`. The processor defaults to the one loaded with the model."""
        from geovlm.serve.chat import chat

        return chat(self, processor or self._processor(), image, question, history, stream, **generation_kwargs)

    def answer(self, images: Any, questions: Any, batch_size: int = 8, processor: Any = None,
               **generation_kwargs: Any) -> list[str]:
        """Batched single-turn replies; see `geovlm.serve.chat.answer`."""
        from geovlm.serve.chat import answer

        return answer(self, processor or self._processor(), images, questions, batch_size, **generation_kwargs)

    def _processor(self) -> Any:
        processor = getattr(self, "processor", None)
        if processor is None:
            from geovlm.processing.processor import GeoVLMProcessor

            if not self.name_or_path:
                raise ValueError("this model has no processor attached: pass processor=")
            processor = self.processor = GeoVLMProcessor.from_pretrained(self.name_or_path)
        return processor

    def _pad_token_id(self) -> int | None:
        gen = self.language_model.generation_config
        if gen.pad_token_id is not None:
            return gen.pad_token_id
        eos = gen.eos_token_id
        return eos[0] if isinstance(eos, list) else eos
