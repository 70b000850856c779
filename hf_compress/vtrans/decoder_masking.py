"""Where VIB gates act in a pre-norm decoder LM.

- hidden dims: every contribution to the residual stream (token and position embeddings, the attention
  and FFN outputs), so a pruned dim is exactly zero everywhere in the stream and every norm (RMSNorm with
  the width correction, see materialization) and the LM head see what the materialized model sees;
- query heads (times their KV group's gate under GQA): the per-head context entering ``o_proj``;
- FFN neurons: the activations entering ``down_proj``;
- whole sub-layers: the outputs of ``o_proj`` and ``down_proj``.

The hidden gates' ``mu`` stays at 1: a per-dim scale on the residual stream cannot be folded into tied
embeddings, and the norms would undo it, so hidden dims are only switched on or off.
"""

from __future__ import annotations

from torch import nn

from .decoder_adapters import DecoderAdapter
from .gates import VIBGates


def _output_scaler(gates: VIBGates, groups: tuple[tuple[str, int | None], ...]):
    """Multiply a module's output by the product of the named gates (skipping groups that are not gated)."""

    def hook(module, args, output):
        for group, layer in groups:
            z = gates.multiplier(group, layer)
            if z is not None:
                output = output * z.to(device=output.device, dtype=output.dtype)
        return output

    return hook


def _head_scaler(gates: VIBGates, layer: int, head_dim: int, group_size: int):
    def hook(module, args):
        z = gates.multiplier("heads", layer)
        z_kv = gates.multiplier("kv_groups", layer)
        if z is None and z_kv is None:
            return None
        if z_kv is not None:
            z_kv = z_kv.repeat_interleave(group_size)
            z = z_kv if z is None else z * z_kv
        x = args[0]
        x = (x.unflatten(-1, (-1, head_dim)) * z.to(device=x.device, dtype=x.dtype)[:, None]).flatten(-2)
        return (x, *args[1:])

    return hook


def _input_scaler(gates: VIBGates, group: str, layer: int):
    def hook(module, args):
        z = gates.multiplier(group, layer)
        return None if z is None else (args[0] * z.to(device=args[0].device, dtype=args[0].dtype), *args[1:])

    return hook


def install_decoder_hooks(model: nn.Module, adapter: DecoderAdapter, gates: VIBGates) -> list:
    """Register the gate hooks on a decoder; returns the hook handles."""
    dims = adapter.dims(model)
    if "hidden" in gates.groups:
        gates.groups["hidden"].mu.requires_grad_(False)
    hidden = (("hidden", None),)
    handles = [adapter.module(model, "embed_tokens").register_forward_hook(_output_scaler(gates, hidden))]
    if adapter.embed_positions is not None:
        handles.append(adapter.module(model, "embed_positions").register_forward_hook(_output_scaler(gates, hidden)))
    for i in range(dims.num_layers):
        o_proj = adapter.layer_module(model, i, "o_proj")
        down_proj = adapter.layer_module(model, i, "down_proj")
        handles += [
            o_proj.register_forward_pre_hook(_head_scaler(gates, i, dims.head_dim, dims.heads_per_group)),
            o_proj.register_forward_hook(_output_scaler(gates, (("mha", i), ("hidden", None)))),
            down_proj.register_forward_pre_hook(_input_scaler(gates, "ffn", i)),
            down_proj.register_forward_hook(_output_scaler(gates, (("ffn_layer", i), ("hidden", None)))),
        ]
    return handles
