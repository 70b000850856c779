"""Does the trained supernet rank NAS-Bench-201 cells better than its alpha does?

``dcanas_nb201_alpha_ranking.py`` found that the final alpha of a 50k-image search ranks the cells within a budget
no better than chance (Kendall tau -0.25 to 0.00). This runs one search of the same size and settings as the
sweep's ``full50k_10ep`` (``dcanas_fill``, one seed, one thread), keeps the supernet, and scores cells by their
*one-shot* accuracy: the supernet running only that cell (alpha one-hot on it, the trained weights, batch
statistics) on ``--images`` held-out images of the alpha split (``perturbation.oneshot_accuracy``). Scored cells:
a seeded random sample of ``--sample`` cells without ``none`` edges, and alpha's ``--top_k`` most probable cells
within each budget of ``--ratios``. Written per cell and summarised:

* ``tau_oneshot`` / ``tau_alpha``: Kendall tau of the one-shot accuracy / of alpha's joint log-probability against
  the NB201 accuracy, over the random sample (and over the sample within each budget);
* per budget, the regret of: alpha's most probable cell, the one-shot best of alpha's top K, the one-shot best of
  the sampled cells within the budget, and (the bound) the best of alpha's top K by the table.

    OMP_NUM_THREADS=1 python benchmarks/dcanas_nb201_oneshot_ranking.py --seed 0 --tag full50k_10ep   # ~25 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dcanas_nb201 as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="full50k_10ep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_limit", type=int, default=50000)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--search_ratio", type=float, default=0.5, help="budget the search runs with")
    parser.add_argument("--ratios", default="0.25,0.5,0.75", help="budgets the cells are ranked within")
    parser.add_argument("--lug", default=os.path.join(HERE, "results", "dcanas_nb201_cpu_fill_lug_params.json"))
    parser.add_argument("--images", type=int, default=1024, help="held-out images per one-shot score")
    parser.add_argument("--sample", type=int, default=300, help="random cells (no none edge) scored")
    parser.add_argument("--top_k", type=int, default=30, help="alpha's most probable cells scored per budget")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import numpy as np
    import torch
    from scipy.stats import kendalltau

    from hf_compress.nas.perturbation import held_out_batches, oneshot_accuracy
    from hf_compress.nas.search import build_search_trainer, load_cifar10

    torch.set_num_threads(args.threads)
    scorer = bench.Scorer()
    defaults = bench.build_parser().parse_args([])
    defaults.train_limit, defaults.epochs = args.train_limit, args.epochs
    spec = bench.search_spec(defaults, args.seed, "dcanas_fill", budget=args.search_ratio * scorer.largest,
                             lug=args.lug or None)
    data = load_cifar10("train", limit=args.train_limit, seed=0)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dcanas-oneshot-") as tmp:
        trainer = build_search_trainer(data, tmp, **spec["search"])
        trainer.train()
        result = trainer.search_result()
    search_s = time.perf_counter() - started
    supernet = trainer.supernet
    print(f"search {search_s:.0f} s: raw {result.raw_genotype} -> {result.genotype}, alpha entropy "
          f"{result.alpha_entropy:.3f}, lambda {result.lambda_}", flush=True)

    cells = scorer.cells
    entries, cell_params, cell_acc, no_none = cells["entries"], cells["params"], cells["acc"], cells["no_none"]
    joint = scorer.joint_log_probs(result.alphas["normal"])

    rng = np.random.default_rng(1000 + args.seed)
    sample = rng.choice(np.where(no_none)[0], size=min(args.sample, int(no_none.sum())), replace=False).tolist()
    ratios = [float(r) for r in args.ratios.split(",")]
    top = {}
    for ratio in ratios:
        fits = np.where(no_none & (cell_params <= ratio * scorer.largest))[0]
        top[ratio] = fits[np.argsort(-joint[fits], kind="stable")][: args.top_k].tolist()
    to_score = list(dict.fromkeys(sample + [i for ids in top.values() for i in ids]))

    batches = held_out_batches(trainer.val_dataset, args.images, batch_size=256)
    oneshot = {}
    started = time.perf_counter()
    for n, i in enumerate(to_score):
        oneshot[i] = oneshot_accuracy(supernet, entries[i].genotype, batches)
        if (n + 1) % 50 == 0:
            print(f"  scored {n + 1} / {len(to_score)} cells ({time.perf_counter() - started:.0f} s)", flush=True)
    scoring_s = time.perf_counter() - started

    def tau(ids, values):
        return float(kendalltau([values[i] for i in ids], cell_acc[ids])[0]) if len(ids) > 2 else None

    summary = {"tau_oneshot": tau(sample, oneshot), "tau_alpha": tau(sample, joint), "budgets": {}}
    for ratio in ratios:
        budget = ratio * scorer.largest
        best = float(cell_acc[cell_params <= budget].max())
        within = [i for i in sample if cell_params[i] <= budget]
        ids = top[ratio]
        pick_top = max(ids, key=lambda i: (oneshot[i], joint[i]))
        pick_sample = max(within, key=lambda i: (oneshot[i], joint[i])) if within else None
        summary["budgets"][str(ratio)] = {
            "best_in_table": best, "sampled_within": len(within),
            "tau_oneshot_within": tau(within, oneshot), "tau_alpha_within": tau(within, joint),
            "regret_alpha_top1": best - float(cell_acc[ids[0]]),
            f"regret_oneshot_best_of_alpha_top{args.top_k}": best - float(cell_acc[pick_top]),
            "regret_oneshot_best_of_sample": None if pick_sample is None else best - float(cell_acc[pick_sample]),
            f"regret_bound_alpha_top{args.top_k}": best - float(cell_acc[ids].max()),
            "oneshot_pick": entries[pick_top].arch_str,
        }
        print(f"ratio {ratio}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in summary["budgets"][str(ratio)].items()), flush=True)
    print(f"tau over {len(sample)} sampled cells: one-shot {summary['tau_oneshot']:+.3f}, alpha "
          f"{summary['tau_alpha']:+.3f}; scoring {scoring_s:.0f} s for {len(to_score)} cells", flush=True)

    sampled = set(sample)
    out = args.output or os.path.join(HERE, "results", f"dcanas_nb201_oneshot_{args.tag}_seed{args.seed}.json")
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"benchmark": "dcanas_nb201_oneshot_ranking", "args": vars(args), "search_seconds": search_s,
                   "scoring_seconds": scoring_s, "raw_genotype": result.raw_genotype, "genotype": result.genotype,
                   "alpha_entropy": result.alpha_entropy, "lambda": result.lambda_, "alphas": result.alphas,
                   "summary": summary,
                   "cells": [{"arch": entries[i].arch_str, "params": int(cell_params[i]),
                              "nb201_acc": float(cell_acc[i]), "oneshot_acc": oneshot[i],
                              "alpha_log_prob": float(joint[i]), "sampled": i in sampled}
                             for i in to_score]}, handle, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
