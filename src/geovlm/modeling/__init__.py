"""Model code: config, token merge and projector, the GeoVLM model. Imports nothing from data/train/eval."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from geovlm.modeling.config import GeoVLMConfig
from geovlm.modeling.model import GeoVLM

# So that AutoConfig/AutoModel (and AutoTokenizer, which reads config.json) recognise GeoVLM folders.
AutoConfig.register(GeoVLMConfig.model_type, GeoVLMConfig, exist_ok=True)
AutoModel.register(GeoVLMConfig, GeoVLM, exist_ok=True)
AutoModelForImageTextToText.register(GeoVLMConfig, GeoVLM, exist_ok=True)

__all__ = ["GeoVLM", "GeoVLMConfig"]
