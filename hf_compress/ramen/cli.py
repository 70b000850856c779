"""``hf-compress ramen``: train a RAMEN encoder on an XC dataset, evaluate it, save a ready predictor.

Options are ``RamenScriptArguments`` (what data, which backbone) plus every ``RamenTrainingArguments`` field,
as flags or one JSON / YAML file, like the transformers example scripts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

_RAMEN_DEFAULTS = {
    "output_dir": "outputs/ramen-citeulike",
    "per_device_train_batch_size": "64",
    "learning_rate": "2e-5",
    "num_train_epochs": "1",
    "warmup_steps": "0.1",
    "logging_steps": "20",
    "save_strategy": "no",
    "report_to": "none",
    "graph_weights": "citation=0.2",
    "seed": "0",
}


@dataclass
class RamenScriptArguments:
    """Which XC data and which backbone (training options live in ``RamenTrainingArguments``)."""

    dataset: str = field(
        default="citeulike",
        metadata={"help": "'citeulike' (offline citeulike-a) or a folder in the Extreme Classification Repository format."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Encoder backbone folder (default: the offline all-MiniLM-L6-v2)."}
    )
    pooling: str = field(default="mean", metadata={"help": "mean | cls | max"})
    min_tag_frequency: int = field(default=5, metadata={"help": "citeulike: keep tags with at least this many papers."})
    test_fraction: float = field(default=0.2, metadata={"help": "citeulike: share of papers in the seeded test split."})
    split_seed: int = field(default=0, metadata={"help": "citeulike: seed of the train/test split."})
    max_train: int | None = field(default=None, metadata={"help": "Use only the first N training points."})
    evaluate_before: bool = field(default=True, metadata={"help": "Also report the untrained encoder's metrics."})
    export_onnx: bool = field(
        default=False,
        metadata={"help": "Also export the encoder to <saved>/onnx/encoder.onnx for onnxruntime queries "
                          "(XCPredictor.from_pretrained(dir, encoder_backend='onnxruntime'))."},
    )


def parse_ramen_args(argv: list[str]):
    from trainers import RamenTrainingArguments

    from ..cli import parse_dataclass_args

    return parse_dataclass_args((RamenScriptArguments, RamenTrainingArguments), argv, "hf-compress ramen", _RAMEN_DEFAULTS)


def load_dataset_for(script: RamenScriptArguments):
    from .data import load_citeulike, load_xc_repository

    if script.dataset == "citeulike":
        data = load_citeulike(min_tag_frequency=script.min_tag_frequency, test_fraction=script.test_fraction, seed=script.split_seed)
    elif os.path.isdir(script.dataset):
        data = load_xc_repository(script.dataset)
    else:
        raise FileNotFoundError(
            f"dataset {script.dataset!r} is neither 'citeulike' nor a folder; pass a folder with trn_X.txt, tst_X.txt, "
            "lbl_X.txt, trn_X_Y.txt and tst_X_Y.txt (Extreme Classification Repository format)."
        )
    if script.max_train:
        data = data.head(num_train=script.max_train)
    return data


def run_ramen(argv: list[str]) -> dict:
    """Train, evaluate (before / after / with classifier), save the predictor; returns the summary."""
    from transformers import AutoTokenizer

    from trainers import RamenTrainer

    from ..data import minilm_path
    from .modeling_ramen import RamenEncoder

    script, args = parse_ramen_args(argv)
    data = load_dataset_for(script)
    backbone = script.model_name_or_path or minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = RamenEncoder.from_backbone(backbone, pooling=script.pooling, max_seq_length=args.max_seq_length)
    trainer = RamenTrainer(model=model, args=args, data=data, processing_class=tokenizer)
    summary: dict = {"data": data.summary()}
    if script.evaluate_before:
        summary["untrained"] = trainer.evaluate(metric_key_prefix="untrained")
    trainer.train()
    summary["trained"] = trainer.evaluate()
    if args.classifier_epochs > 0:
        summary["classifier_stage"] = trainer.train_classifier()
        summary["trained_with_classifier"] = trainer.evaluate(metric_key_prefix="classifier")
    summary["saved_to"] = trainer.save_predictor()
    if script.export_onnx:
        from .onnx_encoder import export_encoder_onnx

        summary["onnx_encoder"] = str(export_encoder_onnx(trainer.model, tokenizer, summary["saved_to"]))
    with open(os.path.join(args.output_dir, "ramen_results.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    return summary


def print_summary(summary: dict) -> None:
    rows = [(name, summary[name]) for name in ("untrained", "trained", "trained_with_classifier") if name in summary]
    keys = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@3", "PSP@5")
    print("\n" + " | ".join(["model", *keys]))
    for name, metrics in rows:
        values = {k.split("_", 1)[1]: v for k, v in metrics.items() if "_" in k}
        print(" | ".join([name] + [f"{values.get(k, float('nan')):.2f}" for k in keys]))
    print(f"\nSaved predictor (sentence-transformers + label index): {summary['saved_to']}")
    if "onnx_encoder" in summary:
        print(f"ONNX query encoder (onnxruntime): {summary['onnx_encoder']}")
