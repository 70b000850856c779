"""Model cards for pruned / searched models: YAML metadata + a filled template (huggingface_hub.ModelCard).

Every number on a card comes from the run (the config's ``pruning_report`` and the run summary passed in);
the template holds none. Rendering writes the structure plot next to the card and validates the result
offline (``validate_card``), so a card with a missing metric or a broken image link is never returned.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evidence import command_text, current_command, describe_hardware, eval_results_from_summary
from .plots import plot_pruning_structure
from .validate import CardValidationError, eval_result_problems, validate_card

TEMPLATES = Path(__file__).parent / "templates"
STRUCTURE_PLOT = "pruning_structure.png"
PROBE_REPORT = "probe_report.md"
_TASKS = {  # architecture suffix -> (pipeline tag, Auto class)
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
}


def _fmt_int(value: float) -> str:
    return f"{int(value):,}"


def _is_hub_id(name: str | None) -> bool:
    """``owner/name`` that is not a local folder (model cards only link Hub models as base_model)."""
    name = str(name or "")
    return name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/"))


def _task(config) -> tuple[str, str]:
    for arch in config.architectures or []:
        for suffix, task in _TASKS.items():
            if arch.endswith(suffix):
                return task
    return "feature-extraction", "AutoModel"


def _data_fractions(report: dict) -> str:
    """'data fraction 0.03', plus the fine-tune's own slice when it had one."""
    fraction = report.get("data_fraction", 1.0)
    finetune = report.get("finetune_data_fraction")
    text = f"data fraction {fraction}"
    return text if finetune is None or finetune == fraction else f"{text}, fine-tune data fraction {finetune}"


def _budget_rows(report: dict) -> tuple[str, str]:
    """(requested, realised) budget lines, each with its share of the dense model."""
    budget = report.get("budget")
    if not budget:
        return "none (units chosen by the gates / an explicit plan)", "n/a"
    metric, dense = budget["metric"], budget["dense"]
    units = {"layer_params": "transformer-layer parameters", "total_params": "parameters", "flops": "FLOPs"}
    unit = units.get(metric, metric)
    fmt = (lambda v: f"{v:.3g}") if metric == "flops" else (lambda v: f"{v:,.0f}")  # noqa: E731
    target, realised = budget["target"], budget["realised"]
    requested = f"{budget.get('description') or metric}: ≤ {fmt(target)} {unit} ({target / dense:.1%} of dense)"
    got = f"{fmt(realised)} {unit} ({realised / dense:.1%} of dense, {1 - realised / dense:.1%} removed)"
    return requested, got


def _structure_table(report: dict, dense_heads: int | None, dense_ffn: int | None) -> str:
    rows = ["| layer | attention heads kept | FFN neurons kept | sub-layers removed |", "|---|---|---|---|"]
    of = lambda kept, dense: f"{kept} / {dense}" if dense else str(kept)  # noqa: E731
    for i, (heads, ffn) in enumerate(zip(report["num_heads"], report["intermediate_sizes"])):
        removed = [name for name, kept in (("attention", heads), ("FFN", ffn)) if kept == 0]
        rows.append(f"| {i} | {of(heads, dense_heads)} | {of(ffn, dense_ffn)} | {', '.join(removed) or '-'} |")
    return "\n".join(rows)


def _evaluation(summary: dict, eval_results: list[EvalResult]) -> str:
    if "dense_accuracy" not in summary and not eval_results:
        return "Not evaluated when this card was written."
    rows = ["| | dense | pruned |", "|---|---|---|"]
    dataset = summary.get("dataset", eval_results[0].dataset_name if eval_results else "eval set")
    if "dense_accuracy" in summary:
        rows.append(f"| accuracy ({dataset}) | {summary['dense_accuracy']:.4f} | {summary['pruned_accuracy']:.4f} |")
    if "dense_latency_s" in summary and "pruned_latency_s" in summary:
        batch = f", batch of {summary['latency_batch_size']}" if "latency_batch_size" in summary else " per batch"
        rows.append(f"| latency{batch} (s) | {summary['dense_latency_s']:.4f} | {summary['pruned_latency_s']:.4f} |")
    for result in eval_results if "dense_accuracy" not in summary else []:
        rows.append(f"| {result.metric_name or result.metric_type} ({result.dataset_name}) | - | {result.metric_value:.4f} |")
    return "\n".join(rows) + "\n\nThe pruned model's figures are also in the card's `model-index` metadata."


def _seconds(value: float | None) -> str:
    if value is None:
        return "not recorded"
    minutes, seconds = divmod(float(value), 60)
    return f"{value:.0f} s" if value < 120 else f"{value:.0f} s ({int(minutes)} min {seconds:.0f} s)"


def probing_section(link: str) -> str:
    """The card section that links an attention-probing report (``link`` relative to the card)."""
    return (
        "\n## Attention probing\n\nWhere each head looks (special tokens, the current token, the rest), dense vs "
        f"pruned, and which heads pruning removed: [{link}]({link}).\n"
    )


