"""A processor matched to a model config, built offline unless a tokenizer is given."""

from __future__ import annotations

from typing import Any

from geovlm.modeling import GeoVLMConfig, GeoVLMProcessor


def processor_for(config: GeoVLMConfig, tokenizer: Any = None, image_processor: Any = None, **kwargs: Any
                  ) -> GeoVLMProcessor:
    """A processor matched to a `GeoVLMConfig` (image size, tokens per image, span markers); the offline
    Qwen2.5 tokenizer unless one is given."""
    from transformers import SiglipImageProcessorPil

    if tokenizer is None:
        from geovlm.processing.tokenizer import load_qwen_tokenizer

        tokenizer = load_qwen_tokenizer()
    if image_processor is None:
        size = config.vision_config.image_size
        image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    tokens = tokenizer.convert_ids_to_tokens
    start, end = config.vision_start_token_id, config.vision_end_token_id
    kwargs.setdefault("vision_start_token", tokens(start) if start is not None else None)
    kwargs.setdefault("vision_end_token", tokens(end) if end is not None else None)
    return GeoVLMProcessor(image_processor=image_processor, tokenizer=tokenizer,
                           num_image_tokens=config.num_image_tokens, image_token=tokens(config.image_token_id),
                           **kwargs)
