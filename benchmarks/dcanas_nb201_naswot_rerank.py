"""Re-rank alpha's most probable NAS-Bench-201 cells by NASWOT (``derivation="naswot"``) on the stored 50k searches.

For every search of ``dcanas_nb201_sweep.jsonl`` that stored its final alpha (alpha derivation), at the budget it ran
with and, for a 50% search, at 75% too (lambda stayed 0 in these searches, so a 75% search trains the same supernet;
as ``dcanas_nb201_rederive.py``): alpha's K most probable cells within the budget (``nb201_top_cells``), each scored
by ``naswot_score`` of its untrained final network (C=16, N=5, seeded initialisation) on 64 CIFAR-10 training
images, and the best-scoring one kept (``naswot_rerank``) - what ``derivation="naswot"`` does at the end of a search,
here on fixed images so that a cell's score is computed once for all runs. Reported per run and K: the regret of
alpha's top cell, of the NASWOT pick, and of the best of the K by the table (a bound for any re-ranker). Also
Kendall's tau between NASWOT and the table over a random sample of cells within each budget.

No search is run: one forward pass and one 64 x 64 kernel per cell scored.

    python benchmarks/dcanas_nb201_naswot_rerank.py --tags full50k_10ep     # -> results/dcanas_nb201_naswot_rerank.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dcanas_nb201 as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default=os.path.join(HERE, "results", "dcanas_nb201_sweep.jsonl"))
    parser.add_argument("--tags", nargs="*", default=["full50k_10ep"])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--top_k", type=int, nargs="+", default=[10, 30, 50, 100, 200],
                        help="candidate-set sizes K to report")
    parser.add_argument("--sample", type=int, default=60, help="random cells per budget for the rank correlation")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "dcanas_nb201_naswot_rerank.json"))
    args = parser.parse_args()
    top_k = sorted(args.top_k)

    import numpy as np
    from scipy.stats import kendalltau

    from hf_compress.nas.proxy import naswot_score
    from hf_compress.nas.search import load_cifar10

    scorer = bench.Scorer()
    cells = scorer.cells
    images = load_cifar10("train", limit=args.images, seed=0).pixel_values
    score, scores = bench.cell_scorer(lambda network: naswot_score(network, images))
    began = time.perf_counter()

    rows = []
    for d, ratio, best, top, accuracy in bench.rerank_candidate_sets(scorer, args.sweep, args.tags, max(top_k)):
        naswot = [score(g) for g in top]
        row = {"tag": d["tag"], "seed": d["seed"], "search_ratio": d["ratio"], "ratio": ratio,
               "best_within_budget": best, "alpha_top_regret": best - accuracy[0]}
        for k in top_k:
            pick = int(np.argmax(naswot[:k]))
            row[f"naswot_top{k}_regret"] = best - accuracy[pick]
            row[f"naswot_top{k}_genotype"] = str(top[pick])
            row[f"table_best_of_top{k}_regret"] = best - max(accuracy[:k])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("genotype")}), flush=True)

    correlation = {}
    for ratio in sorted({r["ratio"] for r in rows}):
        sample = bench.random_cells_within(scorer, ratio, args.sample)
        naswot = [score(cells["entries"][i].genotype) for i in sample]
        correlation[str(ratio)] = float(kendalltau(cells["acc"][sample], naswot)[0])
        print(f"{ratio:.0%}: Kendall tau of NASWOT vs the table over {len(sample)} random cells "
              f"{correlation[str(ratio)]:+.3f}")

    summary = {"alpha_top_regret": float(np.mean([r["alpha_top_regret"] for r in rows]))}
    for k in top_k:
        summary[f"naswot_top{k}_regret"] = float(np.mean([r[f"naswot_top{k}_regret"] for r in rows]))
        summary[f"table_best_of_top{k}_regret"] = float(np.mean([r[f"table_best_of_top{k}_regret"] for r in rows]))
    for name, value in summary.items():
        print(f"mean {name}: {value:.2f}")
    out = {"benchmark": "dcanas_nb201_naswot_rerank", "tags": args.tags, "images": args.images,
           "metric": bench.METRIC, "top_k": top_k, "cells_scored": len(scores), "seconds": time.perf_counter() - began,
           "kendall_tau_naswot_vs_table": correlation, "summary": summary, "runs": rows,
           "naswot_scores": scores}
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
