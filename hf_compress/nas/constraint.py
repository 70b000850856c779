"""The device constraint of DCA-NAS: expected cost of alpha, the Lagrangian term and the look-up graph.

* ``CostModel``: for the *final* network (the derived net's config: NB201 C=16, N=5; DARTS C=36, 20 cells,
  or as configured) the cost ``b`` of every candidate op on every edge, summed over all cells of a type
  (``tables[kind]``, shape [edges, ops]) plus the fixed skeleton (stem, reduction blocks, preprocessing,
  classifier). Metrics: ``params`` and ``macs`` (closed form, ``cost.py``; "flops" in the NAS papers' sense
  are these MACs) or ``latency`` (ms, from a measured per-op ``LatencyTable``). The derived network's cost
  is ``skeleton + sum of the chosen ops`` - exactly ``cost.network_cost`` for params / MACs - and the
  expected cost of alpha ``k_s(alpha) = skeleton + sum_edges sum_ops softmax(alpha)_o * b(o)`` is on the same
  scale: it equals the derived cost when alpha is one-hot. DARTS keeps 2 edges per node, so there each
  edge is weighted by a soft selection ``2 * s_e / sum_{e' -> node} s_e'`` (``s_e``: the edge's strongest
  non-``none`` probability; both edges when a node has only two) and its ops by their probabilities
  renormalised without ``none`` (never chosen). NB201 too derives the top non-``none`` op per edge (as the
  paper; ``exclude_none=False`` keeps ``none`` in the argmax and in the expected cost).
* ``BudgetConstraint``: ``lambda * (k_s(alpha) / K_s - 1)`` with a trainable multiplier (gradient ascent,
  clamped >= 0) - the paper's ``lambda (k_s - K)`` with lambda expressed per unit of budget.
* ``LookUpGraph``: device budget K_d -> search budget K_s, from short searches run at several search
  budgets (``build_lug``); the monotone (isotonic) curve search budget -> derived cost is inverted by
  linear interpolation.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from .configuration_dcanas import DCANASConfig
from .cost import darts_network_cost, nb201_network_cost, op_cost, op_output_size, conv_output_size
from .jsonio import load_json, save_json
from .spaces import DARTS, NB201, DartsGenotype, NB201Genotype, parse_genotype

METRICS = ("params", "macs", "latency")
_BUDGET_ALIASES = {"params": "params", "parameters": "params", "flops": "macs", "macs": "macs", "latency": "latency",
                   "latency_ms": "latency"}
UNITS = {"params": "parameters", "macs": "MACs (FLOPs as counted in the NAS papers)", "latency": "ms"}


def resolve_metric(budget_type: str) -> str:
    """'params' | 'flops' / 'macs' | 'latency' -> the cost metric name."""
    key = _BUDGET_ALIASES.get(str(budget_type).strip().lower())
    if key is None:
        raise ValueError(f"Unknown budget_type {budget_type!r}; choose params, flops (= MACs) or latency.")
    return key


def final_network_config(search_space: str = NB201, genotype=None, **overrides) -> DCANASConfig:
    """The derived network's config (default: the space's evaluation network, CIFAR-10, 32x32)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return DCANASConfig(search_space=search_space, genotype=genotype, **overrides)


def _all_none(space_name: str):
    if space_name == NB201:
        return NB201Genotype.from_ops(["none"] * 6)
    pairs = tuple(("none", i) for _ in range(4) for i in (0, 1))
    return DartsGenotype(normal=pairs, normal_concat=(2, 3, 4, 5), reduce=pairs, reduce_concat=(2, 3, 4, 5))


