"""Close the loop between the latency table and the device: measure derived networks, correct the budget.

A per-op table sums op latencies, but a whole network runs faster or slower than the sum (fused kernels,
cache effects, per-call overhead), by a factor that depends on the network. ``repair`` / ``fill`` against
the table alone therefore land a few to twenty per cent away from a latency budget. When the derive step
runs on the target device, it can measure the candidate it is about to return: if the measured latency is
outside ``[(1 - tolerance) * budget, budget]`` (narrowed by a margin for measurement noise), the table budget
is rescaled by that candidate's measured / estimated ratio (aiming at the middle of the window) and the
genotype is derived again from the same alpha. The candidate for a table budget ``t`` is always
``fill(repair(raw, t), t)``, so each round is a deterministic function of ``t`` and only the measurement is new.

The table's ordering of networks can disagree with the device's: two derived cells whose estimates differ by
1% can run 20% apart, so no table budget yields a cell inside the window. When the derivation has nothing new
to offer (its candidate was measured already, or no table budget is left between a too-fast and a too-slow
candidate), the fit tries the cells one or two op changes away (three for NB201 cells) from the cells
measured so far. Each is predicted with the device's own op costs, fitted to every measured network
(:class:`DeviceCorrection`: one scale per op type on the table, a priori 1), and the most probable one under
alpha predicted inside the window is measured next. (``learn_device=False``: predict at the table estimate
times the closest too-fast / too-slow parent's measured / estimated ratio instead.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass
class LatencyFit:
    """The genotype chosen against measured latency and every candidate tried on the way."""

    genotype: object
    measured_ms: float
    estimated_ms: float
    budget_ms: float  # the latency budget the fit aimed at
    within_tolerance: bool  # measured in [(1 - tolerance) x budget, (1 + overshoot) x budget]
    trials: list[dict] = field(default_factory=list)
    tolerance: float = 0.1
    overshoot: float = 0.0

    def to_dict(self) -> dict:
        """Every field, the genotype as its string (what search_results.json stores)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "genotype": str(self.genotype)}


def candidate_for(cost_model, raw, probs: dict[str, torch.Tensor], table_budget: float, fill: bool = True):
    """The genotype derive() returns for ``table_budget``: repaired down to it if over, then filled up to it."""
    return cost_model.derive_within(raw, probs, table_budget, repair=True, fill=fill)[0]


class DeviceCorrection:
    """The device's own op costs, learnt from the whole networks measured so far.

    A table prices each op alone; on the device an op type can run consistently faster or slower inside a whole
    network than it did alone. Model: ``ms = w_0 * skeleton + sum_o w_o * (table cost of the chosen ops of type o)``,
    a maximum a posteriori fit with every ``w`` a priori ``1 +- prior_sd`` and each measurement ``+- noise``
    (relative). With one measurement this is close to the parent-ratio rescale; with a few it separates the op
    types, so it can rank cells whose table estimates are in the wrong order."""

    def __init__(self, cost_model, prior_sd: float = 0.3, noise: float = 0.03) -> None:
        self.cost_model = cost_model
        self.prior_sd, self.noise = prior_sd, noise
        self.rows: list[np.ndarray] = []
        self.targets: list[float] = []
        self._weights: np.ndarray | None = None

    def features(self, genotype) -> np.ndarray:
        x = np.zeros(1 + self.cost_model.space.num_ops)
        x[0] = self.cost_model.skeleton
        for kind, e, o, _ in self.cost_model._slots(genotype):
            x[1 + o] += self.cost_model.tables[kind][e, o]
        return x

    def add(self, genotype, ms: float) -> None:
        self.rows.append(self.features(genotype))
        self.targets.append(float(ms))
        self._weights = None

    @property
    def weights(self) -> np.ndarray:
        if self._weights is None:
            n = 1 + self.cost_model.space.num_ops
            X = np.array(self.rows).reshape(-1, n)
            y = np.array(self.targets)
            scale = np.maximum(np.abs(y), 1e-12) * self.noise
            A = np.vstack([X / scale[:, None], np.eye(n) / self.prior_sd])
            b = np.concatenate([y / scale, np.ones(n) / self.prior_sd])
            self._weights = np.linalg.lstsq(A, b, rcond=None)[0]
        return self._weights

    def predict(self, genotype) -> float:
        return float(self.features(genotype) @ self.weights)


