"""hf-compress: make Hugging Face models smaller and faster, and ship them as ordinary Hub models.

Importing this package registers the pruned-model config and classes with the transformers Auto classes,
so ``AutoModelForSequenceClassification.from_pretrained(pruned_dir)`` works after ``import hf_compress``.
"""

from transformers import __version__ as _transformers_version
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .nas import DCANASConfig, DCANASForImageClassification

__version__ = "0.1.0"

# VTrans and RAMEN are written for transformers 5. Under transformers 4 (only the optimum-onnx export test
# environment, tests/optimum_env/, where optimum's ONNX exporter needs transformers<4.58) just DCA-NAS loads.
_TRANSFORMERS_5 = int(_transformers_version.split(".")[0]) >= 5
if _TRANSFORMERS_5:
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

    # peft's default LoRA (and other adapter) target modules for the pruned model types
    from .vtrans.peft_targets import register_peft_target_modules

    register_peft_target_modules()

__all__ = [
    "DCANASConfig", "DCANASForImageClassification", "RamenConfig", "RamenEncoder",
    "PrunedDecoderConfig", "PrunedDecoderForCausalLM", "PrunedDecoderModel",
    "PrunedEncoderConfig", "PrunedEncoderForSequenceClassification", "PrunedEncoderForTokenClassification",
    "PrunedEncoderModel", "attach_gates", "detach_gates", "materialize", "__version__",
]
if not _TRANSFORMERS_5:
    __all__ = ["DCANASConfig", "DCANASForImageClassification", "__version__"]
