"""RAMEN on citeulike-a (titles -> user tags), starting from the offline MiniLM, all variants side by side.

(a) the untrained encoder, (b) encoder training without graphs (NGAME-style cluster batches), (c) RAMEN with
the citation graph, (d) RAMEN with citation + co-readership graphs, (e) (c)/(d) plus the one-vs-all classifier
stage, and (cr) (c) with the citation graph re-weighted by the encoder's cosine similarities, normalised
(D^-1/2 W D^-1/2), pruned at --graph_min_weight and sampled by edge weight (selected with "cr" only), and (u)
RAMEN with the co-readership graph alone (selected with "u" only); (cs) / (ds) are (c) / (d) whose graph loss
does not use as negatives the anchors of in-batch points that share a label with the point
(``graph_negatives="shared_label"``; selected with "cs" / "ds" only); (db) is (d) with the graph weights chosen
online by the bandit (``graph_bandit=True``; selected with "db" only). Same seed, data, steps and schedule for every trained variant; reports P@1/3/5, nDCG@5, PSP@1/3/5,
training time, per-query inference latency (encode + label search, one query at a time) and the saved model
size, then the relative gains of (c)/(d) over (b). Writes JSON under benchmarks/results/.

    python benchmarks/ramen_citeulike.py --epochs 2 --output benchmarks/results/ramen_citeulike_cpu.json
    python benchmarks/ramen_citeulike.py --epochs 1 --max_train 4000 --threads 1 --variants b,cr \
        --output benchmarks/results/ramen_citeulike_cpu_reweight.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from hf_compress.data import minilm_path  # noqa: E402
from hf_compress.ramen import RamenEncoder  # noqa: E402
from hf_compress.ramen.data import load_citeulike  # noqa: E402
from hf_compress.ramen.predict import XCPredictor, evaluate_xc, label_vectors_with_points  # noqa: E402
from trainers import RamenTrainer, RamenTrainingArguments  # noqa: E402

# name -> (code selecting it in --variants, graph_weights template, extra RamenTrainingArguments)
VARIANTS = {
    "b_no_graph": ("b", "", {}),
    "c_citation": ("c", "citation={w}", {}),
    "d_citation_coread": ("d", "citation={w},coread={w}", {}),
    "u_coread": ("u", "coread={w}", {}),
    "c_citation_label_aware": ("cs", "citation={w}", {"graph_negatives": "shared_label"}),
    "d_citation_coread_label_aware": ("ds", "citation={w},coread={w}", {"graph_negatives": "shared_label"}),
    "c_citation_reweighted": ("cr", "citation={w}", {"graph_reweight": True}),
    # the graph weights picked online by the REINFORCE bandit (arms 0 / 0.1 / 0.2 / 0.5, reward: in-batch P@1 change)
    "d_citation_coread_bandit": ("db", "citation={w},coread={w}", {"graph_bandit": True}),
    # every sampled anchor is also a query whose positives are the labels carried over its edges (Aᵀ Y)
    "c_citation_anchor_labels": ("ca", "citation={w}", {"anchor_label_weight": None}),
    "d_citation_coread_anchor_labels": ("da", "citation={w},coread={w}", {"anchor_label_weight": None}),
    "u_coread_anchor_labels": ("ua", "coread={w}", {"anchor_label_weight": None}),
    # the anchor-label term alone (point -> anchor term off)
    "c_citation_anchor_labels_only": ("cao", "citation=0", {"anchor_label_weight": None}),
    "d_citation_coread_anchor_labels_only": ("dao", "citation=0,coread=0", {"anchor_label_weight": None}),
}
REPORTED = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")


def query_latency_ms(predictor: XCPredictor, texts: list[str], repeats: int = 200) -> dict:
    """Median / p95 ms of encode + top-5 search for one text at a time."""
    times = []
    for text in texts[:10]:
        predictor.predict(text, k=5)  # warm-up
    for text in texts[:repeats]:
        start = time.perf_counter()
        predictor.predict(text, k=5)
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return {"median_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}


def saved_size(predictor: XCPredictor) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        predictor.encoder.save_pretrained(folder)
        weights = os.path.getsize(Path(folder) / "model.safetensors")
    return {"encoder_params": sum(p.numel() for p in predictor.encoder.parameters()), "encoder_safetensors_bytes": weights}


def evaluate(predictor: XCPredictor, data) -> dict:
    metrics = evaluate_xc(predictor, data.test.texts, data.test.labels, train_labels=data.train.labels, ks=(1, 3, 5))
    return {k: round(v, 3) for k, v in metrics.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    parser.add_argument("--graph_weight", type=float, default=0.2)
    parser.add_argument("--cluster_size", type=int, default=16)
    parser.add_argument("--mined_negatives", type=int, default=0)
    parser.add_argument("--graph_min_weight", type=float, default=0.0,
                        help="(cr): drop re-weighted edges whose normalised weight is <= this.")
    parser.add_argument("--anchor_label_weight", type=float, default=0.5,
                        help="(ca/da/ua/cao/dao): weight of the anchor-as-query term with graph-carried labels.")
    parser.add_argument("--label_points_weight", default="",
                        help="Also evaluate every encoder with label vectors = W x text embedding + mean of the label's "
                             "train points, for each comma-separated W (the first as metrics_label_points, the others as "
                             "metrics_label_points_W); empty = text only.")
    parser.add_argument("--classifier_epochs", type=int, default=5)
    parser.add_argument("--variants", default="a,b,c,d,e")
    parser.add_argument("--max_train", type=int, default=0, help="Use only the first N train points (0 = all).")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="benchmarks/results/ramen_citeulike_cpu.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = set(args.variants.split(","))

    data = load_citeulike(seed=args.seed)
    if args.max_train:
        data = data.head(num_train=args.max_train)
    print(json.dumps(data.summary()), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    results: dict = {"config": vars(args), "data": data.summary(), "torch_threads": torch.get_num_threads(), "runs": {}}

    def record(name: str, predictor: XCPredictor, train_seconds: float, extra: dict | None = None) -> None:
        entry = {"metrics": evaluate(predictor, data), "train_seconds": round(train_seconds, 1)}
        if args.label_points_weight and predictor.classifier is None:
            # the same encoder, labels represented by w x text + mean of their train points (same index size)
            points = predictor.embed(data.train.texts)
            for i, weight in enumerate(float(w) for w in args.label_points_weight.split(",")):
                vectors = label_vectors_with_points(predictor.label_embeddings, points, data.train.labels, text_weight=weight)
                with_points = XCPredictor(predictor.encoder, predictor.tokenizer, data.label_texts, label_embeddings=vectors)
                key = "metrics_label_points" if i == 0 else f"metrics_label_points_{weight:g}"
                entry[key] = evaluate(with_points, data)
        entry["latency"] = query_latency_ms(predictor, data.test.texts)
        entry.update(saved_size(predictor))
        entry.update(extra or {})
        results["runs"][name] = entry
        print(name, json.dumps(entry), flush=True)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")

    if "a" in chosen:
        encoder = RamenEncoder.from_backbone(minilm_path())
        record("a_untrained", XCPredictor(encoder, tokenizer, data.label_texts), 0.0)

    trainers = {}
    for key, (code, template, extra_args) in VARIANTS.items():
        if code not in chosen and not (code in ("c", "d") and "e" in chosen):
            continue
        if "anchor_label_weight" in extra_args:
            extra_args = {**extra_args, "anchor_label_weight": args.anchor_label_weight}
        if extra_args.get("graph_reweight"):
            extra_args = {**extra_args, "graph_min_weight": args.graph_min_weight}
        encoder = RamenEncoder.from_backbone(minilm_path())
        train_args = RamenTrainingArguments(
            output_dir=tempfile.mkdtemp(prefix=f"ramen_{key}_"),
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=args.learning_rate,
            warmup_steps=0.1,
            lr_scheduler_type="linear",
            logging_steps=20,
            save_strategy="no",
            report_to=[],
            seed=args.seed,
            graph_weights=template.format(w=args.graph_weight),
            cluster_size=args.cluster_size,
            mined_negatives=args.mined_negatives,
            classifier_epochs=args.classifier_epochs,
            disable_tqdm=True,
            **extra_args,
        )
        trainer = RamenTrainer(model=encoder, args=train_args, data=data, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        history = [log for log in trainer.state.log_history if "loss" in log]
        extra = {"train_log_last": history[-1] if history else None}
        if trainer.graph_edge_stats:
            extra["graph_edges"] = trainer.graph_edge_stats
            extra["graph_reweight_log"] = [log for log in trainer.state.log_history if "graph_reweight_seconds" in log]
        record(key, trainer.build_predictor(), seconds, extra)
        trainers[key] = (trainer, seconds)

    if "e" in chosen:
        for key in ("c_citation", "d_citation_coread"):
            if key not in trainers:
                continue
            trainer, seconds = trainers[key]
            start = time.perf_counter()
            summary = trainer.train_classifier()
            extra = time.perf_counter() - start
            record(f"e_{key[2:]}_classifier", trainer.build_predictor(), seconds + extra,
                   {"classifier": summary, "classifier_seconds": round(extra, 1)})

    runs = results["runs"]
    if "b_no_graph" in runs:
        base = runs["b_no_graph"]["metrics"]
        gains = {}
        for name, entry in runs.items():
            if name == "b_no_graph" or name == "a_untrained":
                continue
            gains[name] = {m: round(100 * (entry["metrics"][m] / base[m] - 1), 2) for m in ("P@5", "PSP@5", "P@1", "nDCG@5")}
        results["relative_gain_over_b_percent"] = gains
        if "metrics_label_points" in runs["b_no_graph"]:
            base = runs["b_no_graph"]["metrics_label_points"]
            results["relative_gain_over_b_percent_label_points"] = {
                name: {m: round(100 * (entry["metrics_label_points"][m] / base[m] - 1), 2) for m in ("P@5", "PSP@5", "P@1")}
                for name, entry in runs.items() if name != "b_no_graph" and "metrics_label_points" in entry
            }
            print("with label vectors from text + points, relative gains over (b), %:",
                  json.dumps(results["relative_gain_over_b_percent_label_points"]), flush=True)
        print("relative gains over (b), %:", json.dumps(gains), flush=True)
    print("\n" + " | ".join(["variant", *REPORTED, "train s", "query ms", "params"]))
    for name, entry in runs.items():
        row = [name] + [f"{entry['metrics'][m]:.2f}" for m in REPORTED]
        row += [f"{entry['train_seconds']:.0f}", f"{entry['latency']['median_ms']:.1f}", str(entry["encoder_params"])]
        print(" | ".join(row))
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
