"""Structure maps of decoder LMs: the LLaMA layout (LLaMA, Mistral, Qwen2, ... recognised from module names)
and GPT-2 (Conv1D projections, fused qkv).

Like the encoder adapters, these are the only place that knows a decoder's module names. They also hide how
a family stores its projections: :meth:`DecoderAdapter.projection` always returns ``(weight [out, in],
bias)``, whether the module is an ``nn.Linear``, a GPT-2 ``Conv1D`` (weight stored ``[in, out]``) or one third
of a fused qkv projection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .gates import GATE_GROUPS


@dataclass(frozen=True)
class DecoderDims:
    """The dense sizes and options of a decoder, read from its config and modules."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    hidden_act: str
    norm_eps: float
    max_position_embeddings: int
    rope_parameters: dict | None
    attention_bias: bool
    o_proj_bias: bool
    mlp_bias: bool
    tie_word_embeddings: bool
    attention_dropout: float
    hidden_dropout: float
    sliding_window: int | None
    initializer_range: float
    bos_token_id: Any
    eos_token_id: Any
    pad_token_id: Any

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class DecoderAdapter:
    """Structure map of a pre-norm decoder LM (``style`` 'llama' or 'gpt2', see PrunedDecoderConfig)."""

    model_types: tuple[str, ...]
    style: str
    base_prefix: str
    layers: str
    embed_tokens: str
    final_norm: str
    attention_norm: str
    mlp_norm: str
    o_proj: str
    up_proj: str
    down_proj: str
    read_config: Callable[[PretrainedConfig], dict]
    q_proj: str | None = None
    k_proj: str | None = None
    v_proj: str | None = None
    qkv_proj: str | None = None  # fused [q; k; v] projection (GPT-2's c_attn)
    gate_proj: str | None = None
    embed_positions: str | None = None
    conv1d: bool = False  # projections store their weight as [in, out]
    kind: str = "decoder"
    # what VTransTrainer gates when the user names no groups, weights training or frozen (kv_groups: GQA only)
    default_gate_groups: tuple[str, ...] = GATE_GROUPS
    frozen_weights_gate_groups: tuple[str, ...] = GATE_GROUPS

    # -- module lookup -----------------------------------------------------------------------------
    def base_model(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.base_prefix) if hasattr(model, self.base_prefix) else model

    def is_task_model(self, model: nn.Module) -> bool:
        return hasattr(model, self.base_prefix)

    def task(self, model: nn.Module) -> str:
        if not self.is_task_model(model):
            return "base"
        if type(model).__name__.endswith("ForCausalLM") or type(model).__name__.endswith("LMHeadModel"):
            return "ForCausalLM"
        from .adapters import UnsupportedModelError

        raise UnsupportedModelError(
            f"{type(model).__name__}: hf-compress prunes decoder base models and causal-LM heads "
            f"(AutoModelForCausalLM); prune the causal LM and fine-tune the task head on the pruned model."
        )

    def layer(self, model: nn.Module, index: int) -> nn.Module:
        return self.base_model(model).get_submodule(self.layers)[index]

    def layer_module(self, model: nn.Module, index: int, name: str) -> nn.Module:
        return self.layer(model, index).get_submodule(getattr(self, name))

    def module(self, model: nn.Module, name: str) -> nn.Module | None:
        path = getattr(self, name)
        return None if path is None else self.base_model(model).get_submodule(path)

    def lm_head(self, model: nn.Module) -> nn.Module | None:
        return model.get_output_embeddings() if self.is_task_model(model) else None

    # -- weights in one convention ----------------------------------------------------------------------
    def _weight(self, module: nn.Module) -> torch.Tensor:
        return module.weight.detach().t() if self.conv1d else module.weight.detach()

    def projection(self, model: nn.Module, layer: int, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(weight [out, in], bias or None)`` of a layer projection (q/k/v/o, gate/up/down)."""
        if name in ("q_proj", "k_proj", "v_proj") and self.qkv_proj is not None:
            fused = self.layer_module(model, layer, "qkv_proj")
            weight, bias = self._weight(fused), fused.bias.detach() if fused.bias is not None else None
            part = ("q_proj", "k_proj", "v_proj").index(name)
            rows = weight.shape[0] // 3
            sl = slice(part * rows, (part + 1) * rows)
            return weight[sl], (bias[sl] if bias is not None else None)
        module = self.layer_module(model, layer, name)
        return self._weight(module), (module.bias.detach() if getattr(module, "bias", None) is not None else None)

    def dims(self, model: PreTrainedModel) -> DecoderDims:
        """Sizes from the config; bias options from the modules of layer 0 (configs disagree on naming)."""
        values = self.read_config(model.config)
        _, q_bias = self.projection(model, 0, "q_proj")
        _, o_bias = self.projection(model, 0, "o_proj")
        _, up_bias = self.projection(model, 0, "up_proj")
        tie = bool(getattr(model.config, "tie_word_embeddings", False))
        head = self.lm_head(model)
        if head is not None:
            tie = head.weight is self.module(model, "embed_tokens").weight or tie
        return DecoderDims(
            attention_bias=q_bias is not None, o_proj_bias=o_bias is not None, mlp_bias=up_bias is not None,
            tie_word_embeddings=tie, **values,
        )


def _common(config: PretrainedConfig) -> dict:
    return dict(
        vocab_size=config.vocab_size,
        initializer_range=getattr(config, "initializer_range", 0.02),
        bos_token_id=getattr(config, "bos_token_id", None),
        eos_token_id=getattr(config, "eos_token_id", None),
        pad_token_id=getattr(config, "pad_token_id", None),
    )


def _llama_config(config: PretrainedConfig) -> dict:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(config, "rope_theta", 10000.0)}
    return dict(
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters=dict(rope),
        attention_dropout=float(getattr(config, "attention_dropout", 0.0) or 0.0),
        hidden_dropout=0.0,
        sliding_window=getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None,
        **_common(config),
    )


def _gpt2_config(config: PretrainedConfig) -> dict:
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) or not getattr(config, "scale_attn_weights", True):
        from .adapters import UnsupportedModelError

        raise UnsupportedModelError(
            "GPT-2 configs with scale_attn_by_inverse_layer_idx=True or scale_attn_weights=False are not supported "
            "by the pruned decoder (it scales attention by 1/sqrt(head_dim))."
        )
    heads = config.n_head
    return dict(
        hidden_size=config.n_embd,
        num_layers=config.n_layer,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=config.n_embd // heads,
        intermediate_size=config.n_inner or 4 * config.n_embd,
        hidden_act=config.activation_function,
        norm_eps=config.layer_norm_epsilon,
        max_position_embeddings=config.n_positions,
        rope_parameters=None,
        attention_dropout=config.attn_pdrop,
        hidden_dropout=config.resid_pdrop,
        sliding_window=None,
        **_common(config),
    )


LLAMA_LAYOUT = DecoderAdapter(
    model_types=("llama", "mistral", "qwen2"),
    style="llama",
    base_prefix="model",
    layers="layers",
    embed_tokens="embed_tokens",
    final_norm="norm",
    attention_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    q_proj="self_attn.q_proj",
    k_proj="self_attn.k_proj",
    v_proj="self_attn.v_proj",
    o_proj="self_attn.o_proj",
    gate_proj="mlp.gate_proj",
    up_proj="mlp.up_proj",
    down_proj="mlp.down_proj",
    read_config=_llama_config,
)

GPT2 = DecoderAdapter(
    model_types=("gpt2",),
    style="gpt2",
    base_prefix="transformer",
    layers="h",
    embed_tokens="wte",
    embed_positions="wpe",
    final_norm="ln_f",
    attention_norm="ln_1",
    mlp_norm="ln_2",
    qkv_proj="attn.c_attn",
    o_proj="attn.c_proj",
    up_proj="mlp.c_fc",
    down_proj="mlp.c_proj",
    conv1d=True,
    read_config=_gpt2_config,
)

#: parameter names (per layer) of the LLaMA layout, with optional biases
_LLAMA_LAYER_PARAMS = {
    "input_layernorm.weight", "post_attention_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
}
_LLAMA_OPTIONAL = {
    "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.bias",
    "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias",
}
LLAMA_CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "rms_norm_eps")


def llama_layout_problems(model: nn.Module) -> list[str]:
    """Why ``model`` does not have the LLaMA layout (empty list: it has it)."""
    config = getattr(model, "config", None)
    problems = [f"config.{f}" for f in LLAMA_CONFIG_FIELDS if not hasattr(config, f)]
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return problems + ["<base>.layers (a ModuleList of decoder layers)"]
    for name in ("embed_tokens", "norm"):
        if not isinstance(getattr(base, name, None), nn.Module):
            problems.append(f"<base>.{name}")
    names = {n for n, _ in layers[0].named_parameters()}
    missing = sorted(_LLAMA_LAYER_PARAMS - names)
    extra = sorted(names - _LLAMA_LAYER_PARAMS - _LLAMA_OPTIONAL)
    problems += [f"layers[0].{n}" for n in missing]
    problems += [f"no other per-layer weights (found layers[0].{n})" for n in extra]
    return problems
