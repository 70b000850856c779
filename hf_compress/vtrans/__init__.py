"""VTrans: structured pruning of transformers with Variational Information Bottleneck gates."""

from .adapters import EncoderAdapter, TaskHead, UnsupportedModelError, get_adapter, register_adapter, supported_model_types
from .budget import Budget, EncoderShape, count_flops, count_params, expected_size, layer_params, resolve_budget
from .configuration_pruned_decoder import PrunedDecoderConfig
from .configuration_pruned_encoder import PrunedEncoderConfig
from .decoder_adapters import DecoderAdapter, DecoderDims
from .decoder_budget import DecoderShape
from .decoder_materialize import DecoderKeepPlan, decoder_plan_from_gates, select_decoder_units
from .modeling_pruned_decoder import PrunedDecoderForCausalLM, PrunedDecoderModel, PrunedDecoderPreTrainedModel
from .gates import VIBGate, VIBGates
from .masking import attach_gates, dense_shape, detach_gates, get_gates
from .materialize import KeepPlan, build_pruned_model, materialize, plan_from_gates, select_units, size_report
from .modeling_pruned_encoder import (
    PrunedEncoderForSequenceClassification,
    PrunedEncoderForTokenClassification,
    PrunedEncoderModel,
    PrunedEncoderPreTrainedModel,
)

__all__ = [
    "DecoderAdapter", "DecoderDims", "DecoderKeepPlan", "DecoderShape", "PrunedDecoderConfig",
    "PrunedDecoderForCausalLM", "PrunedDecoderModel", "PrunedDecoderPreTrainedModel", "decoder_plan_from_gates",
    "select_decoder_units",
    "Budget", "EncoderAdapter", "EncoderShape", "KeepPlan", "PrunedEncoderConfig",
    "PrunedEncoderForSequenceClassification", "PrunedEncoderForTokenClassification", "PrunedEncoderModel",
    "PrunedEncoderPreTrainedModel", "TaskHead", "UnsupportedModelError", "VIBGate", "VIBGates", "attach_gates",
    "build_pruned_model", "count_flops", "count_params", "dense_shape", "detach_gates", "expected_size",
    "get_adapter", "get_gates", "layer_params", "materialize", "plan_from_gates", "register_adapter",
    "resolve_budget", "select_units", "size_report", "supported_model_types",
]
