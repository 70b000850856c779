"""Sweep DCA-NAS search settings at one NAS-Bench-201 budget: each setting x seeds, scored by the NB201 table.

A quick way to test whether a search setting moves the regret before a full ``dcanas_nb201.py`` run. Every
search is a child process of ``dcanas_nb201.py`` with its default data, supernet and search settings for the
``dcanas_fill`` variant (``search_spec``), run ``--parallel`` at a time with one thread each; the look-up graph
of an earlier full run maps the device budget to the search budget. One JSON line per search goes to ``--output``.

    python benchmarks/dcanas_nb201_sweep.py --tag lr3e-2 --settings '{"arch_learning_rate": 0.03}'
    python benchmarks/dcanas_nb201_sweep.py --tag N3 --settings '{"search_cells_per_stage": 3}'
    python benchmarks/dcanas_nb201_sweep.py --tag full50k_10ep --train_limit 50000 --epochs 10   # ~16 min a search
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dcanas_nb201 as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--settings", default="{}", help="JSON of search() keyword overrides")
    parser.add_argument("--ratio", type=float, default=0.5, help="parameter budget / largest cell")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lug", default=os.path.join(HERE, "results", "dcanas_nb201_cpu_fill_lug_params.json"),
                        help="look-up graph mapping the device budget to the search budget ('' : none, the search "
                             "budget is the device budget)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--train_limit", type=int, default=None,
                        help="CIFAR-10 training images (half for weights, half for alpha); default: the full benchmark's")
    parser.add_argument("--epochs", type=float, default=None, help="search epochs over the weight half; default: the full benchmark's")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "dcanas_nb201_sweep.jsonl"))
    args = parser.parse_args()

    scorer = bench.Scorer()
    budget = args.ratio * scorer.largest
    settings = json.loads(args.settings)
    defaults = bench.build_parser().parse_args([])  # the full benchmark's supernet, data and search settings
    if args.train_limit is not None:
        defaults.train_limit = args.train_limit
    if args.epochs is not None:
        defaults.epochs = args.epochs

    def spec(seed: int) -> dict:
        spec = bench.search_spec(defaults, seed, "dcanas_fill", budget=budget, lug=args.lug, **settings)
        return {**spec, "keep_alphas": True}

    specs = {int(s): spec(int(s)) for s in args.seeds.split(",")}
    with futures.ThreadPoolExecutor(args.parallel) as pool:
        jobs = {pool.submit(bench.run_child, seed_spec, 1): seed for seed, seed_spec in specs.items()}
        for job in futures.as_completed(jobs):
            seed, res = jobs[job], job.result()
            score = scorer.score(res["genotype"], budget)
            line = {"tag": args.tag, "settings": settings, "ratio": args.ratio, "seed": seed,
                    "train_limit": defaults.train_limit, "epochs": defaults.epochs,
                    "max_steps": specs[seed]["search"]["max_steps"],
                    "raw_genotype": res["raw_genotype"], "raw_nb201_acc": scorer.score(res["raw_genotype"], None)["nb201_acc"],
                    "genotype": res["genotype"], "nb201_acc": score["nb201_acc"], "regret": score["regret"],
                    "budget_met": score["budget_met"], "wall_time_s": res["wall_time_s"],
                    "alpha_entropy": res.get("alpha_entropy"), "lambda": res.get("lambda"), "parallel": args.parallel,
                    "repair_moves": res.get("repair_moves"), "fill_moves": res.get("fill_moves"),
                    "alphas": res.get("alphas")}
            print(json.dumps(line), flush=True)
            with open(args.output, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
