"""SynFlow, and SynFlow + NASWOT by rank vote, as the re-ranker of alpha's most probable NAS-Bench-201 cells.

The same candidate sets as ``dcanas_nb201_naswot_rerank.py`` (alpha's K most probable cells within each stored
50k search's budget, and 75% for the 50% searches), scored by ``synflow_score`` of the untrained final network
(C=16, N=5, seeded initialisation; no data). The NASWOT scores are read from that script's JSON, so nothing but
SynFlow is computed (one float64 forward and backward per cell). Reported per K, as mean regret over the runs: the
NASWOT pick, the SynFlow pick, the pick with the best summed rank of the two, and the best of the K by the table.
Also Kendall's tau of SynFlow and of the parameter count against the table over the same random cells.

    python benchmarks/dcanas_nb201_synflow_rerank.py      # -> results/dcanas_nb201_synflow_rerank.json
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
    parser.add_argument("--naswot", default=os.path.join(HERE, "results", "dcanas_nb201_naswot_rerank.json"),
                        help="output of dcanas_nb201_naswot_rerank.py (its tags, K and NASWOT scores are reused)")
    parser.add_argument("--sample", type=int, default=60, help="random cells per budget for the rank correlation")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "dcanas_nb201_synflow_rerank.json"))
    args = parser.parse_args()

    import numpy as np
    from scipy.stats import kendalltau, rankdata

    from hf_compress.nas.proxy import synflow_score

    with open(args.naswot, encoding="utf-8") as handle:
        stored = json.load(handle)
    naswot, top_k = stored["naswot_scores"], stored["top_k"]
    scorer = bench.Scorer()
    score, synflow = bench.cell_scorer(synflow_score)
    began = time.perf_counter()

    rows = []
    for d, ratio, best, top, accuracy in bench.rerank_candidate_sets(scorer, args.sweep, stored["tags"], max(top_k)):
        accuracy = np.array(accuracy)
        by_naswot = np.array([naswot[str(g)] for g in top])
        by_synflow = np.array([score(g) for g in top])
        row = {"tag": d["tag"], "seed": d["seed"], "search_ratio": d["ratio"], "ratio": ratio}
        for k in top_k:
            votes = rankdata(by_naswot[:k]) + rankdata(by_synflow[:k])
            row[f"naswot_top{k}_regret"] = best - accuracy[int(np.argmax(by_naswot[:k]))]
            row[f"synflow_top{k}_regret"] = best - accuracy[int(np.argmax(by_synflow[:k]))]
            row[f"vote_top{k}_regret"] = best - accuracy[int(np.argmax(votes))]
            row[f"table_best_of_top{k}_regret"] = best - accuracy[:k].max()
        rows.append(row)
        print(json.dumps(row), flush=True)

    cells = scorer.cells
    correlation = {}
    for ratio in sorted({r["ratio"] for r in rows}):
        sample = bench.random_cells_within(scorer, ratio, args.sample)
        values = [score(cells["entries"][i].genotype) for i in sample]
        correlation[str(ratio)] = {"synflow": float(kendalltau(cells["acc"][sample], values)[0]),
                                   "params": float(kendalltau(cells["acc"][sample], cells["params"][sample])[0])}
        print(f"{ratio:.0%}: Kendall tau vs the table over {len(sample)} random cells: {correlation[str(ratio)]}")

    summary = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key.endswith("_regret")}
    for name, value in summary.items():
        print(f"mean {name}: {value:.2f}")
    out = {"benchmark": "dcanas_nb201_synflow_rerank", "tags": stored["tags"], "metric": bench.METRIC,
           "top_k": top_k, "cells_scored": len(synflow), "seconds": time.perf_counter() - began,
           "kendall_tau_vs_table": correlation, "summary": summary, "runs": rows, "synflow_scores": synflow}
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
