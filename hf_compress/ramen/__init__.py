"""RAMEN: graph-metadata-regularized encoder training for extreme classification."""

from transformers import AutoConfig, AutoModel

from .configuration_ramen import RamenConfig
from .modeling_ramen import RamenEncoder, RamenPreTrainedModel, pool

AutoConfig.register(RamenConfig.model_type, RamenConfig, exist_ok=True)
AutoModel.register(RamenConfig, RamenEncoder, exist_ok=True)
RamenConfig.register_for_auto_class()
RamenEncoder.register_for_auto_class("AutoModel")

__all__ = ["RamenConfig", "RamenEncoder", "RamenPreTrainedModel", "pool"]
