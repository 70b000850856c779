"""Attention probing of pruned models and the ``hf-compress probe`` report (real MiniLM for the slow part)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from helpers import tiny_batch, tiny_model
from PIL import Image

from hf_compress.vtrans import KeepPlan, materialize
from hf_compress.vtrans.probing import align_to_dense, compare_with_pruning, kept_head_index, probe_attention
from model_cards.plots import DPI, heatmap_figsize

SPECIAL = [4, 5, 6]  # tiny_batch ids start at 4: a few of them act as "special" tokens


def _pruned(model, heads):
    plan = KeepPlan(hidden=np.arange(32), heads=[np.asarray(h, dtype=int) for h in heads], ffn=[np.arange(64)] * 3)
    return materialize(model, plan=plan)


def test_pruned_model_probe_matches_dense_attention():
    """Hooks on the SDPA layers give the dense model's eager attention; kept heads sit in kept order."""
    model = tiny_model("bert", "seq-cls")
    batch = tiny_batch("bert", pad_last=3)
    dense = probe_attention(model, [batch], SPECIAL)
    same = probe_attention(_pruned(model, [range(4)] * 3), [batch], SPECIAL)
    for name in ("special", "current", "rest"):
        np.testing.assert_allclose(getattr(same, name), getattr(dense, name), atol=1e-6)
    pruned = probe_attention(_pruned(model, [[1, 3], [], range(4)]), [batch], SPECIAL)
    assert pruned.special.shape == (3, 4)
    np.testing.assert_allclose(pruned.special[0, :2], dense.special[0, [1, 3]], atol=1e-6)  # layer 0: same input
    assert np.isnan(pruned.special[0, 2:]).all() and np.isnan(pruned.special[1]).all()
    aligned = align_to_dense(pruned.special, [[1, 3], [], [0, 1, 2, 3]], 4)
    np.testing.assert_allclose(aligned[0, [1, 3]], dense.special[0, [1, 3]], atol=1e-6)
    assert np.isnan(aligned[0, [0, 2]]).all()


def test_masses_partition_each_attention_row():
    model = tiny_model("roberta", "seq-cls")
    probe = probe_attention(model, [tiny_batch("roberta", pad_last=2)], special_token_ids=[0])  # id 0 never occurs
    np.testing.assert_allclose(probe.special, 0.0, atol=1e-7)
    np.testing.assert_allclose(probe.current + probe.rest, 1.0, atol=1e-5)
    probe = probe_attention(model, [tiny_batch("roberta", pad_last=2)], SPECIAL)
    assert np.all(probe.trivial >= np.maximum(probe.special, probe.current) - 1e-6) and np.all(probe.trivial <= 1 + 1e-6)


def test_compare_with_pruning_head_and_layer_level():
    scores = np.array([[0.9, 0.1, 0.8, 0.2], [0.3, 0.35, 0.55, 0.4]])  # layer means 0.5 and 0.4
    by_head = compare_with_pruning(scores, [2, 2], head_index=[[1, 3], [0, 1]])  # the high scorers removed
    assert by_head.level == "head" and by_head.n == 8 and by_head.rho > 0.8
    assert by_head.removed.sum() == 4 and by_head.mean_score_removed > by_head.mean_score_kept
    by_layer = compare_with_pruning(scores, [4, 1])
    assert by_layer.level == "layer" and by_layer.n == 2 and by_layer.rho == pytest.approx(-1.0)
    assert compare_with_pruning(scores, [2, 2]).rho is None  # no variation: undefined, not 0
    with pytest.raises(ValueError, match="pass the dense model the pruned one was made from"):
        compare_with_pruning(scores, [2, 2, 2])
    assert kept_head_index({"num_heads": [2]}, 4) is None
    assert kept_head_index({"num_heads": [2], "head_index": [[0, 3]]}, 4) == [[0, 3]]
    with pytest.raises(ValueError, match="does not match num_heads"):
        kept_head_index({"num_heads": [2], "head_index": [[0]]}, 4)


