"""Attach VIB gates to any supported model, through its adapter, and detach them again.

Gates become the submodule ``model.vtrans_gates`` (so optimizers, DDP and checkpoints see them) and act
through forward hooks at the points where each structure's activation can be scaled:

- hidden dims: the outputs of every LayerNorm on the residual stream, and the input of the task head's
  label projection;
- attention heads: the per-head context entering the attention output projection;
- FFN neurons: the activations entering the FFN down projection;
- whole sub-layers: the outputs of the attention output projection and of the FFN down projection.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from .adapters import EncoderAdapter, get_adapter
from .budget import EncoderShape
from .decoder_adapters import DecoderAdapter
from .decoder_budget import DecoderShape
from .decoder_masking import install_decoder_hooks
from .gates import VIBGates

GATES_ATTR = "vtrans_gates"
_HANDLES_ATTR = "_vtrans_hook_handles"


def dense_shape(model: PreTrainedModel, adapter: EncoderAdapter | DecoderAdapter | None = None) -> EncoderShape | DecoderShape:
    """The :class:`EncoderShape` (or :class:`DecoderShape`) of an unpruned model, including its task head."""
    adapter = adapter or get_adapter(model)
    if adapter.kind == "decoder":
        return decoder_dense_shape(model, adapter)
    dims = adapter.read_dims(model.config)
    task, head = adapter.task_head(model)
    return EncoderShape(
        vocab_size=dims.vocab_size,
        max_position_embeddings=dims.max_position_embeddings,
        type_vocab_size=dims.type_vocab_size,
        hidden_size=dims.hidden_size,
        head_dim=dims.head_dim,
        num_heads=[dims.num_heads] * dims.num_layers,
        intermediate_sizes=[dims.intermediate_size] * dims.num_layers,
        head_dense=head.dense is not None,
        num_labels=model.config.num_labels if task != "base" else 0,
        per_token_head=head.per_token,
        pooler_size=dims.hidden_size if adapter.pooler_module(model) is not None else 0,
    )


def decoder_dense_shape(model: PreTrainedModel, adapter: DecoderAdapter) -> DecoderShape:
    dims = adapter.dims(model)
    n = dims.num_layers
    positions = adapter.module(model, "embed_positions")
    return DecoderShape(
        vocab_size=dims.vocab_size,
        hidden_size=dims.hidden_size,
        head_dim=dims.head_dim,
        num_heads=[dims.num_heads] * n,
        num_kv_heads=[dims.num_kv_heads] * n,
        intermediate_sizes=[dims.intermediate_size] * n,
        gated_mlp=adapter.gate_proj is not None,
        attention_bias=dims.attention_bias,
        o_proj_bias=dims.o_proj_bias,
        mlp_bias=dims.mlp_bias,
        norm_bias=adapter.style == "gpt2",
        learned_positions=positions.num_embeddings if positions is not None else 0,
        tie_word_embeddings=dims.tie_word_embeddings,
        lm_head=adapter.task(model) != "base",
    )


def _execution_device(model: nn.Module) -> torch.device:
    """Where the gates live: the first real device of a dispatched model (``device_map``), else of its weights."""
    for device in (getattr(model, "hf_device_map", None) or {}).values():
        if device not in ("disk", "meta"):
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for param in model.parameters():
        if param.device.type != "meta":
            return param.device
    return next(model.parameters()).device


def get_gates(model: nn.Module) -> VIBGates | None:
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    return getattr(model, GATES_ATTR, None)


def _scale_output(gates: VIBGates, group: str, layer: int | None):
    def hook(module, args, output):
        z = gates.multiplier(group, layer)
        return output if z is None else output * z.to(device=output.device, dtype=output.dtype)

    return hook


def _scale_input(gates: VIBGates, group: str, layer: int | None, per_head_dim: int | None = None):
    def hook(module, args):
        z = gates.multiplier(group, layer)
        if z is None:
            return None
        x = args[0]
        if per_head_dim is not None:  # [..., heads * head_dim] scaled per head
            x = (x.unflatten(-1, (-1, per_head_dim)) * z.to(device=x.device, dtype=x.dtype)[:, None]).flatten(-2)
        else:
            x = x * z.to(device=x.device, dtype=x.dtype)
        return (x, *args[1:])

    return hook


def attach_gates(
    model: PreTrainedModel,
    groups: tuple[str, ...] = ("hidden", "heads", "kv_groups", "ffn", "mha", "ffn_layer"),
    init_mu: float = 1.0,
    init_log_sigma2: float = -9.0,
    temperature: float = 10.0,
    relative: bool = False,
) -> VIBGates:
    """Add VIB gates (as ``model.vtrans_gates``) and the hooks that apply them; returns the gates."""
    if get_gates(model) is not None:
        raise ValueError("This model already has VTrans gates attached; call detach_gates(model) first.")
    adapter = get_adapter(model)
    if adapter.kind == "decoder":
        dims = adapter.dims(model)
        adapter.task(model)  # refuses heads it cannot prune
        head = None
    else:
        dims = adapter.read_dims(model.config)
        _, head = adapter.task_head(model)
    gates = VIBGates(
        num_layers=dims.num_layers,
        hidden_size=dims.hidden_size,
        num_heads=dims.num_heads,
        intermediate_size=dims.intermediate_size,
        groups=groups,
        init_mu=init_mu,
        init_log_sigma2=init_log_sigma2,
        temperature=temperature,
        relative=relative,
        num_kv_heads=getattr(dims, "num_kv_heads", None),
    )
    gates.to(device=_execution_device(model))
    gates.train(model.training)
    setattr(model, GATES_ATTR, gates)

    handles = [model.register_forward_pre_hook(lambda module, args: gates.refresh())]
    if adapter.kind == "decoder":
        handles += install_decoder_hooks(model, adapter, gates)
        setattr(model, _HANDLES_ATTR, handles)
        return gates
    handles.append(adapter.embedding_module(model, "embeddings_norm").register_forward_hook(_scale_output(gates, "hidden", None)))
    for i in range(dims.num_layers):
        module = lambda name: adapter.layer_module(model, i, name)  # noqa: E731
        handles += [
            module("attention_norm").register_forward_hook(_scale_output(gates, "hidden", None)),
            module("mlp_norm").register_forward_hook(_scale_output(gates, "hidden", None)),
            module("o_proj").register_forward_pre_hook(_scale_input(gates, "heads", i, per_head_dim=dims.head_dim)),
            module("o_proj").register_forward_hook(_scale_output(gates, "mha", i)),
            module("down_proj").register_forward_pre_hook(_scale_input(gates, "ffn", i)),
            module("down_proj").register_forward_hook(_scale_output(gates, "ffn_layer", i)),
        ]
    if head.out_proj is not None and not head.per_token:
        # the pooled features entering the label projection live in the hidden space too
        handles.append(model.get_submodule(head.out_proj).register_forward_pre_hook(_scale_input(gates, "hidden", None)))
    setattr(model, _HANDLES_ATTR, handles)
    return gates


def detach_gates(model: PreTrainedModel) -> VIBGates | None:
    """Remove the hooks and the gates module; returns the gates (e.g. to materialize later)."""
    for handle in getattr(model, _HANDLES_ATTR, []):
        handle.remove()
    if hasattr(model, _HANDLES_ATTR):
        delattr(model, _HANDLES_ATTR)
    gates = get_gates(model)
    if gates is not None:
        delattr(model, GATES_ATTR)
    return gates


