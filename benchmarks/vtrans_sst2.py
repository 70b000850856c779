"""VTrans / Fast-VTrans / Faster-VTrans vs structured Taylor pruning on MiniLM + SST-2.

Everything is measured side by side in one run on one machine: a dense teacher is fine-tuned, then for
each sparsity every method prunes a copy of it; accuracy on SST-2 test.tsv (= GLUE validation), realised
sparsity, compression wall time and inference latency (pruned / dense, same batch) are printed and
written to benchmarks/results/vtrans_sst2_<tag>.json.

    python benchmarks/vtrans_sst2.py --train_size 8000 --tag cpu          # CPU-sized run
    python benchmarks/vtrans_sst2.py --train_size 0 --tag gpu             # all 60,614 examples
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

import hf_compress  # noqa: F401
from hf_compress.data import load_sst2, load_tokenizer, minilm_path, tokenize
from hf_compress.evaluation import accuracy, count_parameters, latency, latency_batch
from hf_compress.vtrans import dense_shape, get_gates, resolve_budget
from hf_compress.vtrans.probing import probe_attention, spearman
from hf_compress.vtrans.baselines import taylor_importance, taylor_prune
from trainers import PrunedModelTrainer, VTransTrainer, VTransTrainingArguments

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="dense model folder (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--teacher", default=None, help="already fine-tuned teacher folder (skips the teacher fine-tune)")
    p.add_argument("--train_size", type=int, default=8000, help="training examples used as 'all data' (0: all)")
    p.add_argument("--teacher_epochs", type=float, default=2.0)
    p.add_argument("--epochs", type=float, default=1.0, help="pruning epochs (VTrans on all data)")
    p.add_argument("--finetune_epochs", type=float, default=1.0, help="fine-tune epochs after pruning (VTrans, baseline)")
    p.add_argument("--fraction", type=float, default=None,
                   help="data fraction of Fast/Faster-VTrans's pruning phase (default: the variant's own, "
                        "VTransTrainingArguments: 0.03 fast, 0.025 faster)")
    p.add_argument("--fast_epochs", type=float, default=3.0, help="pruning epochs of Fast/Faster on their fraction")
    p.add_argument("--fast_finetune_epochs", type=float, default=3.0, help="fine-tune epochs of Fast/Faster on their fraction")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    p.add_argument("--methods", nargs="+", default=["vtrans", "fast", "faster", "taylor"],
                   help="vtrans | fast | faster | taylor; fast and faster take an optional schedule "
                        "'faster:EPOCHS:FINETUNE_EPOCHS[:BATCH[:FINETUNE_BATCH[:FINETUNE_FRACTION]]]' (default --fast_epochs / "
                        "--fast_finetune_epochs, --batch_size); a trailing '-nocache' switches the teacher output cache "
                        "off for that method")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--latency_batch_size", type=int, default=32)
    p.add_argument("--cpu_latency_threads", type=int, default=2,
                   help="also time every model on the CPU with this many threads (0: skip)")
    p.add_argument("--vtrans_overrides", default="{}", help="JSON of extra VTransTrainingArguments, e.g. '{\"kl_weight_hidden\": 30}'")
    p.add_argument("--faster_overrides", default="{}",
                   help="JSON of extra VTransTrainingArguments for the fast/faster methods only (over --vtrans_overrides), "
                   "e.g. '{\"sparsity_warmup_ratio\": 0.2}', so VTrans in the same run keeps its own settings")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args()


def train_args(out: str, cli, **kw) -> dict:
    base = dict(
        output_dir=out, per_device_train_batch_size=cli.batch_size, per_device_eval_batch_size=128, learning_rate=5e-5,
        save_strategy="no", report_to=[], seed=cli.seed, logging_steps=50, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
    )
    base.update(kw)
    return base


NO_CACHE = "-nocache"


def split_method(method: str, cli) -> tuple[str, tuple, dict]:
    """'faster:4:1' -> ('faster', (4.0, 1.0, B, B, None), {}) with B = --batch_size; 'faster:8:3:256:64' also sets the
    batch size of the gate phase and of the fine-tune, 'faster:8:1:256:128:0.3' also the fine-tune's data fraction
    (nested around the gates' slice): one run can hold the same variant at several schedules. A trailing
    '-nocache' runs the method with teacher_cache_mb=0 (the teacher runs every step), to time the cache side by side."""
    overrides = {}
    if method.endswith(NO_CACHE):
        method, overrides = method[: -len(NO_CACHE)], {"teacher_cache_mb": 0.0}
    kind, schedule = _split_schedule(method, cli)
    return kind, schedule, overrides


def _split_schedule(method: str, cli) -> tuple[str, tuple]:
    kind, *schedule = method.split(":")
    if kind not in ("vtrans", "fast", "faster", "taylor") or len(schedule) not in (0, 2, 3, 4, 5) or (
            schedule and kind not in ("fast", "faster")):
        raise SystemExit(f"--methods: unknown {method!r}; use vtrans, fast, faster, taylor, or "
                         "fast/faster:EPOCHS:FINETUNE_EPOCHS[:BATCH[:FINETUNE_BATCH[:FINETUNE_FRACTION]]], each "
                         "optionally + '-nocache'")
    if schedule:
        batch = int(schedule[2]) if len(schedule) > 2 else cli.batch_size
        finetune_batch = int(schedule[3]) if len(schedule) > 3 else cli.batch_size
        finetune_fraction = float(schedule[4]) if len(schedule) > 4 else None
        return kind, (float(schedule[0]), float(schedule[1]), batch, finetune_batch, finetune_fraction)
    if kind in ("fast", "faster"):
        return kind, (cli.fast_epochs, cli.fast_finetune_epochs, cli.batch_size, cli.batch_size, None)
    return kind, (cli.epochs, cli.finetune_epochs, cli.batch_size, cli.batch_size, None)


def cpu_latency(model, batch: dict, threads: int) -> float | None:
    """Latency of the same model on the CPU (what a 2-core deployment sees), restoring its device after."""
    if threads <= 0:
        return None
    device, previous = next(model.parameters()).device, torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return latency(model.to("cpu"), {k: v.cpu() for k, v in batch.items()}, repeats=10)
    finally:
        torch.set_num_threads(previous)
        model.to(device)


def write(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)


def main() -> None:
    cli = parse()
    plans = {method: split_method(method, cli) for method in cli.methods}  # a bad --methods fails before any training
    vtrans_overrides, faster_overrides = json.loads(cli.vtrans_overrides), json.loads(cli.faster_overrides)  # and bad JSON
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.manual_seed(cli.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = os.path.join("outputs", f"bench-{cli.tag}")
    source = cli.model or minilm_path()
    tokenizer = load_tokenizer(cli.teacher, source)  # a teacher saved without its tokenizer takes the source's
    collator = DataCollatorWithPadding(tokenizer)
    train = load_sst2("train").shuffle(seed=cli.seed)
    if cli.train_size:
        train = train.select(range(min(cli.train_size, len(train))))
    train = tokenize(train, tokenizer, max_length=cli.max_length)
    test = tokenize(load_sst2("test"), tokenizer, max_length=cli.max_length)
    lat_batch = latency_batch(test, collator, cli.latency_batch_size, seed=cli.seed)

    start = time.perf_counter()
    if cli.teacher:
        teacher = AutoModelForSequenceClassification.from_pretrained(cli.teacher)
    else:
        teacher = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, dtype=torch.float32)
        Trainer(
            model=teacher,
            args=TrainingArguments(**train_args(os.path.join(work, "teacher"), cli, learning_rate=1e-4,
                                                num_train_epochs=cli.teacher_epochs, warmup_steps=50)),
            train_dataset=train, data_collator=collator,
        ).train()
    teacher_seconds = time.perf_counter() - start
    teacher.to(device).eval()
    teacher_dir = os.path.join(work, "teacher")
    teacher.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)  # so that --teacher <work>/teacher reuses it in a later run
    dense = {
        "accuracy": accuracy(teacher, test, collator),
        "params": count_parameters(teacher),
        "latency_s": latency(teacher, lat_batch),
        "cpu_latency_s": cpu_latency(teacher, lat_batch, cli.cpu_latency_threads),
        "teacher_finetune_seconds": teacher_seconds,
    }
    probe_loader = torch.utils.data.DataLoader(
        test.select_columns(["input_ids", "attention_mask", "token_type_ids"]), batch_size=64, collate_fn=collator
    )
    probe = probe_attention(teacher, probe_loader, tokenizer.all_special_ids, max_batches=4)
    out = cli.out or os.path.join(RESULTS, f"vtrans_sst2_{cli.tag}.json")
    result = {
        "benchmark": "vtrans_sst2",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "config": vars(cli),
        "train_examples": len(train),
        "test_examples": len(test),
        "dense": dense,
        "attention_probe": probe.as_dict(),
        "rows": [],
    }
    print(f"dense: accuracy {dense['accuracy']:.4f}, params {dense['params']:,}, latency {dense['latency_s'] * 1e3:.2f} ms")

    rows = result["rows"]
    for sparsity in cli.sparsities:
        for method in cli.methods:
            kind, schedule, overrides = plans[method]
            torch.manual_seed(cli.seed)
            student = AutoModelForSequenceClassification.from_pretrained(teacher_dir).to(device)
            began = time.perf_counter()
            if kind == "taylor":
                loader = torch.utils.data.DataLoader(
                    train.rename_column("label", "labels"), batch_size=cli.batch_size, collate_fn=collator, shuffle=True,
                    generator=torch.Generator().manual_seed(cli.seed),
                )
                importance = taylor_importance(student, loader, max_batches=32)
                budget = resolve_budget(dense_shape(student), target_sparsity=sparsity)
                pruned = taylor_prune(student, importance, budget)
                args = VTransTrainingArguments(**train_args(os.path.join(work, f"taylor-{sparsity}"), cli,
                                                            target_sparsity=sparsity, num_train_epochs=cli.finetune_epochs,
                                                            **overrides))
                PrunedModelTrainer(
                    model=pruned, teacher_model=teacher, args=args, train_dataset=train, data_collator=collator,
                    hidden_index=torch.as_tensor(pruned.config.pruning_report["hidden_index"], device=device),
                ).train()
            else:
                small = kind in ("fast", "faster")
                epochs, finetune_epochs, batch, finetune_batch, finetune_fraction = schedule
                args = VTransTrainingArguments(**train_args(
                    os.path.join(work, f"{method.replace(':', '_')}-{sparsity}"), cli, target_sparsity=sparsity,
                    variant=kind, data_fraction=cli.fraction if small else 1.0,
                    num_train_epochs=epochs, finetune_epochs=finetune_epochs,
                    per_device_train_batch_size=batch, finetune_batch_size=finetune_batch,
                    finetune_data_fraction=finetune_fraction,
                    **{**vtrans_overrides, **(faster_overrides if small else {}), **overrides},
                ))
                trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train,
                                        data_collator=collator, processing_class=tokenizer)
                trainer.train()
                pruned = trainer.materialize()
                cache_stats = trainer.teacher_cache_stats
                head_keep = get_gates(trainer.model).groups["heads"].keep_score().detach().cpu().numpy()
                probe_corr = spearman(probe.special + probe.current, head_keep)
            seconds = time.perf_counter() - began
            pruned.to(device).eval()
            report = pruned.config.pruning_report
            if kind == "taylor":
                probe_corr = cache_stats = None
            row = {
                "method": method,
                "epochs": schedule[0],
                "finetune_epochs": schedule[1],
                "batch_size": schedule[2],
                "finetune_batch_size": schedule[3],
                "data_fraction": None if kind == "taylor" else report["data_fraction"],
                "finetune_data_fraction": None if kind == "taylor" else report["finetune_data_fraction"],
                "finetune_learning_rate": None if kind == "taylor" else report["finetune_learning_rate"],
                "target_sparsity": sparsity,
                "accuracy": accuracy(pruned, test, collator),
                "layer_sparsity": report["layer_sparsity"],
                "total_sparsity": report["total_sparsity"],
                "params": count_parameters(pruned),
                "hidden_size": report["hidden_size"],
                "num_heads": report["num_heads"],
                "intermediate_sizes": report["intermediate_sizes"],
                "compression_seconds": seconds,
                "latency_s": latency(pruned, lat_batch),
                # VTrans' probing claim: heads looking at special / current tokens go first (negative)
                "spearman_special_current_attention_vs_head_keep_score": probe_corr,
                "teacher_cache": cache_stats,
            }
            row["accuracy_vs_dense"] = row["accuracy"] / dense["accuracy"]
            row["latency_ratio"] = row["latency_s"] / dense["latency_s"]
            row["cpu_latency_s"] = cpu_latency(pruned, lat_batch, cli.cpu_latency_threads)
            if row["cpu_latency_s"] is not None:
                row["cpu_latency_ratio"] = row["cpu_latency_s"] / dense["cpu_latency_s"]
            rows.append(row)
            write(result, out)  # partial results survive an interrupted run
            print(
                f"{method:7s} @{sparsity:.0%}: acc {row['accuracy']:.4f} ({row['accuracy_vs_dense']:.1%} of dense), "
                f"layer sparsity {row['layer_sparsity']:.3f}, {row['compression_seconds']:.0f} s, "
                f"latency ratio {row['latency_ratio']:.2f}"
                + (f" (CPU {row['cpu_latency_ratio']:.2f})" if row["cpu_latency_s"] is not None else ""),
                flush=True,
            )

    by = {(r["method"], r["target_sparsity"]): r for r in rows}
    comparisons = []
    for sparsity in cli.sparsities:
        v, t = by.get(("vtrans", sparsity)), by.get(("taylor", sparsity))
        entry = {"target_sparsity": sparsity}
        if v and t:
            entry["vtrans_minus_taylor_accuracy"] = v["accuracy"] - t["accuracy"]
        for method in cli.methods:
            f = by.get((method, sparsity))
            if v and f and plans[method][0] == "faster":
                key = method.replace(":", "_")
                entry[f"{key}_speedup_vs_vtrans"] = v["compression_seconds"] / f["compression_seconds"]
                entry[f"{key}_minus_vtrans_accuracy"] = f["accuracy"] - v["accuracy"]
            uncached = by.get((method + NO_CACHE, sparsity))
            if f and uncached:  # the same method with and without the teacher output cache
                key = method.replace(":", "_")
                entry[f"{key}_teacher_cache_speedup"] = uncached["compression_seconds"] / f["compression_seconds"]
                entry[f"{key}_teacher_cache_accuracy_change"] = f["accuracy"] - uncached["accuracy"]
        comparisons.append(entry)
        print(json.dumps(entry))
    result["comparisons"] = comparisons
    write(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