def test_probe_cli_reports_bad_input(tmp_path, capsys):
    from hf_compress.cli import main

    assert main(["probe", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]) == 2
    assert "not a local folder or a Hub id" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the real MiniLM on SST-2
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pruned_minilm(tmp_path_factory):
    """MiniLM with a known set of heads removed per layer (12, 8, 6, 4, 10, 2 kept), saved with its card."""
    from transformers import AutoModel, AutoTokenizer

    from hf_compress.data import minilm_path
    from model_cards import render_vtrans_card

    path = minilm_path()
    dense = AutoModel.from_pretrained(path)
    rng = np.random.default_rng(0)
    heads = [np.sort(rng.choice(12, k, replace=False)) for k in (12, 8, 6, 4, 10, 2)]
    plan = KeepPlan(hidden=np.arange(384), heads=heads, ffn=[np.arange(1536)] * 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = materialize(dense, plan=plan)
    # like checkpoints saved before kept head indices were recorded: the report falls back to layer level
    # (the per-head test below puts the indices back)
    del pruned.config.pruning_report["head_index"]
    folder = tmp_path_factory.mktemp("pruned-minilm")
    pruned.save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    render_vtrans_card(pruned.config, output_dir=folder, command="python build_test_model.py").save(folder / "README.md")
    return folder, path


@pytest.mark.slow
def test_probe_report_on_minilm_end_to_end(pruned_minilm, capsys):
    from hf_compress.cli import main
    from model_cards import validate_card

    folder, dense_path = pruned_minilm
    out = folder / "probe"
    code = main(["probe", str(folder), "--data", "sst2", "--output", str(out), "--dense", dense_path,
                 "--max_examples", "32"])
    assert code == 0 and "Spearman, layer level" in capsys.readouterr().out

    heatmap = out / "attention_heatmaps.png"
    with Image.open(heatmap) as image:
        width, height = heatmap_figsize(rows=2, columns=3)  # dense + pruned x special / current / rest
        assert image.size == (int(width * DPI), int(height * DPI))
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.var() > 100 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    with Image.open(out / "pruning_vs_probing.png") as image:
        assert np.asarray(image.convert("L"), dtype=float).var() > 0

    report = (out / "probe_report.md").read_text()
    assert "![Attention mass per head: special, current, rest](attention_heatmaps.png)" in report
    assert "32 sentences" in report and "'[CLS]', '[SEP]'" in report
    assert "no `pruning_report['head_index']`" in report and "over 6 layers" in report
    results = json.loads((out / "probe_results.json").read_text())
    dense, pruned = (np.array(results["probes"][k]["special"], dtype=float) for k in ("dense", "pruned"))
    assert dense.shape == (6, 12) and np.isfinite(dense).all() and (dense > 0.01).all() and (dense < 1).all()
    assert [int(np.isfinite(row).sum()) for row in pruned] == [12, 8, 6, 4, 10, 2]
    np.testing.assert_allclose(pruned[0], dense[0], atol=1e-4)  # layer 0 kept every head and sees the same input
    rho = results["comparison"]["spearman"]
    assert results["comparison"]["level"] == "layer" and -1.0 <= rho <= 1.0 and f"{rho:+.3f}" in report

    card = (folder / "README.md").read_text()  # the probe report lives in the model folder: the card links it
    assert "[probe/probe_report.md](probe/probe_report.md)" in card
    validate_card(folder / "README.md")


@pytest.mark.slow
def test_probe_report_per_head_when_kept_head_indices_are_recorded(pruned_minilm, tmp_path):
    """Once ``pruning_report['head_index']`` is recorded, heads are compared one by one at dense positions."""
    import shutil

    from model_cards.probe_report import write_probe_report

    folder, dense_path = pruned_minilm
    copy = tmp_path / "model"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("probe", "README.md", "*.png"))
    config = json.loads((copy / "config.json").read_text())
    rng = np.random.default_rng(0)  # the fixture's plan
    config["pruning_report"]["head_index"] = [sorted(rng.choice(12, k, replace=False).tolist()) for k in (12, 8, 6, 4, 10, 2)]
    (copy / "config.json").write_text(json.dumps(config))
    result = write_probe_report(str(copy), tmp_path / "out", dense_path=dense_path, max_examples=8)
    assert result.level == "head" and -1.0 <= result.spearman <= 1.0
    report = result.path.read_text()
    assert "over 72 heads" in report and "kept-head slots" not in report
    comparison = json.loads((tmp_path / "out" / "probe_results.json").read_text())["comparison"]
    assert np.array(comparison["removed"]).sum() == 72 - 42
