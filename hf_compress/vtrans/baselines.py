"""Structured first-order Taylor pruning of the same structures VTrans prunes: the baseline VTrans is
measured against.

Each unit's importance is ``|z * dL/dz|`` for a unit multiplier ``z = 1`` (Molchanov et al., 2019),
accumulated over a few batches; units are then removed lowest-importance first (importances normalized
within each structure kind) until the budget is met, exactly like the VIB scores are used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch
from transformers import PreTrainedModel

from .budget import Budget
from .gates import VIBGates
from .masking import attach_gates, dense_shape, detach_gates
from .materialize import materialize, select_units


def taylor_importance(
    model: PreTrainedModel, batches: Iterable[dict], max_batches: int = 32, groups=("hidden", "heads", "ffn", "mha", "ffn_layer")
) -> dict[str, np.ndarray]:
    """Per-unit ``sum_batches |dL/dz|`` at ``z = 1`` for every structure group (model in eval mode)."""
    gates = attach_gates(model, groups=groups, init_mu=1.0, init_log_sigma2=-30.0)
    try:
        scores = gate_taylor_scores(model, gates, batches, max_batches)
    finally:
        detach_gates(model)
    return {name: s.cpu().numpy() for name, s in scores.items()}


def gate_taylor_scores(
    model: PreTrainedModel, gates: VIBGates, batches: Iterable[dict], max_batches: int = 32
) -> dict[str, torch.Tensor]:
    """``sum_batches |mu * dL/dmu|`` through gates already attached to ``model``, with their thresholded
    multipliers (``mu`` on kept units): a first-order Taylor importance of every gated unit at the gates'
    current values. Model mode, the gates' state and every gradient are restored afterwards; gate groups whose
    ``mu`` does not train get no score."""
    was_training, was_frozen = model.training, gates.frozen
    model.eval()
    gates.frozen = True
    device = next(model.parameters()).device
    scored = {name: gate for name, gate in gates.groups.items() if gate.mu.requires_grad}
    scores = {name: torch.zeros_like(gate.mu) for name, gate in scored.items()}
    seen = 0
    try:
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            for gate in scored.values():
                gate.mu.grad = None
            loss = model(**batch).loss
            if loss is None:
                raise ValueError("Taylor importance needs the task loss: the batches carry no labels.")
            loss.backward()
            for name, gate in scored.items():
                scores[name] += (gate.mu.grad * gate.mu).abs().detach()
            seen += 1
    finally:
        gates.frozen = was_frozen
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not seen:
        raise ValueError("Taylor importance got no batches: the dataset is empty.")
    return scores


def taylor_prune(
    model: PreTrainedModel, importance: dict[str, np.ndarray], budget: Budget, round_to: int | None = None
) -> PreTrainedModel:
    """Materialize ``model`` at ``budget`` keeping the most important units (no multipliers to fold)."""
    dense = dense_shape(model)
    normalized = {g: s / max(float(s.mean()), 1e-12) for g, s in importance.items()}
    keep = {g: np.ones_like(s, dtype=bool) for g, s in importance.items()}
    with warnings.catch_warnings():  # starting from the dense model, trimming to the budget is the method
        warnings.simplefilter("ignore")
        plan = select_units(dense, keep, normalized, budget, round_to)
    pruned = materialize(model, budget=budget, plan=plan)
    pruned.config.pruning_report["method"] = "taylor"
    return pruned


@torch.no_grad()
def magnitude_importance(model: PreTrainedModel) -> dict[str, np.ndarray]:
    """Per-unit L2 norm of the weights that belong to each unit (structured magnitude pruning, decoder LMs).

    A hidden dim owns its embedding column and the matching input columns / output rows of every projection;
    a query head its q rows and o columns; a KV group its k and v rows; an FFN neuron its gate / up rows and
    down column. Whole sub-layers score the sum of their units (selection never ranks them below their best
    unit anyway).
    """
    from .adapters import get_adapter

    adapter = get_adapter(model)
    if adapter.kind != "decoder":
        raise ValueError("magnitude_importance scores decoder LMs; use taylor_importance for encoders.")
    dims = adapter.dims(model)
    n, d = dims.num_layers, dims.head_dim
    hidden_sq = adapter.module(model, "embed_tokens").weight.detach().float().pow(2).sum(0)
    heads = np.zeros((n, dims.num_heads))
    kv = np.zeros((n, dims.num_kv_heads))
    ffn = np.zeros((n, dims.intermediate_size))
    for i in range(n):
        w = {name: adapter.projection(model, i, name)[0].float() for name in ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")}
        if adapter.gate_proj is not None:
            w["gate_proj"] = adapter.projection(model, i, "gate_proj")[0].float()
        for name in ("q_proj", "k_proj", "v_proj", "up_proj", "gate_proj"):
            if name in w:
                hidden_sq += w[name].pow(2).sum(0)
        hidden_sq += w["o_proj"].pow(2).sum(1) + w["down_proj"].pow(2).sum(1)
        heads[i] = (w["q_proj"].pow(2).sum(1).view(-1, d).sum(1) + w["o_proj"].pow(2).sum(0).view(-1, d).sum(1)).sqrt().cpu().numpy()
        kv[i] = (w["k_proj"].pow(2).sum(1) + w["v_proj"].pow(2).sum(1)).view(-1, d).sum(1).sqrt().cpu().numpy()
        neuron_sq = w["up_proj"].pow(2).sum(1) + w["down_proj"].pow(2).sum(0)
        if "gate_proj" in w:
            neuron_sq += w["gate_proj"].pow(2).sum(1)
        ffn[i] = neuron_sq.sqrt().cpu().numpy()
    scores = {"hidden": hidden_sq.sqrt().cpu().numpy(), "heads": heads, "ffn": ffn,
              "mha": heads.sum(1), "ffn_layer": ffn.sum(1)}
    if dims.num_kv_heads != dims.num_heads:
        scores["kv_groups"] = kv
    else:  # without GQA a head owns its own k / v rows
        scores["heads"] = np.sqrt(heads**2 + kv**2)
    return scores


def prune_by_scores(
    model: PreTrainedModel, importance: dict[str, np.ndarray], budget: Budget, round_to: int | None = None,
    uniform: bool = False, method: str = "magnitude",
) -> PreTrainedModel:
    """Materialize a decoder LM at ``budget`` keeping its highest-scoring units (scores normalized per kind)."""
    from .adapters import get_adapter
    from .decoder_materialize import materialize_decoder, select_decoder_units

    adapter = get_adapter(model)
    dense = dense_shape(model)
    normalized = {g: s / max(float(np.mean(s)), 1e-12) for g, s in importance.items()}
    keep = {g: np.ones_like(s, dtype=bool) for g, s in importance.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = select_decoder_units(dense, keep, normalized, budget, round_to, uniform=uniform,
                                    heads_divide_hidden=uniform and adapter.style == "llama")
    pruned = materialize_decoder(model, adapter, dense, budget=budget, plan=plan, uniform=uniform)
    pruned.config.pruning_report["method"] = method
    return pruned
