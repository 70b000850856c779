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
from .masking import attach_gates, dense_shape, detach_gates
from .materialize import materialize, select_units


def taylor_importance(
    model: PreTrainedModel, batches: Iterable[dict], max_batches: int = 32, groups=("hidden", "heads", "ffn", "mha", "ffn_layer")
) -> dict[str, np.ndarray]:
    """Per-unit ``sum_batches |dL/dz|`` at ``z = 1`` for every structure group (model in eval mode)."""
    was_training = model.training
    model.eval()
    gates = attach_gates(model, groups=groups, init_mu=1.0, init_log_sigma2=-30.0)
    gates.frozen = True  # deterministic multipliers: mu (= 1) on every unit
    device = next(model.parameters()).device
    scores = {name: torch.zeros_like(gate.mu) for name, gate in gates.groups.items()}
    try:
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            for gate in gates.groups.values():
                gate.mu.grad = None
            loss = model(**batch).loss
            loss.backward()
            for name, gate in gates.groups.items():
                scores[name] += (gate.mu.grad * gate.mu).abs().detach()
    finally:
        detach_gates(model)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: s.cpu().numpy() for name, s in scores.items()}


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
