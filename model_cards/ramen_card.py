"""Model card of a RAMEN predictor folder, from the trainer's measured metrics (never typed-in numbers)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evidence import command_text, current_command, describe_hardware
from .render import TEMPLATES, _is_hub_id, _seconds
from .validate import CardValidationError, eval_result_problems, validate_card

REPORTED = ("P@1", "P@3", "P@5", "nDCG@1", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5", "PSnDCG@5")


def ramen_eval_results(metrics: dict[str, float], dataset: str) -> list[EvalResult]:
    """XC metrics (percent) as model-index entries; refuses missing or non-finite values."""
    results = []
    for name in REPORTED:
        value = metrics.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"Metric {name} must be a finite number measured by the run, got {value!r}.")
        results.append(EvalResult(
            task_type="text-classification", task_name="Extreme multi-label classification", dataset_type=dataset,
            dataset_name=dataset, dataset_split="test", metric_type=name.lower().replace("@", "_at_"),
            metric_name=name, metric_value=float(value), verified=False,
        ))
    return results


def render_ramen_card(
    metrics: dict[str, float],
    training: dict,
    repo_or_path: str = "path/to/this/model",
    *,
    output_dir: str | os.PathLike | None = None,
    command: str | Sequence[str] | None = None,
    hardware: str | None = None,
) -> ModelCard:
    """Card from the test ``metrics`` (``P@k`` ... in percent, without an ``eval_`` prefix) and ``training``
    (backbone, dataset, sizes, graph weights, options, seconds, params, fusion weight). Validated offline."""
    metrics = {k.split("_", 1)[1] if k.startswith(("eval_", "classifier_")) else k: v for k, v in metrics.items()}
    dataset = str(training.get("dataset", "xc-dataset"))
    eval_results = ramen_eval_results(metrics, dataset)
    problems = eval_result_problems(eval_results)
    if problems:
        raise CardValidationError("Model card is invalid:\n  - " + "\n  - ".join(problems))
    graphs = training.get("graph_weights") or {}
    rows = [f"| {name} | {metrics[name]:.2f} |" for name in REPORTED if name in metrics]
    fusion = training.get("fusion_weight")
    text = (TEMPLATES / "ramen.md").read_text(encoding="utf-8").format(
        title=f"RAMEN encoder for {dataset}",
        graphs=", ".join(graphs) if graphs else "none in this run",
        classifier_note=" and the one-vs-all classifier (`xc/classifier.safetensors`)" if fusion else "",
        repo_or_path=repo_or_path,
        base_model=training.get("backbone", "?"),
        dataset=dataset,
        num_train=training.get("num_train", "?"),
        num_labels=training.get("num_labels", "?"),
        graph_weights=", ".join(f"{k} ({v})" for k, v in graphs.items()) or "none",
        label_vectors={"text+points": "label text embedding mixed with the mean of its training points"}.get(
            training.get("label_vectors", "text"), "label text embedding"),
        margin=training.get("margin"), num_negatives=training.get("num_negatives"),
        cluster_size=training.get("cluster_size"), refresh=training.get("cluster_refresh_epochs"),
        epochs=training.get("epochs"), batch_size=training.get("batch_size"), learning_rate=training.get("learning_rate"),
        params=f"{training['params']:,}" if isinstance(training.get("params"), int) else "?",
        training_time=_seconds(training.get("train_seconds")),
        hardware=hardware or training.get("hardware") or describe_hardware(),
        fusion=f", re-scored with the classifier (fusion weight {fusion})" if fusion else "",
        prop_a=training.get("propensity_a", 0.55), prop_b=training.get("propensity_b", 1.5),
        metrics_table="| metric | value (%) |\n|---|---|\n" + "\n".join(rows) if rows else "Not evaluated.",
        command=command_text(command) or training.get("command") or current_command()
        or "# not recorded: pass command=... to model_cards.render_ramen_card",
    )
    backbone = str(training.get("backbone", ""))
    data = ModelCardData(
        library_name="sentence-transformers",
        tags=["hf-compress", "ramen", "extreme-classification", "sentence-transformers"],
        base_model=backbone if _is_hub_id(backbone) else None,
        pipeline_tag="sentence-similarity",
        model_name=(f"ramen-{dataset}" if repo_or_path == "path/to/this/model" else Path(repo_or_path).name)
        if eval_results else None,
        eval_results=eval_results or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
    validate_card(card, folder=output_dir)
    return card
