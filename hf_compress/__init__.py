"""hf-compress: make Hugging Face models smaller and faster, and ship them as ordinary Hub models.

Importing this package registers the pruned-model config and classes with the transformers Auto classes,
so ``AutoModelForSequenceClassification.from_pretrained(pruned_dir)`` works after ``import hf_compress``.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .nas import DCANASConfig, DCANASForImageClassification
from .ramen import RamenConfig, RamenEncoder
from .vtrans import (
    PrunedDecoderConfig,
    PrunedDecoderForCausalLM,
    PrunedDecoderModel,
    PrunedEncoderConfig,
    PrunedEncoderForSequenceClassification,
    PrunedEncoderForTokenClassification,
    PrunedEncoderModel,
    attach_gates,
    detach_gates,
    materialize,
)

__version__ = "0.1.0"

AutoConfig.register(PrunedEncoderConfig.model_type, PrunedEncoderConfig, exist_ok=True)
AutoModel.register(PrunedEncoderConfig, PrunedEncoderModel, exist_ok=True)
AutoModelForSequenceClassification.register(PrunedEncoderConfig, PrunedEncoderForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(PrunedEncoderConfig, PrunedEncoderForTokenClassification, exist_ok=True)
AutoConfig.register(PrunedDecoderConfig.model_type, PrunedDecoderConfig, exist_ok=True)
AutoModel.register(PrunedDecoderConfig, PrunedDecoderModel, exist_ok=True)
AutoModelForCausalLM.register(PrunedDecoderConfig, PrunedDecoderForCausalLM, exist_ok=True)

# Saved pruned models carry their own modeling code (auto_map), so environments without hf-compress load them
# with ``trust_remote_code=True``; with hf-compress imported, the registered classes above are used.
PrunedEncoderConfig.register_for_auto_class()
PrunedEncoderModel.register_for_auto_class("AutoModel")
PrunedEncoderForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
PrunedEncoderForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
PrunedDecoderConfig.register_for_auto_class()
PrunedDecoderModel.register_for_auto_class("AutoModel")
PrunedDecoderForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "DCANASConfig", "DCANASForImageClassification", "RamenConfig", "RamenEncoder",
    "PrunedDecoderConfig", "PrunedDecoderForCausalLM", "PrunedDecoderModel",
    "PrunedEncoderConfig", "PrunedEncoderForSequenceClassification", "PrunedEncoderForTokenClassification",
    "PrunedEncoderModel", "attach_gates", "detach_gates", "materialize", "__version__",
]
