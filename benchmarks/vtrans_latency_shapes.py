"""Inference latency of pruned encoder shapes against the dense model, measured interleaved on this machine.

``vtrans_sst2.py`` times each pruned model once, right after it was trained, and the dense model once at the start
of the run: on a shared VM the ratio then moves with whatever else the machine did in between (0.53 and 0.74 for
nearly the same 50% shape on two runs here). Latency depends on the shapes, not on the weights, so this script
rebuilds every shape recorded in a ``vtrans_sst2`` result JSON as a ``PrunedEncoderForSequenceClassification``
(random weights), and times all of them and the dense model (MiniLM with a fresh 2-label head) in turn, round after
round, on the same padded batch of real SST-2 test sentences. Each model's figure is the median over rounds of its
per-round median.

Two ratios per shape: against the dense ``BertForSequenceClassification`` (what a user replaces) and against the
full shape built with our own pruned-model class (the same code path as the pruned model, so the ratio is the
pruning alone).

    python benchmarks/vtrans_latency_shapes.py benchmarks/results/vtrans_sst2_cpu50_fullteacher.json --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics

import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

import hf_compress  # noqa: F401
from hf_compress.data import load_sst2, load_tokenizer, minilm_path, tokenize
from hf_compress.evaluation import latency, latency_batch
from hf_compress.vtrans import dense_shape, get_adapter
from hf_compress.vtrans.materialize import TASK_CLASSES, pruned_config

FULL = "full shape, pruned-model class"  # the dense sizes in our class: the ratio to it is the pruning alone


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="vtrans_sst2 result JSON(s) whose rows hold the pruned shapes")
    p.add_argument("--model", default=None, help="dense model folder (default: the offline MiniLM)")
    p.add_argument("--sparsity", type=float, default=None, help="only rows at this target sparsity")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads while timing")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds over all models")
    p.add_argument("--repeats", type=int, default=20, help="timed forward passes per model and round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args()


def main() -> None:
    cli = parse()
    torch.manual_seed(cli.seed)
    torch.set_num_threads(cli.threads)
    source = cli.model or minilm_path()
    tokenizer = load_tokenizer(source)
    dense = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).eval()
    test = tokenize(load_sst2("test"), tokenizer, max_length=cli.max_length)
    batch = latency_batch(test, DataCollatorWithPadding(tokenizer), cli.batch_size, seed=cli.seed)
    adapter, full = get_adapter(dense), dense_shape(dense)

    def build(shape):
        config = pruned_config(dense, adapter, shape, "ForSequenceClassification")
        return TASK_CLASSES["ForSequenceClassification"](config).eval()

    models = {"dense": dense, FULL: build(full)}
    shapes = {}
    for path in cli.results:
        with open(path, encoding="utf-8") as handle:
            recorded = json.load(handle)["rows"]
        for row in recorded:
            if cli.sparsity is not None and abs(row["target_sparsity"] - cli.sparsity) > 1e-9:
                continue
            name = f"{os.path.basename(path)}:{row['method']}@{row['target_sparsity']:g}"
            shape = dataclasses.replace(full, hidden_size=row["hidden_size"], num_heads=list(row["num_heads"]),
                                        intermediate_sizes=list(row["intermediate_sizes"]))
            shapes[name] = dict(hidden_size=row["hidden_size"], num_heads=row["num_heads"],
                                intermediate_sizes=row["intermediate_sizes"], params=row["params"],
                                run_latency_ratio=row["latency_ratio"])
            models[name] = build(shape)
    if len(models) == 2:
        raise SystemExit("No rows matched: check the result files and --sparsity.")

    per_round = {name: [] for name in models}
    with torch.inference_mode():
        for r in range(cli.rounds):
            for name, model in models.items():
                per_round[name].append(latency(model, batch, repeats=cli.repeats))
            print(f"round {r + 1}/{cli.rounds}: dense {per_round['dense'][-1] * 1e3:.2f} ms")
    median = {name: statistics.median(times) for name, times in per_round.items()}
    rows = []
    for name, info in shapes.items():
        row = {"model": name, **info, "latency_s": median[name], "latency_s_per_round": per_round[name],
               "ratio_vs_dense": median[name] / median["dense"],
               "ratio_vs_full_shape": median[name] / median[FULL],
               "ratio_vs_dense_per_round": [a / b for a, b in zip(per_round[name], per_round["dense"])]}
        rows.append(row)
        spread = row["ratio_vs_dense_per_round"]
        print(f"{name}: {median[name] * 1e3:.2f} ms, ratio {row['ratio_vs_dense']:.2f} vs dense "
              f"(rounds {min(spread):.2f}-{max(spread):.2f}), {row['ratio_vs_full_shape']:.2f} vs the full shape; "
              f"in its training run {info['run_latency_ratio']:.2f}")
    print(f"dense {median['dense'] * 1e3:.2f} ms, full shape in the pruned-model class "
          f"{median[FULL] * 1e3:.2f} ms")
    result = {
        "benchmark": "vtrans_latency_shapes", "device": "cpu", "cpu": platform.processor() or platform.machine(),
        "config": vars(cli), "batch_shape": list(batch["input_ids"].shape),
        "dense_latency_s": median["dense"], "dense_latency_s_per_round": per_round["dense"],
        "full_shape_latency_s": median[FULL], "rows": rows,
    }
    out = cli.out or os.path.join("benchmarks", "results", "vtrans_latency_shapes.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
