"""How well does a searched alpha rank the NAS-Bench-201 cells that fit the budget?

For every line of ``dcanas_nb201_sweep.jsonl`` that stored its final alpha, at the budget that search ran with:

* ``kendall_tau``: rank correlation, over every cell within the budget (no ``none`` edge, as derive() picks),
  between the cell's joint log-probability under alpha (sum over edges of log softmax(alpha)) and its NB201
  accuracy. Positive: alpha prefers the better cells.
* ``exact_regret``: regret of the most probable cell within the budget (found by enumerating all 15,625 cells)
  and ``repair_regret``: regret of derive()'s greedy repair (argmax, then cheaper ops until it fits). Equal
  regrets say the greedy repair is not what loses accuracy.
* ``fill_regret``: regret of repair + ``fill_budget`` (the benchmark's ``dcanas_fill``).
* ``top{K}_regret``: the best regret among the K most probable cells within the budget: what a derivation that
  re-ranked alpha's K best candidates could reach at most (it reads the table, so it is a bound, not a method).

No search is run; this reads the stored alphas and the table (a few seconds).

    python benchmarks/dcanas_nb201_alpha_ranking.py            # -> results/dcanas_nb201_alpha_ranking.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dcanas_nb201 as bench  # noqa: E402

TOP_K = (1, 10, 50)


def kendall_tau(x, y) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(x, y)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default=os.path.join(HERE, "results", "dcanas_nb201_sweep.jsonl"))
    parser.add_argument("--tags", nargs="*", default=None,
                        help="only these sweep tags (default: every tag with alphas)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "dcanas_nb201_alpha_ranking.json"))
    args = parser.parse_args()

    import numpy as np
    import torch

    from hf_compress.nas.constraint import CostModel

    scorer = bench.Scorer()
    derive_costs = CostModel.for_space("nb201", "params")  # exclude_none=True, as the searches derive
    cells = scorer.cells

    # the perturbation derivation does not rank by alpha
    lines = bench.sweep_lines_with_alphas(args.sweep, args.tags or None)

    rows = []
    for d in lines:
        budget = d["ratio"] * scorer.largest
        joint = scorer.joint_log_probs(d["alphas"]["normal"])
        fits = cells["no_none"] & (cells["params"] <= budget)
        best = float(cells["acc"][cells["params"] <= budget].max())
        candidates = np.where(fits)[0]
        order = candidates[np.argsort(-joint[candidates], kind="stable")]
        probs = {"normal": torch.softmax(torch.tensor(d["alphas"]["normal"]), dim=-1)}
        repaired, _, _ = derive_costs.derive_within(d["raw_genotype"], probs, budget, repair=True, fill=False)
        filled, _, _ = derive_costs.derive_within(d["raw_genotype"], probs, budget, repair=True, fill=True)
        exact = cells["entries"][order[0]].arch_str
        row = {
            "tag": d["tag"], "seed": d["seed"], "ratio": d["ratio"], "train_limit": d.get("train_limit"),
            "epochs": d.get("epochs"), "alpha_entropy": d.get("alpha_entropy"),
            "cells_within_budget": int(fits.sum()),
            "kendall_tau": kendall_tau(joint[candidates], cells["acc"][candidates]),
            "exact_genotype": exact, "exact_regret": scorer.score(exact, budget)["regret"],
            "repair_genotype": str(repaired), "repair_regret": scorer.score(str(repaired), budget)["regret"],
            "fill_regret": scorer.score(str(filled), budget)["regret"],
        }
        for k in TOP_K:
            row[f"top{k}_regret"] = best - float(cells["acc"][order[:k]].max())
        rows.append(row)
        print(f"{d['tag']:<28} seed {d['seed']} ratio {d['ratio']:.2f}: tau {row['kendall_tau']:+.2f}  regret exact "
              f"{row['exact_regret']:5.2f} repair {row['repair_regret']:5.2f} fill {row['fill_regret']:5.2f}  best of "
              + " / ".join(f"top-{k} {row[f'top{k}_regret']:.2f}" for k in TOP_K), flush=True)

    summary = {}
    for tag in dict.fromkeys(r["tag"] for r in rows):
        group = [r for r in rows if r["tag"] == tag]
        summary[tag] = {"runs": len(group), **{
            f"mean_{name}": float(np.mean([r[name] for r in group]))
            for name in ("kendall_tau", "exact_regret", "repair_regret", "fill_regret",
                         *(f"top{k}_regret" for k in TOP_K))},
            "exact_equals_repair": sum(r["exact_genotype"] == r["repair_genotype"] for r in group)}
        s = summary[tag]
        print(f"{tag}: {s['runs']} runs, mean tau {s['mean_kendall_tau']:+.2f}, mean regret exact "
              f"{s['mean_exact_regret']:.2f} / repair {s['mean_repair_regret']:.2f} / "
              f"fill {s['mean_fill_regret']:.2f} / "
              + " / ".join(f"best of top-{k} {s[f'mean_top{k}_regret']:.2f}" for k in TOP_K)
              + f"; exact == repair in {s['exact_equals_repair']} of {s['runs']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump({"benchmark": "dcanas_nb201_alpha_ranking", "metric": bench.METRIC,
                   "sweep": os.path.relpath(args.sweep, HERE), "rows": rows, "summary": summary}, handle, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
