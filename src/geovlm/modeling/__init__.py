"""The model: config, token merge and projector, base model + generation class, and the processor code
that ships with a saved folder. A leaf: imports torch and transformers only, never the rest of geovlm."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_geovlm import GeoVLMConfig
from .modeling_geovlm import GeoVLM, GeoVLMForConditionalGeneration, GeoVLMModel
from .processing_geovlm import GeoVLMProcessor

# Where geovlm is installed, the Auto classes find GeoVLM folders without trust_remote_code ...
AutoConfig.register(GeoVLMConfig.model_type, GeoVLMConfig, exist_ok=True)
AutoModel.register(GeoVLMConfig, GeoVLMModel, exist_ok=True)
AutoModelForImageTextToText.register(GeoVLMConfig, GeoVLMForConditionalGeneration, exist_ok=True)
AutoProcessor.register(GeoVLMConfig, GeoVLMProcessor, exist_ok=True)
# ... and `save_pretrained` writes this code and an `auto_map` into each folder, so that elsewhere
# `trust_remote_code=True` loads it.
GeoVLMConfig.register_for_auto_class()
GeoVLMModel.register_for_auto_class("AutoModel")  # serving engines build the base model (vLLM)
GeoVLMForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
GeoVLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["GeoVLM", "GeoVLMConfig", "GeoVLMForConditionalGeneration", "GeoVLMModel", "GeoVLMProcessor"]