# A cell with at most this many chosen ops also gets three-op edits (NB201: 6 ops, 540 cells at three changes;
# a DARTS genotype has 16, which would be 121k cells, so it stops at two).
THREE_CHANGE_MAX_SLOTS = 8


def _edit_proposal(cost_model, probs, parents, measured, inner_low: float, inner_high: float, aim: float,
                   correction: DeviceCorrection | None = None):
    """The next cell to measure among those one (else two, else three for small cells) op changes away from
    ``parents`` (measured ``(genotype, estimate, ms)``): the most probable one predicted inside
    ``[inner_low, inner_high]``, else the one predicted closest to ``aim``. Predictions come from ``correction``
    (the op costs learnt from every measured network) when given, else from the table estimate times the
    parent's measured / estimated ratio. ``measured``: the genotype strings already measured (skipped)."""
    best = None
    slots = max((len(cost_model._slots(parent)) for parent, _, _ in parents), default=0)
    for max_changes in (1, 2, 3) if slots <= THREE_CHANGE_MAX_SLOTS else (1, 2):
        for parent, parent_estimate, parent_ms in parents:
            ratio = parent_ms / parent_estimate if parent_estimate > 0 else 1.0
            for child, cost, score in cost_model.edits(parent, probs, max_changes):
                if str(child) in measured:
                    continue
                predicted = correction.predict(child) if correction is not None else cost * ratio
                inside = inner_low <= predicted <= inner_high
                rank = (0, -score) if inside else (1, abs(predicted - aim))
                if best is None or rank < best[0]:
                    best = (rank, child, predicted)
        if best is not None and best[0][0] == 0:
            break
    return None if best is None else (best[1], best[2])


