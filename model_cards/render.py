"""Model cards for pruned / searched models: YAML metadata + a filled template (huggingface_hub.ModelCard)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

TEMPLATES = Path(__file__).parent / "templates"


def _fmt_int(value: float) -> str:
    return f"{int(value):,}"


def _is_hub_id(name: str | None) -> bool:
    """``owner/name`` that is not a local folder (model cards only link Hub models as base_model)."""
    return bool(name) and str(name).count("/") == 1 and not Path(str(name)).exists() and not str(name).startswith((".", "/"))


def render_vtrans_card(config, summary: dict | None = None, repo_or_path: str = "path/to/this/model") -> ModelCard:
    """Card of a VTrans-pruned model from its config's ``pruning_report`` and optional measured figures."""
    report = config.pruning_report
    summary = summary or {}
    base_model = config.original_sizes.get("name_or_path") or config.base_model_type
    rows = []
    if "dense_accuracy" in summary:
        rows = [
            "| | dense | pruned |",
            "|---|---|---|",
            f"| accuracy ({summary.get('dataset', 'eval set')}) | {summary['dense_accuracy']:.4f} | {summary['pruned_accuracy']:.4f} |",
            f"| latency, batch of {summary.get('latency_batch_size', 32)} (s) | {summary['dense_latency_s']:.4f} | "
            f"{summary['pruned_latency_s']:.4f} |",
        ]
    evaluation = "\n".join(rows) if rows else "Not evaluated when this card was written."
    text = (TEMPLATES / "vtrans.md").read_text().format(
        title=f"{config.base_model_type} pruned with VTrans",
        repo_or_path=repo_or_path,
        base_model=base_model,
        variant=report.get("variant", "vtrans"),
        data_fraction=report.get("data_fraction", 1.0),
        budget=report.get("budget", {}).get("description", "n/a"),
        layer_sparsity=f"{report['layer_sparsity']:.1%}",
        params_dense=_fmt_int(report["params_dense"]["total"]),
        params_pruned=_fmt_int(report["params_pruned"]["total"]),
        total_sparsity=f"{report['total_sparsity']:.1%}",
        flops_seq_len=report["flops_seq_len"],
        flops_dense=f"{report['flops_dense']:.3g}",
        flops_pruned=f"{report['flops_pruned']:.3g}",
        hidden_dense=config.original_sizes.get("hidden_size", "?"),
        hidden_size=report["hidden_size"],
        num_heads=report["num_heads"],
        intermediate_sizes=report["intermediate_sizes"],
        evaluation=evaluation,
    )
    data = ModelCardData(
        library_name="transformers",
        tags=["hf-compress", "vtrans", "pruning", "structured-pruning"],
        base_model=base_model if _is_hub_id(base_model) else None,
        pipeline_tag="text-classification" if config.num_labels else None,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")
