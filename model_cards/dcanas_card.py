"""Model card of a DCA-NAS network from its search results (and its measured test accuracy once trained)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evidence import command_text, current_command, describe_hardware
from .render import TEMPLATES, _fmt_int, _seconds
from .validate import CardValidationError, eval_result_problems, validate_card


def _number(value, unit: str = "") -> str:
    if value is None:
        return "not recorded"
    return f"{_fmt_int(value)}{unit}" if float(value) >= 1000 else f"{float(value):.4g}{unit}"


def render_dcanas_card(
    config,
    search: dict | None = None,
    repo_or_path: str = "path/to/this/model",
    *,
    test_accuracy: float | None = None,
    dataset: str = "cifar10",
    output_dir: str | os.PathLike | None = None,
    command: str | Sequence[str] | None = None,
    hardware: str | None = None,
) -> ModelCard:
    """Card from the ``DCANASConfig``, the search results dict (``search_results.json``) and, after training,
    the measured ``test_accuracy`` (a fraction; it becomes the model-index entry). Validated offline."""
    from hf_compress.nas.cost import network_cost

    search = search or {}
    cost = network_cost(config)
    eval_results = []
    if test_accuracy is not None:
        if isinstance(test_accuracy, bool) or not math.isfinite(float(test_accuracy)):
            raise ValueError(f"test_accuracy must be a finite number measured by the run, got {test_accuracy!r}.")
        eval_results.append(EvalResult(
            task_type="image-classification", task_name="Image Classification", dataset_type=dataset,
            dataset_name=dataset.upper() if dataset == "cifar10" else dataset, dataset_split="test",
            metric_type="accuracy", metric_name="Accuracy", metric_value=float(test_accuracy), verified=False,
        ))
    problems = eval_result_problems(eval_results)
    if problems:
        raise CardValidationError("Model card is invalid:\n  - " + "\n  - ".join(problems))
    metric = search.get("metric") or "none"
    unit = " ms" if metric == "latency" else ""
    met = search.get("budget_met")
    status = "within budget" if met else ("over budget" if met is False else "no budget")
    if search.get("repaired"):
        status += ", repaired greedily after the search"
    low_high = search.get("feasible_range")
    if config.search_space == "nb201":
        network = f"NAS-Bench-201 skeleton, C={config.init_channels}, {config.cells_per_stage} cells per stage"
    else:
        network = f"DARTS skeleton, C={config.init_channels}, {config.num_layers} cells"
    evaluation = "## Evaluation\n\n" if test_accuracy is not None else "## Training status\n\n"
    evaluation += (f"Test accuracy on {dataset}: **{100 * test_accuracy:.2f}%** (measured after training)."
                   if test_accuracy is not None else "Not trained yet: this folder holds the searched architecture with "
                   "freshly initialised weights (`hf-compress nas train` trains it).")
    text = (TEMPLATES / "dcanas.md").read_text(encoding="utf-8").format(
        title=f"DCA-NAS network ({config.search_space})",
        space="NAS-Bench-201" if config.search_space == "nb201" else "DARTS",
        budget_metric=metric,
        repo_or_path=repo_or_path,
        genotype=config.genotype.replace("|", "\\|"),  # NB201 strings are full of pipes: escape them in the table
        network=network,
        params=_fmt_int(cost.params),
        macs=_fmt_int(cost.macs),
        device_budget=_number(search.get("device_budget"), unit),
        search_budget=_number(search.get("search_budget"), unit),
        derived_cost=_number(search.get("derived_cost"), unit),
        budget_status=status,
        feasible_range=f"{_number(low_high[0], unit)} to {_number(low_high[1], unit)}" if low_high else "not recorded",
        steps=search.get("steps", "?"),
        wall_time=_seconds(search.get("wall_time_s")),
        peak_memory=f"{search['peak_rss_mb']:.0f} MB RSS" if search.get("peak_rss_mb") else "not recorded",
        hardware=hardware or search.get("hardware") or describe_hardware(),
        evaluation=evaluation,
        command=command_text(command) or search.get("command") or current_command()
        or "# not recorded: pass command=... to model_cards.render_dcanas_card",
    )
    data = ModelCardData(
        library_name="transformers",
        tags=["hf-compress", "dca-nas", "neural-architecture-search", config.search_space],
        pipeline_tag="image-classification",
        model_name=f"dcanas-{config.search_space}" if eval_results else None,
        eval_results=eval_results or None,
        metrics=["accuracy"] if eval_results else None,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
    validate_card(card, folder=output_dir)
    return card
