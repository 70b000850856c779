"""Variational Information Bottleneck gates.

A gate holds, per structural unit (a hidden dim, a head, an FFN neuron, a whole sub-layer), a mean ``mu``
and a log-variance ``log_sigma2``. While training, the unit's activation is multiplied by a sample
``z = mu + eps * sigma``; the KL term ``0.5 * log(1 + mu^2 / sigma^2)`` prices the information the unit lets
through. A unit is kept when ``log_alpha = log_sigma2 - log(mu^2) < 0`` and, once kept, is scaled by ``mu``
(which materialization folds into the weights).
"""

from __future__ import annotations

import math

import torch
from torch import nn

_EPS = 1e-8


class VIBGate(nn.Module):
    """One group of VIB gates with shape ``shape`` (e.g. ``(num_layers, num_heads)``).

    ``relative=False`` (the VIBNet parametrization): parameters ``mu`` and ``log_sigma2``, noise
    ``eps * sigma``. ``relative=True``: parameters ``mu`` and ``log_alpha`` (= log sigma^2/mu^2), noise
    ``mu * eps * sqrt(alpha)``; the keep decision then no longer changes when a gate shrinks while the
    weights after it grow to compensate (a scale the trained weights can otherwise exploit).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        init_mu: float = 1.0,
        init_log_sigma2: float = -9.0,
        threshold: float = 0.0,
        temperature: float = 10.0,
        relative: bool = False,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.relative = relative
        self.mu = nn.Parameter(torch.full(self.shape, float(init_mu)))
        if relative:
            init_log_alpha = float(init_log_sigma2) - 2.0 * math.log(abs(init_mu) + _EPS)
            self.log_alpha_param = nn.Parameter(torch.full(self.shape, init_log_alpha))
        else:
            self.log_sigma2 = nn.Parameter(torch.full(self.shape, float(init_log_sigma2)))
        self.threshold = threshold
        self.temperature = temperature

    def log_alpha(self) -> torch.Tensor:
        if self.relative:
            return self.log_alpha_param
        return self.log_sigma2 - torch.log(self.mu.pow(2) + _EPS)

    def kl(self) -> torch.Tensor:
        """Sum over units of ``0.5 * log(1 + mu^2 / sigma^2)`` (= ``0.5 * log(1 + 1 / alpha)``)."""
        if self.relative:
            return 0.5 * torch.log1p(torch.exp(-self.log_alpha_param)).sum()
        return 0.5 * torch.log1p(self.mu.pow(2) / torch.exp(self.log_sigma2)).sum()

    def keep_mask(self) -> torch.Tensor:
        """Hard decision: True where the unit is kept."""
        return self.log_alpha() < self.threshold

    def keep_score(self) -> torch.Tensor:
        """Higher means more worth keeping (``-log_alpha``); used to rank units against a budget."""
        return -self.log_alpha()

    def expected_keep(self) -> torch.Tensor:
        """Differentiable per-unit keep probability ``sigmoid(-k * log_alpha)``."""
        return torch.sigmoid(-self.temperature * (self.log_alpha() - self.threshold))

    def sample(self) -> torch.Tensor:
        """Training-time multiplier ``mu + eps * sigma``."""
        eps = torch.randn_like(self.mu)
        if self.relative:
            return self.mu * (1.0 + eps * torch.exp(0.5 * self.log_alpha_param))
        return self.mu + eps * torch.exp(0.5 * self.log_sigma2)

    def deterministic(self) -> torch.Tensor:
        """Inference-time multiplier: ``mu`` for kept units, 0 otherwise."""
        return self.mu * self.keep_mask().to(self.mu.dtype)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, relative={self.relative}, threshold={self.threshold}, temperature={self.temperature}"


class VIBGates(nn.Module):
    """All gate groups of one model plus the Lagrange multipliers of the budget constraint.

    Living inside the model (as ``model.vtrans_gates``) makes them ordinary parameters for ``Trainer``,
    DDP, checkpoints and ``resume_from_checkpoint``.
    """

    #: group name -> what it gates (for logs and errors)
    GROUPS = {
        "hidden": "shared hidden / embedding dimension",
        "heads": "attention (query) heads (per layer)",
        "kv_groups": "key/value head groups of grouped-query attention (per layer)",
        "ffn": "FFN intermediate neurons (per layer)",
        "mha": "whole attention sub-layers",
        "ffn_layer": "whole FFN sub-layers",
    }

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        groups: tuple[str, ...] = ("hidden", "heads", "ffn", "mha", "ffn_layer"),
        init_mu: float = 1.0,
        init_log_sigma2: float = -9.0,
        temperature: float = 10.0,
        relative: bool = False,
        num_kv_heads: int | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if "kv_groups" in groups and (num_kv_heads == num_heads or num_heads % num_kv_heads):
            groups = tuple(g for g in groups if g != "kv_groups")  # no groups to gate without GQA
        unknown = set(groups) - set(self.GROUPS)
        if unknown:
            raise ValueError(f"Unknown gate groups {sorted(unknown)}; choose from {list(self.GROUPS)}.")
        shapes = {
            "hidden": (hidden_size,),
            "heads": (num_layers, num_heads),
            "kv_groups": (num_layers, num_kv_heads),
            "ffn": (num_layers, intermediate_size),
            "mha": (num_layers,),
            "ffn_layer": (num_layers,),
        }
        self.groups = nn.ModuleDict(
            {
                name: VIBGate(
                    shapes[name], init_mu=init_mu, init_log_sigma2=init_log_sigma2, temperature=temperature,
                    relative=relative,
                )
                for name in self.GROUPS
                if name in groups
            }
        )
        # Lagrange multipliers, trained by gradient *ascent* (their gradient is negated by a hook).
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))
        for lam in (self.lambda_1, self.lambda_2):
            lam.register_hook(lambda grad: -grad)
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.intermediate_size = intermediate_size
        self._current: dict[str, torch.Tensor] = {}
        self.frozen = False  # when True, forward uses the deterministic (thresholded) gates

    # -- multipliers used by the hooks ---------------------------------------------------------------
    def refresh(self) -> None:
        """Draw this forward pass's multipliers (called once per forward by a pre-hook)."""
        if self.training and not self.frozen:
            self._current = {name: gate.sample() for name, gate in self.groups.items()}
        else:
            self._current = self.deterministic()

    def deterministic(self) -> dict[str, torch.Tensor]:
        """Thresholded multipliers, exactly what the materialized model computes.

        A sub-layer whose units are all pruned is switched off as a whole (its output bias would otherwise
        survive), so masked and materialized outputs agree.
        """
        current = {name: gate.deterministic() for name, gate in self.groups.items()}
        if "kv_groups" in current and "heads" in current:  # a query head needs its KV group, and vice versa
            group_size = self.num_heads // self.num_kv_heads
            heads_on = (current["heads"] != 0) & (current["kv_groups"] != 0).repeat_interleave(group_size, dim=-1)
            current["heads"] = current["heads"] * heads_on.to(current["heads"].dtype)
            groups_on = heads_on.unflatten(-1, (self.num_kv_heads, group_size)).any(-1)
            current["kv_groups"] = current["kv_groups"] * groups_on.to(current["kv_groups"].dtype)
        for sublayer, units in (("mha", "heads"), ("ffn_layer", "ffn")):
            if units in current:
                alive = (current[units] != 0).any(-1).to(current[units].dtype)
                current[sublayer] = current[sublayer] * alive if sublayer in current else alive
        return current

    def multiplier(self, group: str, layer: int | None = None) -> torch.Tensor | None:
        if not self._current:
            self.refresh()
        z = self._current.get(group)
        if z is None:
            return None
        return z if layer is None else z[layer]

    # -- terms of the objective ------------------------------------------------------------------------
    def kl(self, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        return {name: gate.kl() * weights.get(name, 1.0) for name, gate in self.groups.items()}

    def expected_keep(self, name: str) -> torch.Tensor | None:
        return self.groups[name].expected_keep() if name in self.groups else None

    def keep_scores(self) -> dict[str, torch.Tensor]:
        return {name: gate.keep_score() for name, gate in self.groups.items()}

    # -- initialisation from an importance score ------------------------------------------------------
    @torch.no_grad()
    def spread_by_importance(self, importance: dict[str, torch.Tensor], spread: float) -> None:
        """Offset each unit's log-alpha by its importance rank within its group, from ``+spread / 2`` (least
        important) to ``-spread / 2`` (most), so the mean start is unchanged.

        Gates that all start at one log-alpha must first learn an order from the loss; a cheap first-order score
        gives them one, so the budget pressure pushes the least important units over the threshold first. Ranks,
        not the scores themselves: Taylor scores are heavy-tailed and their scale differs between groups. On
        MiniLM + SST-2 Faster-VTrans this start was no better than the constant one at 50% and 1.5 points worse at
        90% (it narrows the hidden size), so it is opt-in (``gate_init="taylor"``).
        """
        for name, scores in importance.items():
            if name not in self.groups:
                continue
            gate = self.groups[name]
            scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
            if scores.numel() != gate.mu.numel():
                raise ValueError(f"importance[{name!r}] has {scores.numel()} scores for {gate.mu.numel()} gates.")
            rank = torch.empty_like(scores)
            rank[scores.argsort(stable=True)] = torch.arange(scores.numel(), dtype=torch.float32)
            fraction = rank / max(1, scores.numel() - 1)  # 0: least important
            offset = (spread * (0.5 - fraction)).reshape(gate.shape).to(gate.mu)
            (gate.log_alpha_param if gate.relative else gate.log_sigma2).add_(offset)


#: every gate group name, in VIBGates order (kv_groups: grouped-query attention only)
GATE_GROUPS: tuple[str, ...] = tuple(VIBGates.GROUPS)
