"""``hf-compress probe``: the attention-probing report of a (pruned) encoder, as Markdown with PNG figures.

Per head it measures the attention mass on special tokens, on the current token and on the rest (VTrans,
Sec. "attention-based probing"); draws layers x heads heatmaps for the dense and the pruned model; and, for
a pruned model, relates what pruning removed to the dense heads' scores with a Spearman correlation.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .plots import plot_head_heatmaps, plot_removed_vs_score
from .render import PROBE_REPORT, probing_section
from .validate import validate_card

logger = logging.getLogger(__name__)

HEATMAPS = "attention_heatmaps.png"
COMPARISON_PLOT = "pruning_vs_probing.png"
RESULTS = "probe_results.json"
MEASURES = ("special", "current", "rest")


def load_probe_texts(data: str, max_examples: int, text_column: str = "sentence") -> list[str]:
    """Sentences to probe: ``sst2`` (offline GLUE validation split) or a .txt/.csv/.tsv/.json/.jsonl file."""
    if max_examples < 1:
        raise ValueError(f"--max_examples must be at least 1, got {max_examples}.")
    if data == "sst2":
        from hf_compress.data import load_sst2

        return list(load_sst2("test", limit=max_examples)["sentence"])
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"Probe data {data!r} is neither 'sst2' nor an existing file; pass --data sst2 or a path.")
    ext = path.suffix.lower()
    if ext == ".txt":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif ext in (".csv", ".tsv", ".json", ".jsonl"):
        import datasets

        kind = "csv" if ext in (".csv", ".tsv") else "json"
        extra = {"delimiter": "\t"} if ext == ".tsv" else {}
        table = datasets.load_dataset(kind, data_files=str(path), split="train", **extra)
        if text_column not in table.column_names:
            raise ValueError(f"{path}: no column {text_column!r} (columns: {table.column_names}); pass --text_column.")
        texts = [str(t) for t in table[text_column]]
    else:
        raise ValueError(f"{path}: unsupported file type {ext!r}; use .txt (one sentence a line), .csv, .tsv, .json or .jsonl.")
    if not texts:
        raise ValueError(f"{path} holds no text to probe.")
    return texts[:max_examples]


def special_token_ids(tokenizer) -> list[int]:
    """Ids of [CLS]/[SEP] or <s>/</s> (BOS/EOS): the tokens VTrans calls special. Padding is masked anyway."""
    ids = {getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "sep", "bos", "eos")}
    ids.discard(None)
    if not ids:
        raise ValueError(f"{type(tokenizer).__name__} defines none of cls/sep/bos/eos tokens; cannot probe special-token attention.")
    return sorted(ids)


def _load(path: str):
    from transformers import AutoModel

    import hf_compress  # noqa: F401  (registers vtrans_encoder with the Auto classes)

    if not (os.path.isdir(path) or path.count("/") == 1):
        raise FileNotFoundError(f"Model {path!r} is not a local folder or a Hub id; pass a folder written by save_pretrained.")
    return AutoModel.from_pretrained(path).eval()


def _tokenizer(*paths: str | None):
    from transformers import AutoTokenizer

    errors = []
    for path in paths:
        if path is None:
            continue
        try:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError, TypeError) as err:
            errors.append(f"{path}: {err}")
    raise FileNotFoundError(
        "No tokenizer found (" + "; ".join(errors) + "). Save the tokenizer next to the model or pass --dense with "
        "the dense model folder (its tokenizer is used)."
    )


def _batches(tokenizer, texts: list[str], max_length: int, batch_size: int) -> list[dict]:
    return [
        dict(tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        for i in range(0, len(texts), batch_size)
    ]


@dataclass
class ProbeReport:
    """Where the report went and its headline numbers."""

    path: Path
    figures: list[Path]
    spearman: float | None
    level: str | None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _head_table(name: str, measures: dict[str, np.ndarray]) -> list[str]:
    """One row per existing head; ``name`` says whether columns are dense heads or kept-head slots."""
    positions = "kept slot" if "slot" in name else "head"
    rows = [f"| layer | {positions} | special | current | rest |", "|---|---|---|---|---|"]
    special = measures["special"]
    for layer in range(special.shape[0]):
        for head in range(special.shape[1]):
            if np.isnan(special[layer, head]):
                continue
            values = " | ".join(_fmt(float(measures[m][layer, head])) for m in MEASURES)
            rows.append(f"| {layer} | {head} | {values} |")
    return [f"### {name}", "", *rows, ""]


def write_probe_report(
    model_path: str,
    output_dir: str | os.PathLike,
    data: str = "sst2",
    dense_path: str | None = None,
    max_examples: int = 64,
    max_length: int = 64,
    batch_size: int = 16,
    text_column: str = "sentence",
) -> ProbeReport:
    """Probe ``model_path`` (and its dense model) on ``data``; write ``probe_report.md`` + figures to ``output_dir``.

    A pruned model's dense model is ``dense_path``, else its config's ``original_sizes['name_or_path']`` when
    that folder exists. When ``output_dir`` lies inside the model folder and that folder has a model card
    (README.md), the card gets a link to the report.
    """
    from hf_compress.vtrans.probing import align_to_dense, compare_with_pruning, kept_head_index, probe_attention

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model = _load(model_path)
    report = getattr(model.config, "pruning_report", None) if model.config.model_type == "vtrans_encoder" else None
    inferred_dense = False
    if report is not None and dense_path is None:
        candidate = (getattr(model.config, "original_sizes", {}) or {}).get("name_or_path")
        if candidate and os.path.isdir(candidate):
            dense_path, inferred_dense = candidate, True
    tokenizer = _tokenizer(model_path, dense_path)
    texts = load_probe_texts(data, max_examples, text_column)
    batches = _batches(tokenizer, texts, max_length, batch_size)
    specials = special_token_ids(tokenizer)
    logger.info("Probing %s on %d sentences of %s", model_path, len(texts), data)

    probes: dict[str, object] = {}
    dense_heads = None
    if dense_path is not None and report is not None:
        dense = _load(dense_path)
        probes["dense"] = probe_attention(dense, batches, specials, max_batches=None)
        dense_heads = probes["dense"].special.shape[1]
        del dense
    name = "pruned" if report is not None else "dense"
    probes[name] = probe_attention(model, batches, specials, max_batches=None)

    head_index = None
    if report is not None:
        heads_dense = dense_heads or (getattr(model.config, "original_sizes", {}) or {}).get("num_attention_heads")
        head_index = kept_head_index(report, heads_dense) if heads_dense else None
    panels = {}
    for key, probe in probes.items():
        aligned = key == "pruned" and head_index is not None
        label = key if key != "pruned" or aligned else "pruned (kept-head slots)"
        panels[label] = {
            m: align_to_dense(getattr(probe, m), head_index, heads_dense) if aligned else getattr(probe, m) for m in MEASURES
        }
    figures = [Path(plot_head_heatmaps(panels, output / HEATMAPS))]

    comparison = None
    if report is not None and "dense" in probes:
        comparison = compare_with_pruning(probes["dense"].trivial, report["num_heads"], head_index)
        figures.append(Path(plot_removed_vs_score(comparison.scores, comparison.removed, comparison.level,
                                                  output / COMPARISON_PLOT)))

    lines = [
        "# Attention probing report", "",
        f"- model: `{model_path}`" + (" (pruned with VTrans)" if report is not None else ""),
    ]
    if "dense" in probes and report is not None:
        lines.append(f"- dense model: `{dense_path}`" + (" (from the pruned config's `original_sizes`)" if inferred_dense else ""))
    lines += [
        f"- data: {data}, {len(texts)} sentences, {next(iter(probes.values())).tokens} query tokens (max length {max_length})",
        f"- special tokens: {', '.join(repr(t) for t in tokenizer.convert_ids_to_tokens(specials))}",
        "",
        "Per head, the mean share of each query token's attention on **special** tokens, on the **current** token "
        "(itself) and on the **rest** (neither). A special token attending to itself counts in both special and "
        "current; `1 - rest` is the mass on special-or-current tokens, the score the VTrans paper links to pruning "
        "(heads attending to special / current tokens go first).", "",
        "## Heatmaps (layers x heads)", "",
        f"![Attention mass per head: special, current, rest]({HEATMAPS})", "",
    ]
    if report is not None and head_index is None:
        lines += [
            "Grey cells: heads the model does not have. This pruned model's config does not record which original heads "
            "each layer kept (`pruning_report['head_index']`), so its heads are drawn in kept order, not at their "
            "dense positions.", "",
        ]
    lines += ["## What pruning removed vs the dense probing scores", ""]
    if comparison is None:
        lines += [
            "Not compared: " + ("the model is not a pruned `vtrans_encoder` model." if report is None else
                                "no dense model; pass `--dense DENSE_MODEL` (the model it was pruned from)."), "",
        ]
    else:
        rho = "undefined (one side does not vary)" if comparison.rho is None else f"{comparison.rho:+.3f}"
        if comparison.level == "head":
            lines += [
                f"Spearman correlation between a head's dense special-or-current mass and being removed, over "
                f"{comparison.n} heads: **{rho}**. Mean score of removed heads {_fmt(comparison.mean_score_removed)}, "
                f"of kept heads {_fmt(comparison.mean_score_kept)}.",
            ]
        else:
            lines += [
                "The pruned config records how many heads each layer kept but not which ones (no "
                "`pruning_report['head_index']`), so the comparison is per layer: the layer's mean dense "
                f"special-or-current mass vs the share of its heads removed, over {comparison.n} layers: **{rho}**.", "",
                "| layer | mean dense score | heads kept | share removed |", "|---|---|---|---|",
                *[f"| {i} | {_fmt(float(comparison.scores[i].mean()))} | {report['num_heads'][i]} / "
                  f"{comparison.scores.shape[1]} | {comparison.removed[i]:.0%} |" for i in range(comparison.n)],
            ]
        lines += [
            "", "A positive correlation agrees with the paper (heads attending to special / current tokens are pruned "
            "first).", "", f"![Removed heads vs dense probing scores]({COMPARISON_PLOT})", "",
        ]
    lines += ["## Per-head masses", ""]
    for label, measures in panels.items():
        lines += _head_table(label, measures)
    path = output / PROBE_REPORT
    path.write_text("\n".join(lines), encoding="utf-8")
    results = {
        "model": model_path, "dense_model": dense_path, "data": data, "sentences": len(texts),
        "special_token_ids": specials, "probes": {k: p.as_dict() for k, p in probes.items()},
        "comparison": comparison.as_dict() if comparison is not None else None,
    }
    (output / RESULTS).write_text(json.dumps(results, indent=1), encoding="utf-8")
    _link_from_card(model_path, path)
    return ProbeReport(path=path, figures=figures, spearman=comparison.rho if comparison else None,
                       level=comparison.level if comparison else None)


def _link_from_card(model_path: str, report_path: Path) -> None:
    """Add a link to the report to the model's card when the report lives inside the model folder."""
    from huggingface_hub import ModelCard

    folder, card_path = Path(model_path).resolve(), Path(model_path) / "README.md"
    relative = os.path.relpath(report_path.resolve(), folder)
    if not card_path.is_file() or relative.startswith(".."):
        return
    card = ModelCard.load(card_path)
    if f"]({Path(relative).as_posix()})" in card.text:
        return
    card.text = card.text.rstrip("\n") + "\n" + probing_section(Path(relative).as_posix())
    validate_card(card, folder=folder)
    card.save(card_path)
