"""``hf-compress nas``: DCA-NAS from the command line.

Subcommands::

    hf-compress nas search  [--dataset cifar10|digits] [--train_limit N] DCANASTrainingArguments flags...
    hf-compress nas derive  RESULTS [--output_dir DIR] [--raw] [--genotype STR] [--init_channels C] ...
    hf-compress nas train   MODEL_DIR|GENOTYPE --output_dir DIR [--epochs E] [--train_limit N] ...
    hf-compress nas lut     [--search_space nb201] --output latency.json [--check 4]
    hf-compress nas lug     --output lug.json --search_ratios 0.1,0.2,0.4 [search flags...]
    hf-compress nas export  ...   (hf_compress.nas.export)

Options of ``search`` / ``lug`` come from ``DCANASTrainingArguments`` (``HfArgumentParser``): flags, or one
JSON / YAML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field

logger = logging.getLogger("hf_compress.nas")

SUBCOMMANDS = {
    "search": "search a cell under a device budget (params / flops / latency); saves the derived network + results",
    "derive": "build the derived network (untrained model folder) from saved search results",
    "train": "train a derived network on CIFAR-10 / digits with the stock Trainer (crop, flip, cutout)",
    "lut": "measure the per-op latency table of the final network on this device (onnxruntime + torch)",
    "lug": "build the look-up graph (device budget -> search budget) from short searches",
    "export": "export a derived network to ONNX (hf_compress.nas.export)",
}


@dataclass
class NASDataArguments:
    """Which images the search / training uses."""

    dataset: str = field(default="cifar10", metadata={"help": "cifar10 (offline copy) or digits (sklearn, fast).",
                                                       "choices": ["cifar10", "digits"]})
    train_limit: int | None = field(default=5000, metadata={"help": "Use N training images (seeded random subset; None: all)."})
    data_seed_offset: int = field(default=0, metadata={"help": "Added to --seed for the data shuffle."})


@dataclass
class LUGArguments:
    """Search budgets at which the look-up graph is measured."""

    lug_output: str = field(default="lug.json", metadata={"help": "Where the look-up graph JSON is written."})
    search_ratios: str = field(
        default="0.1,0.2,0.3,0.45,0.6,0.8",
        metadata={"help": "Comma-separated search budgets as fractions of the largest architecture's cost."},
    )
    lug_seeds: int = field(default=1, metadata={"help": "Searches per search budget (different seeds)."})


_SEARCH_DEFAULTS = {
    "output_dir": "outputs/dcanas-search",
    "per_device_train_batch_size": "64",
    "learning_rate": "0.025",
    "optim": "sgd",
    "optim_args": "momentum=0.9",
    "weight_decay": "3e-4",
    "lr_scheduler_type": "cosine",
    "max_grad_norm": "5.0",
    "num_train_epochs": "1",
    "logging_steps": "20",
    "save_strategy": "no",
    "report_to": "none",
    "seed": "0",
    "dataloader_num_workers": "0",
    "dataloader_pin_memory": "false",
}


def _parse(dataclass_types, argv: list[str], prog: str, defaults: dict[str, str]):
    from ..cli import parse_dataclass_args

    return parse_dataclass_args(dataclass_types, argv, prog, defaults)


def load_data(data: NASDataArguments, seed: int, image_size: int = 32, num_channels: int = 3, split: str = "train"):
    from .search import load_cifar10, load_digits_dataset

    if data.dataset == "digits":
        ds = load_digits_dataset(image_size=image_size, num_channels=num_channels, seed=seed + data.data_seed_offset)
        n_test = len(ds) // 5
        train, test = ds.subset(range(n_test, len(ds))), ds.subset(range(n_test))
        part = train if split == "train" else test
        if split == "train" and data.train_limit:
            part = part.subset(range(min(data.train_limit, len(part))))
        return part
    if num_channels != 3:
        raise ValueError(f"CIFAR-10 images have 3 channels; got num_channels={num_channels}.")
    limit = data.train_limit if split == "train" else None
    return load_cifar10(split, limit=limit, seed=seed + data.data_seed_offset, image_size=image_size)


def _summary_lines(result) -> list[str]:
    lines = [f"DCA-NAS {result.search_space}: {result.genotype}"]
    if result.device_budget is not None:
        lines.append(
            f"  {result.metric:8s} derived {result.derived_cost:.6g} / device budget {result.device_budget:.6g} "
            f"(search budget {result.search_budget:.6g}; met: {result.budget_met}"
            + (f", repaired from {result.raw_genotype} at {result.raw_derived_cost:.6g}" if result.repaired else "")
            + ")"
        )
    fit = result.extra.get("latency_fit")
    if fit:
        # (results written before fits recorded their budget: a latency search's own budget)
        budget_ms = fit.get("budget_ms", result.device_budget if result.metric == "latency" else None)
        share = f", {fit['measured_ms'] / budget_ms:.3f} x the budget" if budget_ms else ""
        lines.append(f"  measured {fit['measured_ms']:.3f} ms on this device{share} (table estimate "
                     f"{fit['estimated_ms']:.3f} ms; {sum('measured_ms' in t for t in fit['trials'])} candidates "
                     f"measured, in window: {fit['within_tolerance']})")
    lines.append(f"  params {result.params:,}   MACs {result.macs:,}   lambda {result.lambda_}   alpha entropy "
                 f"{result.alpha_entropy:.3f}")
    lines.append(f"  search {result.wall_time_s:.1f} s, {result.steps} steps, peak RSS {result.peak_rss_mb:.0f} MiB")
    return lines


def cmd_search(argv: list[str]) -> int:
    from trainers.dcanas_config import DCANASTrainingArguments
    from trainers.dcanas_trainer import DCANASTrainer

    data, args = _parse((NASDataArguments, DCANASTrainingArguments), argv, "hf-compress nas search", _SEARCH_DEFAULTS)
    train = load_data(data, args.seed, args.image_size, args.num_channels)
    trainer = DCANASTrainer(args=args, train_dataset=train)
    # --resume_from_checkpoint out/nas/checkpoint-N continues an interrupted search exactly (alpha's optimizer
    # and the validation stream are in the checkpoint)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    result = trainer.search_result()
    print("\n".join(_summary_lines(result)))
    print(f"  saved to {args.output_dir} (derived network, untrained; search_results.json)")
    return 0


def _record_fit(result, fit) -> None:
    """Make the saved results describe the fitted network: its genotype, exact costs and the measurement."""
    from .constraint import final_network_config
    from .cost import network_cost

    result.genotype = str(fit.genotype)
    cost = network_cost(final_network_config(result.search_space, genotype=result.genotype, **result.final_network))
    result.params, result.macs = int(cost.params), int(cost.macs)
    result.extra["latency_fit"] = fit.to_dict()
    result.extra["measured_latency_ms"] = fit.measured_ms
    if result.metric == "latency":
        result.derived_cost = fit.estimated_ms
        result.budget_met = fit.measured_ms <= fit.budget_ms
    elif result.metric in ("params", "macs"):
        result.derived_cost = float(getattr(cost, result.metric))
        result.budget_met = result.derived_cost <= result.device_budget if result.device_budget else None


def cmd_derive(argv: list[str]) -> int:
    from .search import SearchResult, derive

    parser = argparse.ArgumentParser(prog="hf-compress nas derive", description=SUBCOMMANDS["derive"])
    parser.add_argument("results", help="search output folder or its search_results.json")
    parser.add_argument("--output_dir", default=None, help="where to save the model (default: print only)")
    parser.add_argument("--raw", action="store_true", help="use the argmax genotype before any budget repair")
    parser.add_argument("--genotype", default=None, help="use this genotype string instead")
    parser.add_argument("--init_channels", type=int, default=None)
    parser.add_argument("--cells_per_stage", type=int, default=None, help="NB201 network size")
    parser.add_argument("--num_layers", type=int, default=None, help="DARTS network size")
    parser.add_argument("--num_classes", type=int, default=None)
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--latency_fit", action="store_true",
                        help="run on the target device: measure candidates from the saved alpha against a latency "
                             "budget and keep the first within --latency_tolerance under it")
    parser.add_argument("--latency_table", default=None,
                        help="latency table measured on this device (default: the search's own)")
    parser.add_argument("--budget_ms", type=float, default=None,
                        help="latency budget in ms (default: the search's, when it was a latency search)")
    parser.add_argument("--latency_tolerance", type=float, default=0.1)
    parser.add_argument("--latency_overshoot", type=float, default=0.0,
                        help="how far over the budget (fraction) the fit may land when no candidate is within "
                             "--latency_tolerance under it (default 0: the budget is a ceiling)")
    parser.add_argument("--latency_fit_rounds", type=int, default=10)
    parser.add_argument("--latency_fit_repeats", type=int, default=100)
    ns = parser.parse_args(argv)
    result = SearchResult.load(ns.results)
    genotype = ns.genotype or (result.raw_genotype if ns.raw else None)
    if ns.latency_fit:
        from .latency_fit import fit_search_result

        table = ns.latency_table or result.extra.get("latency_table")
        if table is None:
            print("error: --latency_fit needs --latency_table (measured here with `hf-compress nas lut`).",
                  file=sys.stderr)
            return 2
        if any(v is not None for v in (ns.genotype, ns.init_channels, ns.cells_per_stage, ns.num_layers,
                                        ns.num_classes, ns.image_size)) or ns.raw:
            print("error: --latency_fit derives for the searched network; it cannot be combined with --genotype, "
                  "--raw or resizing options.", file=sys.stderr)
            return 2
        fit = fit_search_result(result, table, ns.budget_ms, tolerance=ns.latency_tolerance,
                                max_rounds=ns.latency_fit_rounds, repeats=ns.latency_fit_repeats,
                                overshoot=ns.latency_overshoot)
        genotype = str(fit.genotype)
        _record_fit(result, fit)
        print(f"latency fit: measured {fit.measured_ms:.3f} ms for a {fit.budget_ms:.3f} ms budget "
              f"({fit.measured_ms / fit.budget_ms:.3f} x; table estimate {fit.estimated_ms:.3f} ms, "
              f"{sum('measured_ms' in t for t in fit.trials)} candidates measured, in window: {fit.within_tolerance})")
    genotype, config = derive(
        result, ns.output_dir, genotype, init_channels=ns.init_channels, cells_per_stage=ns.cells_per_stage,
        num_layers=ns.num_layers, num_classes=ns.num_classes, image_size=ns.image_size,
    )
    if ns.output_dir:
        result.save(os.path.join(ns.output_dir, "search_results.json"))
    from .cost import network_cost

    cost = network_cost(config)
    print(f"{config.search_space}: {genotype}\n  params {cost.params:,}   MACs {cost.macs:,}")
    if ns.output_dir:
        print(f"  saved to {ns.output_dir} (AutoModelForImageClassification.from_pretrained)")
    return 0


# ---------------------------------------------------------------------------------------------------------
# train a derived network with the stock Trainer
# ---------------------------------------------------------------------------------------------------------


class AugmentingCollator:
    """DARTS CIFAR augmentation on normalized tensors: random crop (zero padding 4), horizontal flip and
    cutout (one ``cutout`` x ``cutout`` square zeroed); ``train=False`` only stacks."""

    def __init__(self, padding: int = 4, flip: bool = True, cutout: int = 16, seed: int = 0) -> None:
        import torch

        self.padding, self.flip, self.cutout = padding, flip, cutout
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, features: list[dict]):
        import torch
        import torch.nn.functional as F

        x = torch.stack([torch.as_tensor(f["pixel_values"]) for f in features])
        labels = torch.as_tensor([int(f["labels"]) for f in features])
        n, _, h, w = x.shape
        g = self.generator
        if self.padding:
            p = self.padding
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=g)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=g)
            x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        if self.flip:
            flip = torch.rand(n, generator=g) < 0.5
            x[flip] = x[flip].flip(-1)
        if self.cutout:
            cy = torch.randint(0, h, (n,), generator=g)
            cx = torch.randint(0, w, (n,), generator=g)
            half = self.cutout // 2
            for i in range(n):
                x[i, :, max(0, cy[i] - half):min(h, cy[i] + half), max(0, cx[i] - half):min(w, cx[i] + half)] = 0.0
        return {"pixel_values": x, "labels": labels}


def cmd_train(argv: list[str]) -> int:
    import numpy as np
    from transformers import Trainer, TrainingArguments

    from .configuration_dcanas import DCANASConfig
    from .modeling_dcanas import DCANASForImageClassification

    parser = argparse.ArgumentParser(prog="hf-compress nas train", description=SUBCOMMANDS["train"])
    parser.add_argument("model", help="a derived model folder (config.json) or a genotype string")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "digits"])
    parser.add_argument("--train_limit", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=96)
    parser.add_argument("--learning_rate", type=float, default=0.025)
    parser.add_argument("--weight_decay", type=float, default=3e-4)
    parser.add_argument("--cutout", type=int, default=16, help="cutout square side (0: off)")
    parser.add_argument("--drop_path_prob", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init_channels", type=int, default=None, help="with a genotype string: network width")
    parser.add_argument("--cells_per_stage", type=int, default=None)
    parser.add_argument("--num_layers", type=int, default=None)
    ns = parser.parse_args(argv)
    if os.path.isdir(ns.model):
        model = DCANASForImageClassification.from_pretrained(ns.model)
    else:
        from .spaces import genotype_space, parse_genotype

        genotype = parse_genotype(ns.model)
        space = genotype_space(genotype).name
        kwargs = {k: getattr(ns, k) for k in ("init_channels", "cells_per_stage", "num_layers") if getattr(ns, k)}
        model = DCANASForImageClassification(DCANASConfig(search_space=space, genotype=genotype, **kwargs))
    config = model.config
    if ns.drop_path_prob is not None:
        model.drop_path_prob = ns.drop_path_prob
    data = NASDataArguments(dataset=ns.dataset, train_limit=ns.train_limit)
    train = load_data(data, ns.seed, config.image_size, config.num_channels)
    test = load_data(data, ns.seed, config.image_size, config.num_channels, split="test")
    args = TrainingArguments(
        ns.output_dir, per_device_train_batch_size=ns.batch_size, per_device_eval_batch_size=256,
        learning_rate=ns.learning_rate, weight_decay=ns.weight_decay, optim="sgd", optim_args="momentum=0.9",
        lr_scheduler_type="cosine", num_train_epochs=ns.epochs, max_grad_norm=5.0, logging_steps=50,
        save_strategy="no", report_to="none", seed=ns.seed, remove_unused_columns=False, dataloader_num_workers=0,
    )

    def accuracy(eval_pred):
        logits, labels = eval_pred
        return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}

    collator = AugmentingCollator(cutout=ns.cutout, seed=ns.seed)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test, data_collator=collator,
                      compute_metrics=accuracy)
    trainer.train()
    trainer.data_collator = AugmentingCollator(padding=0, flip=False, cutout=0)
    metrics = trainer.evaluate()
    model.save_pretrained(ns.output_dir)
    from model_cards import render_dcanas_card

    search_file = os.path.join(ns.model, "search_results.json") if os.path.isdir(ns.model) else None
    search = json.load(open(search_file, encoding="utf-8")) if search_file and os.path.isfile(search_file) else None
    render_dcanas_card(config, search, test_accuracy=metrics["eval_accuracy"], dataset=ns.dataset,
                       output_dir=ns.output_dir).save(os.path.join(ns.output_dir, "README.md"))
    with open(os.path.join(ns.output_dir, "train_results.json"), "w", encoding="utf-8") as handle:
        json.dump({"genotype": config.genotype, **metrics}, handle, indent=2)
    print(f"{config.genotype}: test accuracy {metrics['eval_accuracy']:.4f} ({len(test)} images); saved to {ns.output_dir}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# latency table and look-up graph
# ---------------------------------------------------------------------------------------------------------


def _random_genotypes(space_name: str, n: int, seed: int, include_extremes: bool = True):
    """``n`` genotypes: (with ``include_extremes``) the largest / smallest NB201 cell or DARTS_V2 first, then
    uniformly random ones (seeded)."""
    import random

    from .spaces import NB201_LARGEST, NB201_SMALLEST, NB201Genotype, get_space

    space = get_space(space_name)
    rng = random.Random(seed)
    if space.name == "nb201":
        out = [NB201_LARGEST, NB201_SMALLEST] if include_extremes else []
        while len(out) < n:
            out.append(NB201Genotype.from_ops([rng.choice(space.ops) for _ in space.edges]))
        return out[:n]
    from .spaces import DARTS_V2, DartsGenotype

    out = [DARTS_V2] if include_extremes else []
    live = [o for o in space.ops if o != "none"]
    while len(out) < n:
        cells = []
        for _ in range(2):
            pairs = []
            for node in range(4):
                for source in rng.sample(range(node + 2), 2):
                    pairs.append((rng.choice(live), source))
            cells.append(tuple(pairs))
        out.append(DartsGenotype(cells[0], (2, 3, 4, 5), cells[1], (2, 3, 4, 5)))
    return out[:n]


def cmd_lut(argv: list[str]) -> int:
    from .constraint import final_network_config
    from .latency import calibrate_latency_table, latency_estimate_error, mean_abs_error, measure_latency_table

    parser = argparse.ArgumentParser(prog="hf-compress nas lut", description=SUBCOMMANDS["lut"])
    parser.add_argument("--search_space", default="nb201")
    parser.add_argument("--output", required=True, help="latency table JSON to write")
    parser.add_argument("--init_channels", type=int, default=None, help="final network width (default 16 / 36)")
    parser.add_argument("--cells_per_stage", type=int, default=None)
    parser.add_argument("--num_layers", type=int, default=None)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--backends", default="onnxruntime,torch")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both backends")
    parser.add_argument("--calibrate", type=int, default=0,
                        help="fit measured ~ a * estimate + b on N whole networks and fold it into the table")
    parser.add_argument("--check", type=int, default=0,
                        help="also measure N other whole networks and report the estimate's error (onnxruntime)")
    ns = parser.parse_args(argv)
    config = final_network_config(
        ns.search_space, init_channels=ns.init_channels, cells_per_stage=ns.cells_per_stage, num_layers=ns.num_layers,
        image_size=ns.image_size, num_classes=ns.num_classes,
    )
    table = measure_latency_table(config, backends=[b for b in ns.backends.split(",") if b], repeats=ns.repeats,
                                  warmup=ns.warmup, threads=ns.threads, progress=True)
    backend = "onnxruntime" if "onnxruntime" in table.skeleton else next(iter(table.skeleton))
    if ns.calibrate:
        fit = calibrate_latency_table(table, config, _random_genotypes(config.search_space, ns.calibrate, 100),
                                      backend, ns.repeats, ns.warmup)
        print(f"  calibration ({backend}): measured = {fit['scale']:.3f} x estimate + {fit['offset_ms']:.4f} ms")
    if ns.check:
        rows = latency_estimate_error(table, _random_genotypes(config.search_space, ns.check, 0, not ns.calibrate),
                                      config, backend, ns.repeats, ns.warmup)
        table.meta["check"] = {"backend": backend, "rows": rows, "mean_abs_relative_error": mean_abs_error(rows)}
        for row in rows:
            print(f"  est {row['estimated_ms']:.3f} ms  meas {row['measured_ms']:.3f} ms  "
                  f"({100 * row['relative_error']:+.1f}%)  {row['genotype']}")
    table.save(ns.output)
    print(f"latency table ({len(table.entries)} op slots, skeleton {table.skeleton}) -> {ns.output}")
    print(f"  device: {table.fingerprint}")
    return 0


def cmd_lug(argv: list[str]) -> int:
    from trainers.dcanas_config import DCANASTrainingArguments
    from trainers.dcanas_trainer import DCANASTrainer

    from .constraint import build_lug
    from .latency import network_signature

    given = {a.split("=")[0][2:] for a in argv if a.startswith("--")}
    defaults = dict(_SEARCH_DEFAULTS)
    if not given & {"budget", "budget_ratio"}:
        defaults["budget_ratio"] = "0.5"  # placeholder: every LUG search sets its own budget
    lug_args, data, args = _parse((LUGArguments, NASDataArguments, DCANASTrainingArguments), argv,
                                  "hf-compress nas lug", defaults)
    if args.lug:
        raise ValueError("A look-up graph is measured without one: drop --lug.")
    train = load_data(data, args.seed, args.image_size, args.num_channels)
    ratios = [float(r) for r in lug_args.search_ratios.split(",") if r.strip()]
    if not ratios:
        raise ValueError("--search_ratios needs at least one fraction, e.g. 0.1,0.3,0.6.")
    state = {}

    def run(search_budget: float) -> dict:
        rows = []
        for k in range(lug_args.lug_seeds):
            run_args = dataclasses.replace(
                args, budget=search_budget, budget_ratio=None, seed=args.seed + k, enforce_budget=False,
                output_dir=os.path.join(args.output_dir, f"lug-{search_budget:.6g}-{k}"),
            )
            trainer = DCANASTrainer(args=run_args, train_dataset=train)
            trainer.train()
            result = trainer.search_result(enforce_budget=False)
            state["config"] = trainer.final_config
            rows.append(result)
            print(f"  search budget {search_budget:.6g} (seed {run_args.seed}) -> derived {result.derived_cost:.6g} "
                  f"{result.genotype}", flush=True)
        return {"derived_cost": float(sum(r.derived_cost for r in rows) / len(rows)),
                "derived_costs": [r.derived_cost for r in rows], "genotypes": [r.genotype for r in rows],
                "expected_costs": [r.expected_cost for r in rows], "wall_time_s": sum(r.wall_time_s for r in rows)}

    from .constraint import CostModel, final_network_config
    from .latency import LatencyTable

    table = LatencyTable.load(args.latency_table) if args.latency_table else None
    config = final_network_config(args.search_space, **args.final_config_kwargs())
    cost_model = CostModel(config, args.metric, table, args.latency_backend, exclude_none=args.exclude_none)
    budgets = [cost_model.budget_from_ratio(r) for r in ratios]
    for budget in budgets:
        cost_model.check_budget(budget, "search budget")
    meta = {"search_ratios": ratios, "seeds": lug_args.lug_seeds, "dataset": data.dataset,
            "train_limit": data.train_limit, "max_steps": args.max_steps, "num_train_epochs": args.num_train_epochs,
            "supernet": {k: v for k, v in args.supernet_kwargs().items()},
            "arch_learning_rate": args.arch_learning_rate, "lambda_learning_rate": args.lambda_learning_rate}
    lug = build_lug(run, budgets, args.search_space, cost_model.metric, network_signature(config), meta,
                    lug_args.lug_output)
    print(f"look-up graph ({len(lug.points)} points, {cost_model.metric}) -> {lug_args.lug_output}")
    return 0


def cmd_export(argv: list[str]) -> int:
    try:
        from . import export  # written separately; imported only when asked for
    except ImportError as err:
        if err.name != "hf_compress.nas.export":
            raise
        print("hf-compress nas export: error: hf_compress.nas.export is not available in this installation.",
              file=sys.stderr)
        return 2
    return int(export.main(argv) or 0)


COMMANDS = {
    "search": cmd_search, "derive": cmd_derive, "train": cmd_train, "lut": cmd_lut, "lug": cmd_lug,
    "export": cmd_export,
}


def print_help() -> None:
    print("usage: hf-compress nas <subcommand> [options]\n\nDCA-NAS: device-constraint-aware architecture search "
          "(NAS-Bench-201 and DARTS spaces).\n\nsubcommands:")
    for name, text in SUBCOMMANDS.items():
        print(f"  {name:8s} {text}")
    print("\n'hf-compress nas <subcommand> --help' lists its options.")


def run_nas(argv: list[str]) -> int:
    """Entry point of ``hf-compress nas``; returns the exit status (2 on bad input, with the reason)."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print_help()
        return 0
    if argv[0] not in COMMANDS:
        print_help()
        print(f"\nhf-compress nas: error: unknown subcommand {argv[0]!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import hf_compress.nas  # noqa: F401  (registers the Auto classes)

    try:
        return COMMANDS[argv[0]](argv[1:])
    except (FileNotFoundError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"hf-compress nas {argv[0]}: error: {message}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return run_nas(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