def fit_measured_latency(
    cost_model,
    raw,
    probs: dict[str, torch.Tensor],
    budget_ms: float,
    measure: Callable[[object], float],
    tolerance: float = 0.1,
    max_rounds: int = 10,
    fill: bool = True,
    margin: float | None = None,
    explore_edits: bool = True,
    learn_device: bool = True,
    overshoot: float = 0.0,
) -> LatencyFit:
    """Derive, measure, rescale the table budget, repeat, until a candidate's measured latency lies in the
    inner window ``[(1 - tolerance + margin) * budget_ms, (1 - margin) * budget_ms]`` or ``max_rounds``
    candidates were measured. The margin (default ``tolerance / 5``) keeps the answer inside
    ``[(1 - tolerance) * budget_ms, budget_ms]`` when the network is measured again (a repeat measurement
    differs by a few per cent on a quiet machine).

    ``explore_edits``: when the derivation repeats itself, measure cells a few op changes from the closest
    too-fast / too-slow candidates (module docstring); ``learn_device``: predict those cells with the op costs
    learnt from every network measured so far (:class:`DeviceCorrection`) rather than the parent's ratio.
    ``measure(genotype) -> ms`` runs the whole network on the device. Returns the first candidate inside the
    inner window; otherwise the one measured under the budget closest to the window's middle if it is within
    ``tolerance``; otherwise, with ``overshoot > 0``, the fastest one measured over the budget by at most
    ``overshoot - margin`` (a budget treated as a target rather than a ceiling: on a device whose networks jump
    from 0.8 to 1.02 of the budget between neighbouring cells, 1.02 is the closer answer), with a warning;
    otherwise the one under the budget closest to the window, or (every candidate over it) the fastest one,
    with a warning.
    """
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}.")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}.")
    margin = tolerance / 5.0 if margin is None else float(margin)
    if not 0.0 <= margin < tolerance / 2.0:
        raise ValueError(f"margin must be in [0, tolerance / 2), got {margin}.")
    if not 0.0 <= overshoot < 1.0:
        raise ValueError(f"overshoot must be in [0, 1), got {overshoot}.")
    low, aim = (1.0 - tolerance) * budget_ms, (1.0 - tolerance / 2.0) * budget_ms
    inner_low, inner_high = low + margin * budget_ms, (1.0 - margin) * budget_ms
    lo_cost, hi_cost = cost_model.feasible_range()
    measured: dict[str, tuple[object, float, float]] = {}  # str(genotype) -> (genotype, estimate, measured ms)
    correction = DeviceCorrection(cost_model) if learn_device else None
    trials: list[dict] = []
    table_budget = float(budget_ms)
    # table budgets known to give a candidate measured under / over the inner window: later proposals stay
    # strictly between them (bisection), so a rescale that jumps back to a known candidate cannot loop
    below, above = lo_cost, hi_cost
    slow_genotype = fast_genotype = None  # the measured candidates that set `above` / `below`
    bracket_closed = False
    for step in range(4 * max_rounds):
        if len(measured) >= max_rounds:
            break
        # the derivation's own candidate first; when it was measured already, the cells between the closest
        # too-fast and too-slow candidates: the fast one filled up to the table budget, the slow one repaired down
        options = [] if bracket_closed else [candidate_for(cost_model, raw, probs, table_budget, fill)]
        if fast_genotype is not None and not bracket_closed:
            options.append(cost_model.fill(fast_genotype, probs, table_budget)[0])
        if slow_genotype is not None and not bracket_closed:
            options.append(cost_model.repair(slow_genotype, probs, table_budget)[0])
        genotype = next((g for g in options if str(g) not in measured), None)
        source = "derive"
        if genotype is None and explore_edits and measured:
            # the derivation has nothing new: try the cells a few op changes from the closest measured ones
            if correction is not None:
                # with the device's op costs learnt, every measured cell is a starting point
                parents = list(measured.values())
            else:
                fast = [r for r in measured.values() if r[2] < inner_low]
                slow = [r for r in measured.values() if r[2] > inner_high]
                parents = [max(fast, key=lambda r: r[2])] if fast else []
                parents += [min(slow, key=lambda r: r[2])] if slow else []
            proposal = _edit_proposal(cost_model, probs, parents, measured, inner_low, inner_high, aim, correction)
            if proposal is not None:
                genotype, source = proposal[0], "edit"
        if genotype is None:
            if bracket_closed or not options:
                break
            genotype = options[0]
        key = str(genotype)
        estimate = float(cost_model.derived(genotype))
        repeat = key in measured
        if repeat:
            ms = measured[key][2]
            trials.append({"round": step, "table_budget_ms": table_budget, "genotype": key, "repeat": True,
                           "source": source})
        else:
            ms = float(measure(genotype))
            measured[key] = (genotype, estimate, ms)
            if correction is not None:
                correction.add(genotype, ms)
            trials.append({"round": step, "table_budget_ms": table_budget, "genotype": key, "source": source,
                           "estimated_ms": estimate, "measured_ms": ms, "measured_over_budget": ms / budget_ms})
            logger.info("latency fit %d (%s): table budget %.3f ms -> estimated %.3f ms, measured %.3f ms "
                        "(budget %.3f)", step, source, table_budget, estimate, ms, budget_ms)
            if inner_low <= ms <= inner_high:
                return LatencyFit(genotype, ms, estimate, budget_ms, True, trials, tolerance, overshoot)
        if source == "edit" or bracket_closed:
            continue
        if ms < inner_low:
            if table_budget >= below:
                below, fast_genotype = table_budget, genotype
        elif table_budget <= above:
            above, slow_genotype = table_budget, genotype
        if above - below <= 1e-3 * budget_ms:
            bracket_closed = True  # no table budget left between a too-fast and a too-slow candidate
            continue
        proposal = aim * estimate / ms
        if below < proposal < above and not repeat:
            table_budget = proposal
        elif fast_genotype is not None and slow_genotype is not None:
            table_budget = 0.5 * (below + above)
        else:  # one side of the bracket is still the space's bound: step past the repeated candidate instead
            table_budget = min(max(table_budget * (1.03 if ms < inner_low else 0.97), lo_cost), hi_cost)
    rows = [t for t in trials if "measured_ms" in t]
    under = [t for t in rows if t["measured_ms"] <= budget_ms]
    over_ok = [t for t in rows if budget_ms < t["measured_ms"] <= (1.0 + overshoot - margin) * budget_ms]
    best = min(under, key=lambda t: abs(t["measured_ms"] - aim)) if under else None
    if (best is None or best["measured_ms"] < low) and overshoot > 0.0 and over_ok:
        best = min(over_ok, key=lambda t: t["measured_ms"])
        logger.warning("No candidate measured within %.0f%% under the latency budget %.3f ms; returning one "
                       "measured %.1f%% over it (%.3f ms), inside the allowed overshoot of %.0f%%.",
                       100 * tolerance, budget_ms, 100 * (best["measured_ms"] / budget_ms - 1), best["measured_ms"],
                       100 * overshoot)
    elif best is None:
        best = min(rows, key=lambda t: t["measured_ms"])
        logger.warning("No candidate measured under the latency budget %.3f ms (fastest %.3f ms): the budget is "
                       "below what this device runs the space's networks in; returning the fastest.",
                       budget_ms, best["measured_ms"])
    from .spaces import parse_genotype

    within = low <= best["measured_ms"] <= (1.0 + overshoot) * budget_ms
    return LatencyFit(parse_genotype(best["genotype"], cost_model.space), best["measured_ms"], best["estimated_ms"],
                      budget_ms, within, trials, tolerance, overshoot)


