"""DCA-NAS on the NAS-Bench-201 space with CIFAR-10, downsized to fit a small CPU.

What is compared (every search in its own subprocess, so its memory is measured alone):

* ``dcanas``: DCA-NAS as in the paper (budget as a ceiling: ``lambda >= 0`` ascending on the expected-cost
  violation, device budget -> search budget through a look-up graph built here from short searches;
  channel bottleneck, weight sharing, derived cells) at parameter budgets of ``--ratios`` x the largest
  architecture (all-3x3 cell), ``--seeds``.
* ``dcanas_target``: the same with the budget as a target (``lambda`` of free sign ascending on the derived
  cell's violation, so an under-budget cell is pushed up too; no look-up graph; the ceiling is still
  enforced when deriving).
* ``dcanas_fill``: ``dcanas``, then the derived cell is moved to costlier ops while it still fits the budget
  (``fill_budget``: least alpha mass lost per unit of cost added), for budgets that are targets.
* ``darts``: first-order DARTS, no constraint, no speed-ups (one search per seed; its cell is scored
  against every budget).
* ``random``: random search within the budget with the same wall time as the DCA-NAS run it is paired with:
  cells sampled uniformly among those within the budget, each trained briefly at search size and
  ranked by held-out accuracy.
* ``ablation``: DCA-NAS with each speed-up switched off in turn (and all three off) at one budget / seed.
* ``latency``: the latency-constrained variant: a per-op onnxruntime latency table of the final network
  measured here, its own look-up graph, searches at latency budgets; the found network's measured
  onnxruntime latency against the budget.

A found cell is scored with the NAS-Bench-201 table (``nb201_mini.csv``: CIFAR-10 test accuracy after
NB201's 12-epoch schedule; best 89.16%): its accuracy, the best accuracy of any cell whose network
(C=16, N=5, 32x32, 10 classes) fits the same budget, the regret, and whether the budget was met.

Search size (defaults): ``--train_limit`` CIFAR-10 training images split 50/50 into weight / alpha halves,
supernet C=``--channels``, N=``--cells`` per stage, 32x32, batch ``--batch_size``, ``--epochs`` over the
weight half. The full network the budgets refer to is the standard NB201 one (C=16, N=5).

    python benchmarks/dcanas_nb201.py --tag cpu               # full run (see benchmarks/README.md)
    python benchmarks/dcanas_nb201.py --smoke --tag smoke     # ~2 minutes
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import subprocess
import sys
import threading
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

METRIC = "cifar10_test_acc_12ep"
# DCA-NAS variants: the paper's (budget as a ceiling, lambda ascends on the expected-cost violation, device
# budget -> search budget through the look-up graph) and a budget-target one (lambda's sign free, ascends
# on the derived cell's violation, no look-up graph; derive() still enforces the ceiling)
VARIANTS = {
    "dcanas": {"budget_mode": "upper", "lambda_signal": "expected", "lug": True},
    "dcanas_target": {"budget_mode": "target", "lambda_signal": "derived", "lug": False},
    # the paper's form, then the derived cell is moved to costlier ops while it fits (fill_budget)
    "dcanas_fill": {"budget_mode": "upper", "lambda_signal": "expected", "lug": True, "fill": True},
    # dcanas_fill with each edge's op chosen by the held-out accuracy lost without it (derivation=perturbation)
    "dcanas_fill_pt": {"budget_mode": "upper", "lambda_signal": "expected", "lug": True, "fill": True,
                       "derivation": "perturbation"},
    # the paper's form; of alpha's 30 most probable cells within the budget, the one scoring highest by NASWOT
    # (an untrained final network on 64 alpha-split images; derivation=naswot, hf_compress.nas.proxy)
    "dcanas_naswot": {"budget_mode": "upper", "lambda_signal": "expected", "lug": True, "derivation": "naswot"},
}
RESULT_PREFIX = "RESULT_JSON: "


# --------------------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------------------


class RSSSampler:
    """Peak resident memory while the block runs (sampled every ``interval`` s), and the RSS before it."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.before = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RSSSampler:
        import gc

        gc.collect()
        self.before = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    def report(self) -> dict:
        return {"rss_before_mb": self.before / 2**20, "peak_rss_mb": self.peak / 2**20,
                "search_rss_increase_mb": (self.peak - self.before) / 2**20}


# --------------------------------------------------------------------------------------------------------
# child processes: one search each
# --------------------------------------------------------------------------------------------------------


