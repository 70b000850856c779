"""Derive and score the alphas of earlier ``dcanas_nb201_sweep.py`` searches for another parameter budget.

A search whose budget never bound (lambda stayed 0: the expected cost of alpha stayed under the search budget)
trained exactly as an unconstrained one, so its final alpha is also what a search at any larger budget ends
with. This re-runs only the derivation (argmax, ``repair`` when over the budget, ``fill`` when asked) for
``--ratio`` and scores the cell with the NB201 table; it refuses searches that ended with lambda > 0 (a final lambda of
0 is necessary, not sufficient: check that searches at two budgets reached the same alpha). At the same
budget (``--ratio`` = ``--from_ratio``) any search qualifies: this derives its alpha by argmax + repair (+ fill) for
comparison with the derivation it ran with (e.g. ``naswot``). It cannot
stand in for a search at a *smaller* budget, where the constraint would have acted: check that the search
budget of ``--ratio`` (``--lug``) is at least the one the searches ran with.

    python benchmarks/dcanas_nb201_rederive.py --tag full50k_10ep --from_ratio 0.5 --ratio 0.75
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dcanas_nb201 as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True, help="sweep tag whose lines (with alphas) are re-derived")
    parser.add_argument("--from_ratio", type=float, required=True, help="the budget ratio those searches ran at")
    parser.add_argument("--ratio", type=float, required=True, help="the budget ratio to derive for")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: every seed of the tag)")
    parser.add_argument("--no_fill", action="store_true", help="repair only (the paper's derivation)")
    parser.add_argument("--lug", default=os.path.join(HERE, "results", "dcanas_nb201_cpu_fill_lug_params.json"))
    parser.add_argument("--sweep", default=os.path.join(HERE, "results", "dcanas_nb201_sweep.jsonl"))
    parser.add_argument("--output", default=None, help="append the lines here (default: print only)")
    args = parser.parse_args()

    import torch

    from hf_compress.nas.constraint import CostModel, LookUpGraph

    scorer = bench.Scorer()
    costs = CostModel.for_space("nb201", "params")
    budget = args.ratio * scorer.largest
    if args.lug:
        lug = LookUpGraph.load(args.lug)
        old, new = (lug.search_budget_for(r * scorer.largest) for r in (args.from_ratio, args.ratio))
        if new < old:
            raise SystemExit(f"The search budget of ratio {args.ratio} ({new:.6g}) is below the one the searches ran "
                             f"with ({old:.6g}): the constraint could have acted there; run the search instead.")
    lines = [json.loads(line) for line in open(args.sweep, encoding="utf-8")]
    lines = [d for d in lines if d["tag"] == args.tag and d["ratio"] == args.from_ratio and d.get("alphas")]
    if args.seeds:
        wanted = {int(s) for s in args.seeds.split(",")}
        lines = [d for d in lines if d["seed"] in wanted]
    if not lines:
        raise SystemExit(f"No lines with alphas for tag {args.tag!r} at ratio {args.from_ratio} in {args.sweep}.")
    for d in lines:
        if d.get("lambda") and args.ratio != args.from_ratio:
            raise SystemExit(f"Seed {d['seed']} ended with lambda = {d['lambda']}: its budget acted on the search.")
        if d["settings"].get("derivation", "alpha") not in ("alpha", "naswot"):
            # naswot re-ranks after the search and leaves alpha and its argmax as they are; perturbation does not
            raise SystemExit("Only searches whose raw genotype is alpha's argmax (derivation alpha or naswot) can be "
                             "derived again from their alphas.")
        probs = {kind: torch.softmax(torch.tensor(a), -1) for kind, a in d["alphas"].items()}
        fill = not args.no_fill and d["settings"].get("fill_budget", True)
        genotype, repair_moves, fill_moves = costs.derive_within(d["raw_genotype"], probs, budget, repair=True,
                                                                 fill=fill)
        score = scorer.score(str(genotype), budget)
        line = {**{k: d[k] for k in ("tag", "settings", "seed", "train_limit", "epochs", "max_steps", "raw_genotype",
                                     "raw_nb201_acc", "wall_time_s", "alpha_entropy", "lambda")},
                "ratio": args.ratio, "rederived_from_ratio": args.from_ratio, "fill": fill,
                "genotype": str(genotype), "nb201_acc": score["nb201_acc"], "regret": score["regret"],
                "budget_met": score["budget_met"], "repair_moves": repair_moves, "fill_moves": fill_moves}
        print(json.dumps(line), flush=True)
        if args.output:
            with open(args.output, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