def op_slots(config: DCANASConfig) -> dict[str, list[list[tuple[str, int, int, int]]]]:
    """For each cell type, per candidate edge: the ``(C, stride, H, W)`` the op runs at, once per cell of
    that type in the network built from ``config`` (genotype ignored)."""
    space = config.space
    slots = {kind: [[] for _ in space.edges] for kind in space.cell_types}
    H = config.image_size
    if space.name == NB201:
        C = config.init_channels
        for stage in range(space.num_stages):
            if stage > 0:
                H = conv_output_size(H, 3, 2, 1)
            for _ in range(config.cells_per_stage):
                for e in range(space.num_edges):
                    slots["normal"][e].append((C * 2**stage, 1, H, H))
        return slots
    C_curr = config.init_channels
    reductions = set(config.reduction_layers)
    for i in range(config.num_layers):
        reduction = i in reductions
        if reduction:
            C_curr *= 2
        kind = "reduce" if reduction else "normal"
        H_out = op_output_size(H, 2) if reduction else H
        for e, (source, _) in enumerate(space.edges):
            stride = 2 if reduction and source < 2 else 1
            H_in = H if source < 2 else H_out
            slots[kind][e].append((C_curr, stride, H_in, H_in))
        H = H_out
    return slots


class CostModel:
    """Per-edge op costs of the final network (see the module docstring) in one metric."""

    def __init__(self, config: DCANASConfig, metric: str = "params", latency_table=None, backend: str = "onnxruntime",
                 exclude_none: bool = True):
        self.config = config
        # NB201: the derivation never picks `none` (DCA-NAS) -> ops weighted by probabilities renormalised
        # without it; DARTS always
        self.exclude_none = bool(exclude_none) or config.search_space == DARTS
        self.space = config.space
        self.metric = resolve_metric(metric)
        self.backend = backend
        space = self.space
        slots = op_slots(config)
        if self.metric == "latency":
            if latency_table is None:
                raise ValueError(
                    "A latency budget needs a per-op latency table measured on the target device: "
                    "hf-compress nas lut --output latency.json (then pass latency_table=...)."
                )
            latency_table.check_network(config)
            self.skeleton = latency_table.skeleton_ms(backend)
            cost_of = lambda name, C, stride, H, W: latency_table.op_ms(name, C, stride, H, backend)  # noqa: E731
            self.latency_table = latency_table
        else:
            skeleton = self._network_cost(_all_none(space.name))
            self.skeleton = float(skeleton)
            cost_of = lambda name, C, stride, H, W: float(op_cost(space, name, C, C, stride, H, W).get(self.metric))  # noqa: E731
            self.latency_table = None
        self.tables: dict[str, np.ndarray] = {}
        for kind in space.cell_types:
            table = np.zeros((space.num_edges, space.num_ops))
            for e in range(space.num_edges):
                for (C, stride, H, W) in slots[kind][e]:
                    for o, name in enumerate(space.ops):
                        table[e, o] += 0.0 if name == "none" else cost_of(name, C, stride, H, W)
            self.tables[kind] = table
        self._torch_tables = {kind: torch.tensor(t, dtype=torch.float64) for kind, t in self.tables.items()}

    @classmethod
    def for_space(cls, search_space: str = NB201, metric: str = "params", latency_table=None, exclude_none: bool = True,
                  **config_overrides):
        return cls(final_network_config(search_space, **config_overrides), metric, latency_table,
                   exclude_none=exclude_none)

    def _network_cost(self, genotype) -> int:
        c = self.config
        if self.space.name == NB201:
            cost = nb201_network_cost(genotype, init_channels=c.init_channels, cells_per_stage=c.cells_per_stage,
                                      num_classes=c.num_labels, image_size=c.image_size, num_channels=c.num_channels)
        else:
            cost = darts_network_cost(genotype, init_channels=c.init_channels, num_layers=c.num_layers,
                                      num_classes=c.num_labels, image_size=c.image_size, num_channels=c.num_channels,
                                      stem_multiplier=c.stem_multiplier)
        return cost.get(self.metric)

    @property
    def unit(self) -> str:
        return UNITS[self.metric]

    # -- expected (soft) cost ---------------------------------------------------------------------------
    def expected(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """k_s(alpha) from ``{cell_type: softmax(alpha)}`` (differentiable; float64 scalar)."""
        total = torch.tensor(self.skeleton, dtype=torch.float64)
        none = self.space.op_index("none")
        for kind, p in probs.items():
            table = self._torch_tables[kind].to(p.device)
            p = p.to(torch.float64)
            if self.space.name == NB201 and not self.exclude_none:
                total = total + (p * table).sum()
                continue
            live = p.clone()
            live[:, none] = 0.0
            q = live / live.sum(-1, keepdim=True).clamp_min(1e-12)
            edge_cost = (q * table).sum(-1)
            if self.space.name == NB201:
                total = total + edge_cost.sum()
                continue
            strength = live.max(-1).values
            weights = []
            for target in range(2, self.space.num_nodes + 2):
                incoming = self.space.incoming_edges(target)
                s = strength[incoming]
                if len(incoming) <= self.space.inputs_per_node:
                    weights.append(torch.ones_like(s))
                else:
                    weights.append(self.space.inputs_per_node * s / s.sum().clamp_min(1e-12))
            total = total + (torch.cat(weights) * edge_cost).sum()
        return total

    # -- exact cost of a genotype -------------------------------------------------------------------------
    def derived(self, genotype) -> float:
        """Cost of the network built from ``genotype`` (skeleton + chosen ops; == ``cost.network_cost``)."""
        genotype = parse_genotype(genotype, self.space)
        total = self.skeleton
        if self.space.name == NB201:
            for e, op in enumerate(genotype.ops):
                total += self.tables["normal"][e, self.space.op_index(op)]
            return float(total)
        for kind in ("normal", "reduce"):
            edges, _ = genotype.cell(kind == "reduce")
            for k, (op, source) in enumerate(edges):
                target = k // self.space.inputs_per_node + 2
                e = self.space.edges.index((source, target))
                total += self.tables[kind][e, self.space.op_index(op)]
        return float(total)

    def feasible_range(self) -> tuple[float, float]:
        """Cost of the cheapest and of the most expensive architecture of the space (exact: costs add up)."""
        lo = hi = self.skeleton
        none = self.space.op_index("none")
        for kind, table in self.tables.items():
            live = np.delete(table, none, axis=1)
            if self.space.name == NB201:
                lo += (live if self.exclude_none else table).min(-1).sum()
                hi += table.max(-1).sum()
                continue
            for target in range(2, self.space.num_nodes + 2):
                incoming = self.space.incoming_edges(target)
                k = self.space.inputs_per_node
                lo += np.sort(live[incoming].min(-1))[:k].sum()
                hi += np.sort(live[incoming].max(-1))[::-1][:k].sum()
        return float(lo), float(hi)

    def format(self, value: float) -> str:
        if self.metric == "latency":
            return f"{value:.3f} ms"
        if self.metric == "params":
            return f"{value / 1e6:.4f}M params"
        return f"{value / 1e6:.2f}M MACs"

    def check_budget(self, budget: float, what: str = "budget") -> float:
        """Raise a ValueError naming the feasible range when ``budget`` is outside it."""
        lo, hi = self.feasible_range()
        budget = float(budget)
        if not math.isfinite(budget) or budget < lo or budget > hi:
            c = self.config
            size = (f"C={c.init_channels}, N={c.cells_per_stage}" if self.space.name == NB201
                    else f"C={c.init_channels}, {c.num_layers} cells")
            raise ValueError(
                f"The {what} {self.format(budget)} ({self.metric}) is outside the feasible range of the "
                f"{self.space.name} space ({size}, {c.image_size}x{c.image_size}, {c.num_labels} classes): "
                f"[{self.format(lo)}, {self.format(hi)}] = [{lo:.6g}, {hi:.6g}] {self.unit}. "
                "Below the smallest architecture nothing fits; above the largest the constraint is void."
            )
        return budget

    def budget_from_ratio(self, ratio: float) -> float:
        """``ratio`` x the cost of the largest architecture of the space."""
        return float(ratio) * self.feasible_range()[1]

    def repair(self, genotype, probs: dict[str, torch.Tensor], budget: float):
        """Make ``genotype`` fit ``budget``: repeatedly move one edge to a cheaper op, choosing the move that
        loses the least log-probability per unit of cost saved (NB201: any cheaper op; DARTS: a cheaper
        non-``none`` op on a kept edge). Returns ``(genotype, moves)``; ``moves`` is empty when it fit."""
        return self._greedy_moves(genotype, probs, budget, cheaper=True)

    def fill(self, genotype, probs: dict[str, torch.Tensor], budget: float):
        """Use the budget: repeatedly move one edge to a costlier op while the network stays within ``budget``,
        choosing the move that loses the least log-probability per unit of cost added (NB201: any costlier
        non-``none`` op; DARTS: a costlier non-``none`` op on a kept edge). The counterpart of :meth:`repair`
        for budgets that are targets (a latency to hit, not only to stay under). Returns ``(genotype, moves)``."""
        return self._greedy_moves(genotype, probs, budget, cheaper=False)

    def derive_within(self, genotype, probs: dict[str, torch.Tensor], budget: float, repair: bool = True,
                      fill: bool = False):
        """What derive() makes of ``genotype`` for ``budget``: :meth:`repair` when it is over (and ``repair``),
        then :meth:`fill` when it fits (and ``fill``). Returns ``(genotype, repair_moves, fill_moves)``."""
        repair_moves, fill_moves = [], []
        if repair and self.derived(genotype) > budget:
            genotype, repair_moves = self.repair(genotype, probs, budget)
        if fill and self.derived(genotype) <= budget:
            genotype, fill_moves = self.fill(genotype, probs, budget)
        return genotype, repair_moves, fill_moves

    # -- genotypes as slots: one (cell type, edge, op, DARTS position) per chosen op --------------------------
    def _slots(self, genotype) -> list[list]:
        genotype = parse_genotype(genotype, self.space)
        space = self.space
        if space.name == NB201:
            return [["normal", e, space.op_index(op), None] for e, op in enumerate(genotype.ops)]
        slots = []
        for kind in ("normal", "reduce"):
            for k, (op, source) in enumerate(genotype.cell(kind == "reduce")[0]):
                e = space.edges.index((source, k // space.inputs_per_node + 2))
                slots.append([kind, e, space.op_index(op), (k, source)])
        return slots

    def _from_slots(self, slots: list[list]):
        space = self.space
        if space.name == NB201:
            return NB201Genotype.from_ops([space.ops[o] for _, _, o, _ in slots])
        cells = {kind: tuple((space.ops[o], where[1]) for k, _, o, where in slots if k == kind)
                 for kind in ("normal", "reduce")}
        concat = tuple(range(2, space.num_nodes + 2))
        return DartsGenotype(normal=cells["normal"], normal_concat=concat, reduce=cells["reduce"],
                             reduce_concat=concat)

    def _slots_cost(self, slots: list[list]) -> float:
        total = self.skeleton  # summed as derived() sums, so the two agree exactly
        for kind, e, o, _ in slots:
            total += self.tables[kind][e, o]
        return float(total)

    def _op_allowed(self, o: int) -> bool:
        none_allowed = self.space.name == NB201 and not self.exclude_none
        return o != self.space.op_index("none") or none_allowed

    def edits(
        self, genotype, probs: dict[str, torch.Tensor], max_changes: int = 1
    ) -> list[tuple[object, float, float]]:
        """Every genotype that differs from ``genotype`` in 1 to ``max_changes`` chosen ops (same edges / inputs;
        ``none`` only where derive() may pick it), as ``(genotype, cost, log-probability under probs)``.

        The cells between two derived candidates whose costs straddle a target: what a latency fit tries when the
        table's ordering of networks disagrees with the device's."""
        slots = self._slots(genotype)
        logp = {kind: p.clamp_min(1e-12).log().to(torch.float64).numpy() for kind, p in probs.items()}
        out: dict[str, tuple[object, float, float]] = {}

        def visit(current: list[list], start: int, changes: int) -> None:
            for i in range(start, len(current)):
                kind, e, o, where = current[i]
                for o2 in range(self.space.num_ops):
                    if o2 == o or not self._op_allowed(o2):
                        continue
                    changed = [list(slot) for slot in current]
                    changed[i][2] = o2
                    genotype = self._from_slots(changed)
                    key = str(genotype)
                    if key not in out:
                        score = float(sum(logp[k][e2, o3] for k, e2, o3, _ in changed))
                        out[key] = (genotype, self._slots_cost(changed), score)
                    if changes + 1 < max_changes:
                        visit(changed, i + 1, changes + 1)

        visit(slots, 0, 0)
        out.pop(str(self._from_slots(slots)), None)
        return list(out.values())

    def _greedy_moves(self, genotype, probs: dict[str, torch.Tensor], budget: float, cheaper: bool):
        """One edge at a time to a cheaper op (until the cost fits) or a costlier one (while it still fits),
        taking the move that loses the least log-probability per unit of cost changed."""
        space = self.space
        slots = self._slots(genotype)
        logp = {kind: p.clamp_min(1e-12).log().to(torch.float64).numpy() for kind, p in probs.items()}
        moves = []
        while not cheaper or self._slots_cost(slots) > budget:
            current, best = self._slots_cost(slots), None
            for i, (kind, e, o, _) in enumerate(slots):
                for o2 in range(space.num_ops):
                    delta = self.tables[kind][e, o2] - self.tables[kind][e, o]
                    if not self._op_allowed(o2) or (delta >= 0 if cheaper else delta <= 0):
                        continue
                    if not cheaper and current + delta > budget:
                        continue
                    key = (logp[kind][e, o] - logp[kind][e, o2]) / abs(delta)
                    if best is None or key < best[0]:
                        best = (key, i, o2)
            if best is None:
                break
            _, i, o2 = best
            kind, e, o, where = slots[i]
            if where is None:
                moves.append({"cell": kind, "edge": list(space.edges[e]), "from": space.ops[o], "to": space.ops[o2]})
            else:
                moves.append({"cell": kind, "node": where[0] // 2, "input": where[1], "from": space.ops[o],
                              "to": space.ops[o2]})
            slots[i][2] = o2
        return self._from_slots(slots), moves


class BudgetConstraint(nn.Module):
    """``lambda * (k_s(alpha) / K_s - 1)``; ``lambda_`` is trained by gradient *ascent* and clamped >= 0."""

    def __init__(self, cost_model: CostModel, search_budget: float, lambda_init: float = 0.0) -> None:
        super().__init__()
        self.cost_model = cost_model
        self.search_budget = float(search_budget)
        self.lambda_ = nn.Parameter(torch.tensor(float(lambda_init)))

    def violation(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """k_s(alpha) / K_s - 1 (positive while over budget)."""
        return (self.cost_model.expected(probs) / self.search_budget - 1.0).to(torch.float32)

    def forward(self, probs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        violation = self.violation(probs)
        return self.lambda_ * violation, violation

    @torch.no_grad()
    def clamp_(self) -> None:
        self.lambda_.clamp_(min=0.0)


# --------------------------------------------------------------------------------------------------------
# look-up graph
# --------------------------------------------------------------------------------------------------------

LUG_FORMAT = "dcanas-lug/1"


@dataclass
class LookUpGraph:
    """Search budget -> derived cost, measured; inverted to map a device budget to a search budget."""

    search_space: str
    metric: str
    points: list[dict] = field(default_factory=list)  # {"search_budget", "derived_cost", "genotype", ...}
    network: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(search budgets ascending, derived cost made non-decreasing by pooling adjacent violators)."""
        if not self.points:
            raise ValueError("The look-up graph has no points; build it with `hf-compress nas lug`.")
        pts = sorted(self.points, key=lambda p: p["search_budget"])
        x = np.array([p["search_budget"] for p in pts], dtype=float)
        y = _isotonic([p["derived_cost"] for p in pts])
        return x, y

    def search_budget_for(self, device_budget: float) -> float:
        """K_s = LUG(K_d): the search budget whose derived cost (interpolated) equals ``device_budget``.

        Outside the measured derived costs the nearest segment is extrapolated linearly (and a warning
        names the measured range); the result never leaves the measured search budgets by more than
        that segment's slope allows and is kept positive."""
        x, y = self.curve()
        device_budget = float(device_budget)
        if len(x) == 1:
            return float(x[0] * device_budget / max(y[0], 1e-12))
        # collapse flat runs of y (several search budgets giving the same cost): keep their mean x
        ys, xs = [], []
        for value in np.unique(y):
            ys.append(value)
            xs.append(x[y == value].mean())
        ys, xs = np.array(ys), np.array(xs)
        if len(ys) == 1:
            return float(xs[0] * device_budget / max(ys[0], 1e-12))
        if device_budget < ys[0] or device_budget > ys[-1]:
            warnings.warn(
                f"Device budget {device_budget:.6g} is outside the look-up graph's measured derived costs "
                f"[{ys[0]:.6g}, {ys[-1]:.6g}] ({self.metric}); extrapolating linearly.",
                stacklevel=2,
            )
            i = 0 if device_budget < ys[0] else len(ys) - 2
            slope = (xs[i + 1] - xs[i]) / (ys[i + 1] - ys[i])
            return float(max(xs[i] + slope * (device_budget - ys[i]), 1e-12))
        return float(np.interp(device_budget, ys, xs))

    def to_dict(self) -> dict:
        return {"format": LUG_FORMAT, "search_space": self.search_space, "metric": self.metric,
                "network": self.network, "meta": self.meta, "points": self.points}

    def save(self, path: str | os.PathLike) -> str:
        return save_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LookUpGraph:
        data = load_json(path, "Look-up graph", "build one with `hf-compress nas lug`", LUG_FORMAT)
        return cls(data["search_space"], data["metric"], data.get("points", []), data.get("network", {}), data.get("meta", {}))

    def check_compatible(self, search_space: str, metric: str, network: dict | None = None) -> None:
        if self.search_space != search_space or self.metric != metric:
            raise ValueError(
                f"The look-up graph maps {self.search_space} {self.metric} budgets, but this search is "
                f"{search_space} {metric}; build one for it with `hf-compress nas lug`."
            )
        if network and self.network and any(self.network.get(k) != v for k, v in network.items() if k in self.network):
            raise ValueError(f"The look-up graph was built for the network {self.network}, not {network}.")


def _isotonic(values) -> np.ndarray:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    out = []
    for s, n in blocks:
        out += [s / n] * int(n)
    return np.array(out)


def build_lug(
    run_search: Callable[[float], dict],
    search_budgets,
    search_space: str,
    metric: str,
    network: dict | None = None,
    meta: dict | None = None,
    path: str | None = None,
) -> LookUpGraph:
    """Run ``run_search(search_budget)`` (a short search *without* a LUG, returning at least
    ``{"derived_cost": ..., "genotype": ...}``) at each search budget and record the points."""
    points = []
    for budget in search_budgets:
        started = time.perf_counter()
        result = dict(run_search(float(budget)))
        result.setdefault("wall_time_s", time.perf_counter() - started)
        result["search_budget"] = float(budget)
        points.append(result)
    lug = LookUpGraph(search_space, metric, points, network or {}, meta or {})
    if path:
        lug.save(path)
    return lug


__all__ = [
    "BudgetConstraint", "CostModel", "LookUpGraph", "METRICS", "UNITS", "build_lug", "final_network_config",
    "op_slots", "resolve_metric",
]