def _find_probe_report(output_dir: str | os.PathLike | None) -> str | None:
    """``probe_report.md`` in the card's folder or one level below (``hf-compress probe --output DIR/probe``)."""
    if output_dir is None:
        return None
    folder = Path(output_dir)
    found = [folder / PROBE_REPORT] if (folder / PROBE_REPORT).is_file() else sorted(folder.glob(f"*/{PROBE_REPORT}"))
    return found[0].relative_to(folder).as_posix() if found else None


def render_vtrans_card(
    config,
    summary: dict | None = None,
    repo_or_path: str = "path/to/this/model",
    *,
    output_dir: str | os.PathLike | None = None,
    eval_results: list[EvalResult] | None = None,
    command: str | Sequence[str] | None = None,
    hardware: str | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """Card of a VTrans-pruned model from its config's ``pruning_report`` and the run's measured figures.

    ``summary`` is the run summary (accuracies, latencies, ``dataset``, ``compression_seconds``,
    ``output_dir``). ``output_dir`` (default ``summary['output_dir']``) is where the card will be saved: the
    structure plot is written there and linked, and a ``probe_report.md`` found there is linked too.
    ``eval_results`` default to the summary's pruned accuracy; ``command`` defaults to this process's
    ``hf-compress`` command line; ``hardware`` to the report's, else this machine's. The card is validated
    offline before it is returned (``CardValidationError``).
    """
    report = config.pruning_report
    summary = summary or {}
    original = getattr(config, "original_sizes", {}) or {}
    base_model = original.get("name_or_path") or config.base_model_type
    output_dir = output_dir if output_dir is not None else summary.get("output_dir")
    eval_results = eval_results_from_summary(summary) if eval_results is None else list(eval_results)
    problems = eval_result_problems(eval_results)
    if problems:  # checked before serialising: a None value would vanish from model-index
        raise CardValidationError("Model card is invalid:\n  - " + "\n  - ".join(problems))
    pipeline_tag, auto_class = _task(config)
    dense_heads, dense_ffn = original.get("num_attention_heads"), original.get("intermediate_size")
    command = command_text(command) or summary.get("command") or current_command()
    hardware = hardware or report.get("hardware") or summary.get("hardware")
    if hardware is None:
        hardware = f"{describe_hardware()} (the machine that rendered this card)"

    structure_plot = ""
    if output_dir is not None and dense_heads and dense_ffn:
        plot_pruning_structure(report["num_heads"], report["intermediate_sizes"], dense_heads, dense_ffn,
                               Path(output_dir) / STRUCTURE_PLOT)
        structure_plot = f"![Kept attention heads and FFN neurons per layer]({STRUCTURE_PLOT})"
    report_link = _find_probe_report(output_dir)
    probing = probing_section(report_link) if report_link else ""
    requested, realised = _budget_rows(report)
    text = (TEMPLATES / "vtrans.md").read_text(encoding="utf-8").format(
        title=f"{config.base_model_type} pruned with VTrans",
        auto_class=auto_class,
        repo_or_path=repo_or_path,
        base_model=base_model,
        variant=report.get("variant", summary.get("variant", "vtrans")),
        data_fractions=_data_fractions(report),
        budget_requested=requested,
        budget_realised=realised,
        layer_sparsity=f"{report['layer_sparsity']:.1%}",
        params_dense=_fmt_int(report["params_dense"]["total"]),
        params_pruned=_fmt_int(report["params_pruned"]["total"]),
        total_sparsity=f"{report['total_sparsity']:.1%}",
        flops_seq_len=report["flops_seq_len"],
        flops_dense=f"{report['flops_dense']:.3g}",
        flops_pruned=f"{report['flops_pruned']:.3g}",
        flops_reduction=f"{1 - report['flops_pruned'] / report['flops_dense']:.1%}",
        hidden_dense=original.get("hidden_size", "?"),
        hidden_size=report["hidden_size"],
        structure_table=_structure_table(report, dense_heads, dense_ffn),
        structure_plot=structure_plot,
        evaluation=_evaluation(summary, eval_results),
        compression_time=_seconds(report.get("compression_seconds", summary.get("compression_seconds"))),
        hardware=hardware,
        command=command or "# not recorded: pass command=... to model_cards.render_vtrans_card",
        probing=probing,
    )
    if model_name is None:
        default_name = repo_or_path == "path/to/this/model"
        model_name = f"{Path(str(base_model)).name}-vtrans" if default_name else Path(repo_or_path).name
    data = ModelCardData(
        library_name="transformers",
        tags=["hf-compress", "vtrans", "pruning", "structured-pruning"],
        base_model=base_model if _is_hub_id(base_model) else None,
        pipeline_tag=pipeline_tag,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
    validate_card(card, folder=output_dir)
    return card
