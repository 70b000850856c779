"""The latency fit on simulated devices: learnt op costs (``learn_device``) against the parent-ratio prediction.

A simulated device runs an NB201 network (parameter table as the "latency table") at ``1.1 x skeleton`` plus every
chosen op's table cost times a device factor: either one factor per op type (0.6-1.5, times 0.95-1.05 per edge:
ops that run faster or slower inside a network than alone) or one per (edge, op) (0.7-1.4). Each measurement has
relative Gaussian noise. For 3 alpha seeds x 8 budgets (0.15-0.85 of the largest cell) x 4 devices, the fit runs
with and without ``learn_device``; the returned network is then measured once more, as the benchmark does.
Counts: fits whose own measurement was inside the window, and second measurements within 10% of the budget.

    python benchmarks/dcanas_latency_fit_sim.py
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "dcanas_latency_fit_sim.json"))
    args = parser.parse_args()

    import hf_compress.nas  # noqa: F401
    from hf_compress.nas.constraint import CostModel
    from hf_compress.nas.latency_fit import fit_measured_latency
    from hf_compress.nas.supernet import genotype_from_probs

    model = CostModel.for_space("nb201", "params")

    def device_factor(kind: str, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if kind == "per_edge_op":
            return rng.uniform(0.7, 1.4, size=(6, 5))
        return np.tile(rng.uniform(0.6, 1.5, size=(1, 5)), (6, 1)) * rng.uniform(0.95, 1.05, size=(6, 5))

    rows = []
    for kind in ("per_op", "per_edge_op"):
        for noise in (0.0, 0.03):
            for learn in (False, True):
                fits_inside = within_10pct = total = 0
                for device_seed in range(args.devices):
                    factor = device_factor(kind, device_seed)
                    rng = np.random.default_rng(100 + device_seed)

                    def measure(genotype, factor=factor, rng=rng) -> float:
                        ms = 1.1 * model.skeleton + sum(model.tables[k][e, o] * factor[e, o]
                                                        for k, e, o, _ in model._slots(genotype))
                        return ms * (1.0 + rng.normal(0.0, noise))

                    for alpha_seed in range(3):
                        generator = torch.Generator().manual_seed(alpha_seed)
                        probs = {"normal": torch.softmax(2.0 * torch.randn(6, 5, generator=generator), -1)}
                        raw = genotype_from_probs("nb201", probs, exclude_none=True)
                        for ratio in np.linspace(0.15, 0.85, 8):
                            budget = model.budget_from_ratio(float(ratio))
                            fit = fit_measured_latency(model, raw, probs, budget, measure, max_rounds=args.rounds,
                                                       learn_device=learn)
                            total += 1
                            fits_inside += int(fit.within_tolerance)
                            within_10pct += int(abs(measure(fit.genotype) / budget - 1.0) <= 0.1)
                row = {"device": kind, "noise": noise, "learn_device": learn, "fits": total,
                       "inside_in_fit": fits_inside, "second_measurement_within_10pct": within_10pct}
                rows.append(row)
                print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump({"rounds": args.rounds, "devices": args.devices, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