def require_this_device(table, source: str = "The latency table") -> None:
    """A fit measures on this machine: refuse a table measured elsewhere (its milliseconds mean another device)."""
    from .latency import device_fingerprint, fingerprint_mismatch

    differ = fingerprint_mismatch(table.fingerprint, device_fingerprint(table.fingerprint.get("threads", 1)))
    if differ:
        raise ValueError(
            f"{source} was measured on another device or software stack (differs in {', '.join(differ)}), but a "
            "latency fit measures candidates on this machine. Fit on the device the table describes, or measure a "
            "table here with `hf-compress nas lut`."
        )


def network_measurer(search_space: str, network: dict, backend: str, repeats: int, threads: int):
    """``measure(genotype) -> ms``: the whole final network (``network``: its config fields) on this machine,
    best of 3 medians of ``repeats`` runs (other load on the machine only ever adds time)."""
    from .constraint import final_network_config
    from .latency import measure_network_latency

    def measure(genotype) -> float:
        config = final_network_config(search_space, genotype=genotype, **network)
        return measure_network_latency(config, backend, repeats=repeats, warmup=20, threads=threads, rounds=3)

    return measure


def fit_search_result(
    result,
    latency_table,
    budget_ms: float | None = None,
    backend: str = "onnxruntime",
    tolerance: float = 0.1,
    max_rounds: int = 10,
    repeats: int = 100,
    fill: bool = True,
    overshoot: float = 0.0,
) -> LatencyFit:
    """Fit a finished search (``SearchResult``, e.g. loaded from ``search_results.json``) to a latency budget
    on *this* device: its saved alpha ranks the moves, ``latency_table`` (a path or ``LatencyTable`` measured
    here) gives the estimates, whole networks are measured with ``backend``. The workflow for searching on one
    machine and deploying on another: copy the results to the device and derive there.
    ``budget_ms`` defaults to the search's own budget when it was a latency one."""
    from .constraint import CostModel, final_network_config
    from .latency import LatencyTable

    table = latency_table if isinstance(latency_table, LatencyTable) else LatencyTable.load(latency_table)
    require_this_device(table)
    if budget_ms is None:
        if result.metric != "latency" or result.device_budget is None:
            raise ValueError(
                f"This search had a {result.metric or 'no'} budget, not a latency one: give the latency budget in ms "
                "(--budget_ms)."
            )
        budget_ms = float(result.device_budget)
    if not result.alphas:
        raise ValueError("The search results hold no alphas (written by an older version?): search again to fit.")
    network = dict(result.final_network)
    config = final_network_config(result.search_space, **network)
    exclude_none = bool(result.supernet.get("exclude_none", True))
    cost_model = CostModel(config, "latency", table, backend, exclude_none=exclude_none)
    lo, hi = cost_model.feasible_range()
    if budget_ms < lo * (1.0 - tolerance):
        raise ValueError(
            f"Latency budget {budget_ms:.3f} ms is below the fastest network of the space by the table "
            f"({lo:.3f} ms); feasible range {lo:.3f} - {hi:.3f} ms."
        )
    probs = {kind: torch.softmax(torch.tensor(values, dtype=torch.float32), dim=-1)
             for kind, values in result.alphas.items()}
    from .spaces import parse_genotype

    raw = parse_genotype(result.raw_genotype, cost_model.space)
    measure = network_measurer(result.search_space, network, backend, repeats, table.fingerprint.get("threads", 1))
    return fit_measured_latency(cost_model, raw, probs, budget_ms, measure, tolerance, max_rounds, fill,
                                overshoot=overshoot)
