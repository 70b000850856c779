"""Model cards of VTrans-pruned models: rendering, the structure plot, offline validation, model-index."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml
from helpers import tiny_model
from huggingface_hub import EvalResult, ModelCard, metadata_eval_result
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from PIL import Image

from hf_compress.vtrans import KeepPlan, dense_shape, materialize, resolve_budget
from model_cards import CardValidationError, render_vtrans_card, validate_card
from model_cards.plots import DPI, STRUCTURE_FIGSIZE

SUMMARY = {
    "dataset": "sst2", "dense_accuracy": 0.9125, "pruned_accuracy": 0.8875, "dense_latency_s": 0.0123,
    "pruned_latency_s": 0.0061, "latency_batch_size": 8, "compression_seconds": 321.0,
}
COMMAND = ["hf-compress", "vtrans", "--target_sparsity", "0.4", "--output_dir", "out"]


@pytest.fixture(scope="module")
def pruned_config():
    """A tiny BERT pruned with an explicit plan: layer 1 loses its attention, layer 2 its FFN."""
    model = tiny_model("bert", "seq-cls")
    plan = KeepPlan(
        hidden=np.arange(28),
        heads=[np.array([0, 2]), np.array([], dtype=int), np.array([1, 2, 3])],
        ffn=[np.arange(40), np.arange(64), np.array([], dtype=int)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = materialize(model, budget=resolve_budget(dense_shape(model), target_sparsity=0.4), plan=plan)
    pruned.config.pruning_report.update(variant="faster", data_fraction=0.5, compression_seconds=321.0)
    return pruned.config


def _render(config, folder, **kwargs):
    kwargs.setdefault("command", COMMAND)
    kwargs.setdefault("hardware", "1 x test accelerator")
    card = render_vtrans_card(config, {**SUMMARY, "output_dir": str(folder)}, **kwargs)
    card.save(folder / "README.md")
    return card


def test_card_has_the_evidence_and_validates_offline(pruned_config, tmp_path):
    card = _render(pruned_config, tmp_path)
    text = (tmp_path / "README.md").read_text()
    report = pruned_config.pruning_report
    assert "variant faster (data fraction 0.5)" in text
    pruned_config.pruning_report["finetune_data_fraction"] = 0.75
    _render(pruned_config, tmp_path / "ft")
    assert "variant faster (data fraction 0.5, fine-tune data fraction 0.75)" in (tmp_path / "ft" / "README.md").read_text()
    pruned_config.pruning_report["finetune_data_fraction"] = 0.5  # the same slice: said once
    _render(pruned_config, tmp_path / "same")
    assert "variant faster (data fraction 0.5)" in (tmp_path / "same" / "README.md").read_text()
    del pruned_config.pruning_report["finetune_data_fraction"]
    assert "budget requested | 40% of the transformer-layer parameters removed" in text
    realised = report["budget"]["realised"]
    assert f"budget realised | {realised:,.0f} transformer-layer parameters" in text
    assert f"{report['params_dense']['total']:,} → {report['params_pruned']['total']:,}" in text
    assert f"{report['flops_dense']:.3g} → {report['flops_pruned']:.3g}" in text
    # per-layer kept structure, with the removed sub-layers named
    assert "| 0 | 2 / 4 | 40 / 64 | - |" in text
    assert "| 1 | 0 / 4 | 64 / 64 | attention |" in text
    assert "| 2 | 3 / 4 | 0 / 64 | FFN |" in text
    # metrics from the run, time, hardware, reproduce command, how to load
    assert "| accuracy (sst2) | 0.9125 | 0.8875 |" in text and "| latency, batch of 8 (s) | 0.0123 | 0.0061 |" in text
    assert "321 s (5 min 21 s)" in text and "1 x test accelerator" in text
    assert "hf-compress vtrans --target_sparsity 0.4 --output_dir out" in text
    assert "AutoModelForSequenceClassification.from_pretrained" in text
    assert "![Kept attention heads and FFN neurons per layer](pruning_structure.png)" in text
    results = validate_card(tmp_path / "README.md")
    assert [(r.metric_type, r.metric_value, r.dataset_type, r.dataset_config) for r in results] == [
        ("accuracy", 0.8875, "nyu-mll/glue", "sst2")
    ]
    assert validate_card(card, folder=tmp_path) == results


def test_model_index_round_trips(pruned_config, tmp_path):
    _render(pruned_config, tmp_path, repo_or_path="me/bert-vtrans")
    loaded = ModelCard.load(tmp_path / "README.md")
    raw = yaml.safe_load(REGEX_YAML_BLOCK.search((tmp_path / "README.md").read_text()).group(2))
    name, results = model_index_to_eval_results(raw["model-index"])
    assert name == "bert-vtrans" and loaded.data.model_name == name
    assert loaded.data.eval_results == results
    assert eval_results_to_model_index(name, results) == raw["model-index"]
    # what the Hub's own helper writes for the same figures
    expected = metadata_eval_result(
        model_pretty_name=name, task_pretty_name="Text Classification", task_id="text-classification",
        metrics_pretty_name="Accuracy", metrics_id="accuracy", metrics_value=SUMMARY["pruned_accuracy"],
        dataset_pretty_name="GLUE SST-2", dataset_id="nyu-mll/glue", dataset_config="sst2", dataset_split="validation",
    )
    assert raw["model-index"] == expected["model-index"]
    assert raw["library_name"] == "transformers" and "hf-compress" in raw["tags"]
    assert raw["pipeline_tag"] == "text-classification" and "base_model" not in raw  # local base: not linked
    # save -> load -> save is stable
    loaded.save(tmp_path / "again.md")
    assert (tmp_path / "again.md").read_text() == (tmp_path / "README.md").read_text()


def test_structure_plot_is_a_real_png(pruned_config, tmp_path):
    import matplotlib.image

    _render(pruned_config, tmp_path)
    path = tmp_path / "pruning_structure.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (int(STRUCTURE_FIGSIZE[0] * DPI), int(STRUCTURE_FIGSIZE[1] * DPI))
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.var() > 0 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    assert matplotlib.image.imread(path).shape[:2] == (pixels.shape[0], pixels.shape[1])


def test_missing_metric_value_fails_validation(pruned_config, tmp_path):
    bad = EvalResult(task_type="text-classification", dataset_type="nyu-mll/glue", dataset_name="GLUE SST-2",
                     metric_type="accuracy", metric_value=None)
    with pytest.raises(CardValidationError, match="'accuracy' on 'GLUE SST-2' has no metric value"):
        render_vtrans_card(pruned_config, {"output_dir": str(tmp_path)}, eval_results=[bad], command=COMMAND)
    # a saved card whose metric lost its value (hand edit)
    _render(pruned_config, tmp_path)
    path = tmp_path / "README.md"
    path.write_text(path.read_text().replace("      value: 0.8875\n", ""))
    with pytest.raises(CardValidationError, match=r"metric 'Accuracy' has no value"):
        validate_card(path)
    path.write_text(path.read_text().replace("      name: Accuracy\n", "      name: Accuracy\n      value: n/a\n"))
    with pytest.raises(CardValidationError, match="not a finite number"):
        validate_card(path)


def test_partial_summary_is_refused(pruned_config):
    with pytest.raises(ValueError, match="no usable 'pruned_accuracy'"):
        render_vtrans_card(pruned_config, {"dense_accuracy": 0.9})


def test_missing_linked_image_and_metadata_fail_validation(pruned_config, tmp_path):
    _render(pruned_config, tmp_path)
    (tmp_path / "pruning_structure.png").unlink()
    with pytest.raises(CardValidationError, match="'pruning_structure.png' does not exist"):
        validate_card(tmp_path / "README.md")
    (tmp_path / "pruning_structure.png").write_text("not an image")
    with pytest.raises(CardValidationError, match="not a PNG or JPEG"):
        validate_card(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    card.data.library_name = None
    with pytest.raises(CardValidationError, match="'library_name' is missing"):
        validate_card(card, folder=tmp_path)
    with pytest.raises(CardValidationError, match="no folder was given"):
        validate_card(card)


def test_card_without_evaluation_or_folder(pruned_config):
    """The trainer-era call (config only): no metrics, no plot, still a valid card."""
    card = render_vtrans_card(pruned_config)
    assert "Not evaluated when this card was written." in card.text
    assert "model-index" not in str(card) and "pruning_structure.png" not in card.text
    assert validate_card(card) == []


def test_card_links_probe_report_when_present(pruned_config, tmp_path):
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe_report.md").write_text("# Attention probing report\n")
    _render(pruned_config, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "## Attention probing" in text and "(probe/probe_report.md)" in text
    validate_card(tmp_path / "README.md")


def test_pruned_lm_card_with_perplexity_validates(tmp_path):
    """Cards of pruned causal LMs: text-generation, AutoModelForCausalLM, perplexity in model-index."""
    import torch
    from huggingface_hub import ModelCard
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_compress.vtrans import attach_gates, materialize
    from model_cards import render_vtrans_card, validate_card
    from model_cards.evidence import perplexity_eval_result

    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=6, num_key_value_heads=2)).eval()
    gates = attach_gates(dense)
    with torch.no_grad():
        gates.groups["ffn"].log_sigma2[0, :16] = 5.0
    pruned = materialize(dense)
    card = render_vtrans_card(pruned.config, {}, output_dir=tmp_path, eval_results=[perplexity_eval_result(31.5)],
                              command="python prune_lm.py", hardware="test machine")
    card.save(tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    assert "AutoModelForCausalLM" in text and "pipeline_tag: text-generation" in text
    loaded = ModelCard.load(tmp_path / "README.md")
    result = loaded.data.eval_results[0]
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("perplexity", 31.5, "WikiText-2")
    validate_card(tmp_path / "README.md")
    with pytest.raises(ValueError, match="finite"):
        perplexity_eval_result(float("nan"))