def _load_data(spec: dict):
    from hf_compress.nas.search import load_cifar10, load_digits_dataset

    if spec.get("dataset") == "digits":
        return load_digits_dataset(image_size=32, limit=spec["train_limit"], seed=spec.get("data_seed", 0))
    return load_cifar10("train", limit=spec["train_limit"], seed=spec.get("data_seed", 0))


def child_search(spec: dict) -> dict:
    import torch

    from hf_compress.nas.search import search

    torch.set_num_threads(spec.get("threads", 1))
    data = _load_data(spec)
    kwargs = dict(spec["search"])
    with RSSSampler() as memory:
        result = search(data, **kwargs)
    out = result.to_dict()
    if not spec.get("keep_alphas"):
        out.pop("alphas", None)
    out.update(memory.report())
    if spec.get("measure_latency"):
        from hf_compress.nas.latency import measure_network_latency

        out["measured_latency_ms"] = measure_network_latency(
            result.config, "onnxruntime", repeats=spec.get("latency_repeats", 100), warmup=20,
            threads=spec.get("threads", 1), rounds=spec.get("latency_rounds", 1),
        )
    return out


def child_random(spec: dict) -> dict:
    """Random search within the budget for ``wall_time_s``: sample, train briefly, rank by held-out accuracy."""
    import torch
    import torch.nn.functional as F

    from hf_compress.nas.configuration_dcanas import DCANASConfig
    from hf_compress.nas.constraint import CostModel
    from hf_compress.nas.modeling_dcanas import DCANASForImageClassification
    from hf_compress.nas.spaces import NB201_SPACE, NB201Genotype
    from trainers.dcanas_trainer import split_dataset

    torch.set_num_threads(spec.get("threads", 1))
    data = _load_data(spec)
    train, val = split_dataset(data, 0.5, spec["seed"])
    r = spec["random"]
    cost_model = CostModel.for_space("nb201", r.get("metric", "params"), exclude_none=False)
    budget = r["budget"]
    rng = random.Random(spec["seed"])
    torch.manual_seed(spec["seed"])
    n_eval = min(len(val), r.get("eval_images", 1000))
    val_x, val_y = val.pixel_values[:n_eval], val.labels[:n_eval]
    tried, best = [], None
    with RSSSampler() as memory:
        started = time.perf_counter()
        while not tried or time.perf_counter() - started < r["wall_time_s"]:
            while True:
                genotype = NB201Genotype.from_ops([rng.choice(NB201_SPACE.ops) for _ in NB201_SPACE.edges])
                if cost_model.derived(genotype) <= budget:
                    break
            config = DCANASConfig(search_space="nb201", genotype=genotype, init_channels=r["channels"],
                                  cells_per_stage=r["cells"], image_size=32, num_classes=10)
            model = DCANASForImageClassification(config)
            optimizer = torch.optim.SGD(model.parameters(), lr=r.get("learning_rate", 0.05), momentum=0.9,
                                        weight_decay=3e-4)
            model.train()
            g = torch.Generator().manual_seed(spec["seed"] + len(tried))
            for _ in range(r["steps_per_arch"]):
                idx = torch.randint(0, len(train), (r["batch_size"],), generator=g)
                loss = F.cross_entropy(model(pixel_values=train.pixel_values[idx]).logits, train.labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                correct = sum(int((model(pixel_values=val_x[i:i + 250]).logits.argmax(-1) == val_y[i:i + 250]).sum())
                              for i in range(0, n_eval, 250))
            acc = correct / n_eval
            tried.append({"genotype": str(genotype), "proxy_val_acc": acc})
            if best is None or acc > best["proxy_val_acc"]:
                best = tried[-1]
        wall = time.perf_counter() - started
    return {"genotype": best["genotype"], "proxy_val_acc": best["proxy_val_acc"], "evaluated": len(tried),
            "wall_time_s": wall, "tried": tried, "derived_cost": cost_model.derived(best["genotype"]),
            **memory.report()}


def child_lut(spec: dict) -> dict:
    from hf_compress.nas.constraint import final_network_config
    from hf_compress.nas.latency import (
        calibrate_latency_table,
        latency_estimate_error,
        mean_abs_error,
        measure_latency_table,
    )
    from hf_compress.nas.cli import _random_genotypes

    config = final_network_config("nb201")
    table = measure_latency_table(config, backends=("onnxruntime", "torch"), repeats=spec.get("repeats", 100),
                                  warmup=20, threads=spec.get("threads", 1))
    check = _random_genotypes("nb201", spec.get("check", 6), 1, False)
    rows = latency_estimate_error(table, check, config, "onnxruntime", spec.get("repeats", 100), 20, rounds=3)
    fit = None
    if spec.get("calibrate"):
        raw_rows = rows
        fit = calibrate_latency_table(table, config, _random_genotypes("nb201", spec["calibrate"], 100),
                                      "onnxruntime", spec.get("repeats", 100), 20)
        rows = latency_estimate_error(table, check, config, "onnxruntime", spec.get("repeats", 100), 20, rounds=3)
        table.meta["check_uncalibrated"] = {"rows": raw_rows, "mean_abs_relative_error": mean_abs_error(raw_rows)}
    table.meta["check"] = {"backend": "onnxruntime", "rows": rows, "mean_abs_relative_error": mean_abs_error(rows)}
    table.save(spec["path"])
    return {"path": spec["path"], "seconds": table.meta["seconds"], "skeleton_ms": table.skeleton,
            "estimate_check": table.meta["check"], "estimate_check_uncalibrated": table.meta.get("check_uncalibrated"),
            "calibration": None if fit is None else {k: v for k, v in fit.items() if k != "rows"}}


CHILDREN = {"search": child_search, "random": child_random, "lut": child_lut}


def run_child(spec: dict, threads: int, log=None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore",
               HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    spec = {**spec, "threads": threads}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"child {spec.get('kind')} failed (rc {proc.returncode}):\n{tail}")
    out = json.loads(lines[-1][len(RESULT_PREFIX):])
    out["process_seconds"] = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------------------------------------
# scoring and the parent
# --------------------------------------------------------------------------------------------------------


class Scorer:
    def __init__(self) -> None:
        from hf_compress.nas.constraint import CostModel
        from hf_compress.nas.nb201_table import load_nb201_table

        self.table = load_nb201_table()
        self.params = CostModel.for_space("nb201", "params", exclude_none=False)
        self.largest = self.params.feasible_range()[1]
        self._best = {}

    def best_within(self, budget: float) -> tuple[str, float]:
        key = round(budget)
        if key not in self._best:
            entry, acc = self.table.best_within_budget(budget, "params", METRIC)
            self._best[key] = (entry.arch_str, acc)
        return self._best[key]

    @functools.cached_property
    def cells(self) -> dict:
        """Every table cell as arrays (one row per cell): ``ops`` [cells, 6 edges] op indices, ``params``,
        ``acc`` (``METRIC``), ``no_none`` (no ``none`` edge: what derive() may pick), and ``entries``."""
        import numpy as np

        from hf_compress.nas.spaces import NB201_OPS

        index = {op: i for i, op in enumerate(NB201_OPS)}
        entries = self.table.entries
        ops = np.array([[index[op] for op in e.genotype.ops] for e in entries])
        return {"entries": entries, "ops": ops,
                "params": np.array([self.table.cost(e.genotype).params for e in entries]),
                "acc": np.array([e.accuracies[METRIC] for e in entries]),
                "no_none": (ops != index["none"]).all(axis=1)}

    def joint_log_probs(self, alpha):
        """Each cell's log-probability under ``alpha`` (the NB201 [6, 5] logits): the sum over edges of
        log softmax(alpha) at the cell's op, in the order of ``cells``."""
        import numpy as np
        import torch

        log_probs = torch.log_softmax(torch.as_tensor(alpha, dtype=torch.float64), dim=-1).numpy()
        return log_probs[np.arange(log_probs.shape[0])[None, :], self.cells["ops"]].sum(axis=1)

    def score(self, genotype: str, budget: float | None) -> dict:
        acc = self.table.lookup(genotype)[METRIC]
        params = self.params.derived(genotype)
        out = {"genotype": genotype, "nb201_acc": acc, "params": params}
        if budget is not None:
            best_arch, best_acc = self.best_within(budget)
            out.update(budget=budget, budget_met=params <= budget, best_within_budget=best_acc,
                       best_arch_within_budget=best_arch, regret=best_acc - acc)
        return out


def cell_scorer(score_network):
    """``(score, scores)``: ``score(genotype)`` applies ``score_network`` to the cell's final network (default sizes,
    seeded initialisation) once per cell, and ``scores`` maps each scored genotype string to its score."""
    import torch

    from hf_compress.nas.configuration_dcanas import DCANASConfig
    from hf_compress.nas.modeling_dcanas import DCANASForImageClassification

    scores: dict[str, float] = {}

    def score(genotype) -> float:
        name = str(genotype)
        if name not in scores:
            torch.manual_seed(0)
            scores[name] = score_network(DCANASForImageClassification(DCANASConfig(genotype=name)))
        return scores[name]

    return score, scores


def rerank_candidate_sets(scorer: "Scorer", sweep: str, tags, k: int):
    """Alpha's ``k`` most probable cells within the budget of each stored search of ``sweep`` (``tags``), and within
    75% for a 50% search (lambda stayed 0, so it trained the same supernet): yields ``(line, ratio, best accuracy
    within the budget, cells, their table accuracies)``, the candidate sets the re-rank benchmarks share."""
    import torch

    from hf_compress.nas.constraint import CostModel
    from hf_compress.nas.proxy import nb201_top_cells

    cost_model = CostModel.for_space("nb201", "params")
    for d in sweep_lines_with_alphas(sweep, tags):
        probs = {"normal": torch.softmax(torch.tensor(d["alphas"]["normal"], dtype=torch.float64), dim=-1)}
        for ratio in [d["ratio"]] + ([0.75] if d["ratio"] == 0.5 else []):
            budget = ratio * scorer.largest
            top = nb201_top_cells(cost_model, probs, budget, k=k)
            yield d, ratio, scorer.best_within(budget)[1], top, [scorer.table.lookup(str(g))[METRIC] for g in top]


def random_cells_within(scorer: "Scorer", ratio: float, size: int):
    """Indices into ``scorer.cells`` of ``size`` seeded random cells without ``none`` within ``ratio`` of the
    largest cell's parameters (for rank correlations against the table)."""
    import numpy as np

    cells = scorer.cells
    fits = np.where(cells["no_none"] & (cells["params"] <= ratio * scorer.largest))[0]
    return np.random.default_rng(0).choice(fits, size=min(size, len(fits)), replace=False)


def sweep_lines_with_alphas(path: str, tags=None, derivations=("alpha",)) -> list[dict]:
    """The first line per (tag, seed, ratio) of a ``dcanas_nb201_sweep.py`` JSONL that stored its final alpha, from the
    given tags (``None``: all) and derivations (whose raw cell is alpha's argmax); exits when there is none."""
    lines, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            d = json.loads(raw)
            key = (d["tag"], d["seed"], d["ratio"])
            if (d.get("alphas") and key not in seen and (tags is None or d["tag"] in tags)
                    and d["settings"].get("derivation", "alpha") in derivations):
                seen.add(key)
                lines.append(d)
    if not lines:
        raise SystemExit(f"No sweep lines with alphas (tags {tags}) in {path}.")
    return lines


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(results: dict) -> dict:
    runs = results["runs"]
    summary = {}
    for method in (*VARIANTS, "darts", "random"):
        rows = [r for r in runs if r["method"] == method and "regret" in r]
        if not rows:
            continue
        summary[method] = {
            "runs": len(rows),
            "budget_met_rate": _mean([float(r["budget_met"]) for r in rows]),
            "mean_regret": _mean([r["regret"] for r in rows]),
            "mean_nb201_acc": _mean([r["nb201_acc"] for r in rows]),
            "mean_search_s": _mean([r["wall_time_s"] for r in rows]),
            "mean_peak_rss_mb": _mean([r.get("peak_rss_mb") for r in rows]),
            "mean_search_rss_increase_mb": _mean([r.get("search_rss_increase_mb") for r in rows]),
            "by_ratio": {
                str(ratio): {
                    "budget_met_rate": _mean([float(r["budget_met"]) for r in rows if r["ratio"] == ratio]),
                    "mean_regret": _mean([r["regret"] for r in rows if r["ratio"] == ratio]),
                    "mean_nb201_acc": _mean([r["nb201_acc"] for r in rows if r["ratio"] == ratio]),
                }
                for ratio in sorted({r["ratio"] for r in rows})
            },
        }
        if method in VARIANTS:
            summary[method]["raw_budget_met_rate"] = _mean([float(r["raw_budget_met"]) for r in rows])
            summary[method]["repaired_runs"] = sum(bool(r.get("repaired")) for r in rows)
    darts_runs = {r["seed"]: r for r in runs if r["method"] == "darts_search"}
    first = next((r["method"] for r in runs if r["method"] in VARIANTS), None)
    dca = [r for r in runs if r["method"] == first]
    if darts_runs and dca:
        summary["speedup_vs_darts"] = _mean([r["wall_time_s"] for r in darts_runs.values()]) / _mean(
            [r["wall_time_s"] for r in dca])
        summary["memory_ratio_vs_darts"] = _mean([r["search_rss_increase_mb"] for r in darts_runs.values()]) / max(
            1e-9, _mean([r["search_rss_increase_mb"] for r in dca]))
    ablation = [r for r in runs if r["method"] == "ablation"]
    if ablation:
        summary["ablation"] = {r["variant"]: {k: r.get(k) for k in ("wall_time_s", "s_per_step", "peak_rss_mb",
                                                                    "search_rss_increase_mb", "nb201_acc", "regret",
                                                                    "budget_met")} for r in ablation}
    latency = [r for r in runs if r["method"] == "latency"]
    if latency:
        summary["latency"] = {
            "runs": len(latency),
            # the target: measured latency within 10% of the budget (|measured / budget - 1| <= 0.1)
            "within_10pct_rate": _mean([float(abs(r["measured_latency_ms"] / r["latency_budget_ms"] - 1) <= 0.1)
                                        for r in latency]),
            "at_most_10pct_over_rate": _mean([float(r["measured_latency_ms"] <= 1.1 * r["latency_budget_ms"])
                                              for r in latency]),
            "measured_over_budget": [r["measured_latency_ms"] / r["latency_budget_ms"] for r in latency],
            "estimated_over_budget": [r["derived_cost"] / r["latency_budget_ms"] for r in latency],
        }
    return summary


def search_steps(args: argparse.Namespace) -> int:
    """Search steps: ``--epochs`` over the weight half of ``--train_limit`` images at ``--batch_size``."""
    return max(2, int(args.epochs * (args.train_limit // 2) / args.batch_size))


def search_spec(args: argparse.Namespace, seed: int, variant: str, **overrides) -> dict:
    """The child spec of one search: this benchmark's supernet and search settings for ``variant``, then ``overrides``
    (any ``search()`` keyword)."""
    settings = VARIANTS[variant]
    steps = search_steps(args)
    kw = dict(search_space="nb201", max_steps=steps, batch_size=args.batch_size, seed=seed,
              search_init_channels=args.channels, search_cells_per_stage=args.cells,
              arch_learning_rate=args.arch_lr, arch_warmup_ratio=args.arch_warmup,
              lambda_learning_rate=args.lambda_lr, lambda_signal=settings["lambda_signal"],
              budget_mode=settings["budget_mode"], fill_budget=settings.get("fill", False),
              derivation=settings.get("derivation", "alpha"), perturbation_images=args.perturbation_images,
              channel_bottleneck=args.bottleneck, weight_sharing=True,
              derived_cells=True, logging_steps=max(1, steps // 8))
    kw.update(overrides)
    return {"kind": "search", "train_limit": args.train_limit, "dataset": args.dataset, "search": kw}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--parts", default="lug,darts,dcanas,random,ablation,latency")
    parser.add_argument("--ratios", default="0.25,0.5,0.75")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train_limit", type=int, default=10000)
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "digits"])
    parser.add_argument("--epochs", type=float, default=3.0, help="search epochs over the weight half")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--cells", type=int, default=1)
    parser.add_argument("--bottleneck", type=int, default=2)
    parser.add_argument("--arch_lr", type=float, default=3e-3)
    parser.add_argument("--arch_warmup", type=float, default=0.5)
    parser.add_argument("--lambda_lr", type=float, default=0.5)
    parser.add_argument("--variants", default="dcanas,dcanas_target",
                        help=f"DCA-NAS variants to run, from {sorted(VARIANTS)} (the first is paired with random "
                             "search and used for the ablation and the latency runs)")
    parser.add_argument("--lug_ratios", default="0.1,0.2,0.3,0.45,0.6,0.8")
    parser.add_argument("--latency_ratios", default="0.3,0.5,0.7")
    parser.add_argument("--random_steps_per_arch", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibrate", type=int, default=0,
                        help="latency: fit measured ~ a * estimate + b on N whole networks first (0: raw table)")
    parser.add_argument("--perturbation_images", type=int, default=1024,
                        help="dcanas_fill_pt: held-out images scored per op")
    parser.add_argument("--latency_fit", action="store_true",
                        help="latency: derive with latency_fit (measure candidates here, rescale the table budget)")
    parser.add_argument("--latency_overshoot", type=float, default=0.0,
                        help="latency_fit: how far over the budget (fraction) the fit may land when nothing lands "
                             "within 10%% under it (0: the budget is a ceiling)")
    parser.add_argument("--smoke", action="store_true", help="tiny run: a few steps, one seed, one ratio")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        warnings.filterwarnings("ignore")
        out = CHILDREN[spec["kind"]](spec)
        print(RESULT_PREFIX + json.dumps(out, default=str), flush=True)
        return
    if args.smoke:
        args.train_limit, args.epochs, args.seeds, args.ratios = 640, 0.4, "0", "0.5"
        args.lug_ratios, args.latency_ratios, args.random_steps_per_arch = "0.2,0.5", "0.5", 5

    from hf_compress.nas.constraint import CostModel, LookUpGraph

    parts = set(args.parts.split(","))
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown or not variants:
        raise SystemExit(f"Unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}.")
    uses_lug = any(VARIANTS[v]["lug"] for v in variants)
    ratios = [float(r) for r in args.ratios.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    steps = search_steps(args)
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(out_dir, f"dcanas_nb201_{args.tag}.json")
    work = os.path.join(ROOT, "outputs", f"dcanas_nb201_{args.tag}")
    os.makedirs(work, exist_ok=True)
    scorer = Scorer()
    largest = scorer.largest
    from hf_compress.nas.latency import device_fingerprint

    results = {
        "benchmark": "DCA-NAS, NAS-Bench-201 space, CIFAR-10 (downsized)",
        "setup": {
            "dataset": args.dataset, "train_images": args.train_limit, "split": "50% weights / 50% alpha",
            "image_size": 32, "search_supernet": {"C": args.channels, "N": args.cells}, "batch_size": args.batch_size,
            "epochs": args.epochs, "steps": steps, "final_network": {"C": 16, "N": 5, "image_size": 32},
            "largest_params": largest, "budgets": "ratio x params of the all-3x3 network", "ratios": ratios,
            "seeds": seeds, "dcanas": {"channel_bottleneck": args.bottleneck, "weight_sharing": True,
                                       "derived_cells": True, "arch_learning_rate": args.arch_lr,
                                       "arch_warmup_ratio": args.arch_warmup, "lambda_learning_rate": args.lambda_lr,
                                       "variants": {v: VARIANTS[v] for v in variants}},
            "darts": {"channel_bottleneck": 1, "weight_sharing": False, "derived_cells": False, "constrained": False,
                      "arch_learning_rate": args.arch_lr, "arch_warmup_ratio": args.arch_warmup},
            "random": {"steps_per_arch": args.random_steps_per_arch, "ranked_by": "held-out accuracy (1000 images)",
                       "wall_time": "same as the paired DCA-NAS search"},
            "nb201_metric": METRIC, "threads": args.threads, "device": device_fingerprint(args.threads),
            "latency_fit": {"enabled": args.latency_fit, "overshoot": args.latency_overshoot},
            "smoke": args.smoke,
        },
        "runs": [],
    }

    def save() -> None:
        results["summary"] = summarize(results)
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)

    def base_search(seed: int, variant: str | None = None, **overrides) -> dict:
        return search_spec(args, seed, variant or variants[0], **overrides)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- look-up graph (params) -------------------------------------------------------------------------
    lug_path = os.path.join(out_dir, f"dcanas_nb201_{args.tag}_lug_params.json")
    if "lug" in parts and uses_lug:
        lug_variant = next(v for v in variants if VARIANTS[v]["lug"])
        points = []
        for ratio in [float(r) for r in args.lug_ratios.split(",")]:
            budget = ratio * largest
            # the graph reads the raw argmax cost only, so the NASWOT re-ranking would be wasted there
            alpha_only = {"derivation": "alpha"} if VARIANTS[lug_variant].get("derivation") == "naswot" else {}
            res = run_child(base_search(seeds[0], lug_variant, budget=budget, enforce_budget=False, **alpha_only),
                            args.threads)
            points.append({"search_budget": budget, "search_ratio": ratio, "derived_cost": res["raw_derived_cost"],
                           "genotype": res["raw_genotype"], "expected_cost": res["expected_cost"],
                           "wall_time_s": res["wall_time_s"]})
            log(f"LUG search budget {ratio:.2f} -> derived {res['raw_derived_cost'] / largest:.3f}  {res['raw_genotype']}")
        lug = LookUpGraph("nb201", "params", points, {"search_space": "nb201", "init_channels": 16, "image_size": 32,
                                                      "num_channels": 3, "num_labels": 10, "cells_per_stage": 5},
                          {"steps": steps, "seed": seeds[0]})
        lug.save(lug_path)
        results["lug_params"] = lug.to_dict()
        save()

    # -- DARTS baseline (one search per seed, scored against every budget) ----------------------------------
    darts_by_seed = {}
    if "darts" in parts:
        for seed in seeds:
            res = run_child(base_search(seed, constrained=False, channel_bottleneck=1, weight_sharing=False,
                                        derived_cells=False), args.threads)
            darts_by_seed[seed] = res
            results["runs"].append({"method": "darts_search", "seed": seed, **{k: res[k] for k in (
                "genotype", "wall_time_s", "peak_rss_mb", "search_rss_increase_mb", "steps", "alpha_entropy")}})
            for ratio in ratios:
                results["runs"].append({"method": "darts", "seed": seed, "ratio": ratio,
                                        "wall_time_s": res["wall_time_s"], "peak_rss_mb": res["peak_rss_mb"],
                                        "search_rss_increase_mb": res["search_rss_increase_mb"],
                                        **scorer.score(res["genotype"], ratio * largest)})
            log(f"DARTS seed {seed}: {res['genotype']} acc {scorer.score(res['genotype'], None)['nb201_acc']:.2f} "
                f"({res['wall_time_s']:.0f} s)")
            save()

    # -- DCA-NAS variants and random search -----------------------------------------------------------------
    use_lug = os.path.isfile(lug_path)
    dca_by_key = {}
    if "dcanas" in parts or "random" in parts:
        for ratio in ratios:
            for seed in seeds:
                budget = ratio * largest
                for variant in variants:
                    lug = lug_path if (VARIANTS[variant]["lug"] and use_lug) else None
                    res = run_child(base_search(seed, variant, budget=budget, lug=lug), args.threads)
                    dca_by_key[(variant, ratio, seed)] = res
                    row = {"method": variant, "seed": seed, "ratio": ratio, "lug": lug is not None, **{k: res[k] for k in (
                        "wall_time_s", "peak_rss_mb", "search_rss_increase_mb", "search_budget", "raw_genotype",
                        "raw_budget_met", "repaired", "lambda", "alpha_entropy", "expected_cost", "steps")},
                        **scorer.score(res["genotype"], budget)}
                    row["raw_nb201_acc"] = scorer.score(res["raw_genotype"], None)["nb201_acc"]
                    derivation = (res.get("extra") or {}).get("derivation")
                    if derivation:  # perturbation / NASWOT scoring time, part of wall_time_s
                        row["derivation_seconds"] = derivation["seconds"]
                    results["runs"].append(row)
                    log(f"{variant} {ratio:.2f} seed {seed}: {row['genotype']} acc {row['nb201_acc']:.2f} regret "
                        f"{row['regret']:.2f} met {row['budget_met']} (raw {row['raw_budget_met']}) "
                        f"{row['wall_time_s']:.0f} s")
                    save()
                if "random" in parts:
                    wall = dca_by_key[(variants[0], ratio, seed)]["wall_time_s"]
                    spec = {"kind": "random", "train_limit": args.train_limit, "dataset": args.dataset, "seed": seed,
                            "random": {"budget": budget, "wall_time_s": wall, "channels": args.channels,
                                       "cells": args.cells, "steps_per_arch": args.random_steps_per_arch,
                                       "batch_size": args.batch_size}}
                    rnd = run_child(spec, args.threads)
                    row = {"method": "random", "seed": seed, "ratio": ratio, "evaluated": rnd["evaluated"],
                           "wall_time_s": rnd["wall_time_s"], "peak_rss_mb": rnd["peak_rss_mb"],
                           "search_rss_increase_mb": rnd["search_rss_increase_mb"], "proxy_val_acc": rnd["proxy_val_acc"],
                           **scorer.score(rnd["genotype"], budget)}
                    results["runs"].append(row)
                    log(f"random {ratio:.2f} seed {seed}: {row['genotype']} acc {row['nb201_acc']:.2f} regret "
                        f"{row['regret']:.2f} ({rnd['evaluated']} cells in {rnd['wall_time_s']:.0f} s)")
                    save()

    # -- ablation of the speed-ups ---------------------------------------------------------------------------
    if "ablation" in parts:
        ratio, seed = (0.5 if 0.5 in ratios else ratios[0]), seeds[0]
        budget = ratio * largest
        ablations = {
            "all_on": {},
            "no_bottleneck": {"channel_bottleneck": 1},
            "no_weight_sharing": {"weight_sharing": False},
            "no_derived_cells": {"derived_cells": False},
            "all_off": {"channel_bottleneck": 1, "weight_sharing": False, "derived_cells": False},
        }
        for name, overrides in ablations.items():
            lug = lug_path if (VARIANTS[variants[0]]["lug"] and use_lug) else None
            if name == "all_on" and (variants[0], ratio, seed) in dca_by_key:
                res = dca_by_key[(variants[0], ratio, seed)]
            else:
                res = run_child(base_search(seed, budget=budget, lug=lug, **overrides), args.threads)
            row = {"method": "ablation", "variant": name, "seed": seed, "ratio": ratio,
                   "wall_time_s": res["wall_time_s"], "s_per_step": res["wall_time_s"] / max(1, res["steps"]),
                   "peak_rss_mb": res["peak_rss_mb"], "search_rss_increase_mb": res["search_rss_increase_mb"],
                   **scorer.score(res["genotype"], budget)}
            results["runs"].append(row)
            log(f"ablation {name}: {row['wall_time_s']:.0f} s, +{row['search_rss_increase_mb']:.0f} MiB, "
                f"acc {row['nb201_acc']:.2f}")
            save()

    # -- latency-constrained variant ---------------------------------------------------------------------------
    if "latency" in parts:
        table_path = os.path.join(out_dir, f"dcanas_nb201_{args.tag}_latency_table.json")
        lut = run_child({"kind": "lut", "path": table_path, "repeats": 30 if args.smoke else 100,
                         "check": 3 if args.smoke else 8, "calibrate": args.calibrate}, args.threads)
        results["latency_table"] = {k: lut[k] for k in ("path", "seconds", "skeleton_ms", "estimate_check",
                                                         "estimate_check_uncalibrated", "calibration")}
        raw = lut["estimate_check_uncalibrated"]
        log(f"latency table: estimate error {100 * lut['estimate_check']['mean_abs_relative_error']:.1f}% (mean |rel|) "
            f"over {len(lut['estimate_check']['rows'])} held-out networks"
            + (f"; before calibration {100 * raw['mean_abs_relative_error']:.1f}%" if raw else ""))
        from hf_compress.nas.latency import LatencyTable

        table = LatencyTable.load(table_path)
        cost_model = CostModel.for_space("nb201", "latency", table)
        lo, hi = cost_model.feasible_range()
        lat_lug_path = os.path.join(out_dir, f"dcanas_nb201_{args.tag}_lug_latency.json")
        points = []
        lug_ratios = [float(r) for r in args.lug_ratios.split(",")][::2 if not args.smoke else 1]
        for ratio in lug_ratios if VARIANTS[variants[0]]["lug"] else []:
            budget = max(lo * 1.01, ratio * hi)
            res = run_child(base_search(seeds[0], budget=budget, budget_type="latency", latency_table=table_path,
                                        enforce_budget=False), args.threads)
            log(f"latency LUG search budget {budget:.3f} ms -> derived {res['raw_derived_cost']:.3f} ms")
            points.append({"search_budget": budget, "derived_cost": res["raw_derived_cost"],
                           "genotype": res["raw_genotype"]})
        if points:
            lug = LookUpGraph("nb201", "latency", points, table.network, {"steps": steps})
            lug.save(lat_lug_path)
            results["lug_latency"] = lug.to_dict()
        for ratio in [float(r) for r in args.latency_ratios.split(",")]:
            budget = max(lo * 1.01, ratio * hi)
            spec = base_search(seeds[0], budget=budget, budget_type="latency", latency_table=table_path,
                               lug=lat_lug_path if VARIANTS[variants[0]]["lug"] else None,
                               latency_fit=args.latency_fit, latency_fit_repeats=30 if args.smoke else 100,
                               latency_overshoot=args.latency_overshoot)
            spec.update(measure_latency=True, latency_repeats=30 if args.smoke else 100,
                        latency_rounds=3 if args.latency_fit else 1)
            res = run_child(spec, args.threads)
            row = {"method": "latency", "seed": seeds[0], "ratio": ratio, "latency_budget_ms": budget,
                   "derived_cost": res["derived_cost"], "measured_latency_ms": res["measured_latency_ms"],
                   "budget_met_estimate": res["budget_met"], "wall_time_s": res["wall_time_s"],
                   "search_budget": res["search_budget"], **scorer.score(res["genotype"], None)}
            if res.get("extra", {}).get("latency_fit"):
                row["latency_fit"] = res["extra"]["latency_fit"]
            results["runs"].append(row)
            log(f"latency {ratio:.2f}: budget {budget:.3f} ms, estimated {res['derived_cost']:.3f} ms, measured "
                f"{res['measured_latency_ms']:.3f} ms, acc {row['nb201_acc']:.2f}")
            save()

    save()
    print(json.dumps(results["summary"], indent=2))
    print(f"-> {out_path}")


if __name__ == "__main__":
    main()
