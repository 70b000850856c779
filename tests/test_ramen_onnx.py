"""The RAMEN encoder through onnxruntime: same embeddings as PyTorch, drop-in for XCPredictor, saved with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hf_compress  # noqa: F401
from hf_compress.ramen import RamenEncoder
from hf_compress.ramen.onnx_encoder import OnnxRamenEncoder, export_encoder_onnx
from hf_compress.ramen.predict import XCPredictor

from test_ramen_model import WORDS, tiny_encoder, tokenizer  # noqa: F401  (fixture)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = ["w5 w6 w7", "w8", "w9 w10 w11 w12 w13 w14 w15 w16 w17 w18", "", "w20 w21"]


def trained_like(encoder: RamenEncoder) -> RamenEncoder:
    """Random but not tiny-init weights, so a wrong graph could not agree by accident."""
    with torch.no_grad():
        for param in encoder.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return encoder


def test_export_matches_pytorch_on_padded_batches_and_single_texts(tmp_path, tokenizer):
    encoder = trained_like(tiny_encoder())
    path = export_encoder_onnx(encoder, tokenizer, tmp_path)
    assert path == tmp_path / "onnx" / "encoder.onnx" and path.is_file()
    report = json.loads((tmp_path / "onnx" / "encoder_export.json").read_text())
    assert report["max_abs_diff_vs_pytorch"] < 1e-5
    fast = OnnxRamenEncoder(path, encoder.config)
    for batch_size in (1, 2, 8):  # batch 1 = one query; 2 and 8 mix lengths, so rows are padded
        got = fast.encode(TEXTS, tokenizer, batch_size=batch_size)
        want = encoder.encode(TEXTS, tokenizer, batch_size=batch_size)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert not encoder.training  # the export leaves the module as it found it


def test_predictor_with_onnx_encoder_gives_the_same_top_k_and_saves_both_graphs(tmp_path, tokenizer):
    encoder = trained_like(tiny_encoder())
    labels = [f"w{i} w{i + 1}" for i in range(30)]
    torch_predictor = XCPredictor(encoder, tokenizer, labels, index_backend="exact")
    torch_predictor.save_pretrained(tmp_path / "pred")
    assert not (tmp_path / "pred" / "onnx").exists()

    fast = XCPredictor.from_pretrained(tmp_path / "pred", encoder_backend="onnxruntime", num_threads=1)
    assert isinstance(fast.encoder, OnnxRamenEncoder)
    assert (tmp_path / "pred" / "onnx" / "encoder.onnx").is_file()  # exported on first use
    queries = ["w3 w4", "w10", "w17 w18 w19 w2"]
    for want, got in zip(torch_predictor.predict(queries, k=5), fast.predict(queries, k=5)):
        assert [p["label_id"] for p in got] == [p["label_id"] for p in want]
        np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in want], atol=1e-5)

    fast.save_pretrained(tmp_path / "copy")  # a new folder keeps the PyTorch weights as well as the graph
    assert (tmp_path / "copy" / "onnx" / "encoder.onnx").is_file()
    reloaded = RamenEncoder.from_pretrained(tmp_path / "copy")
    np.testing.assert_allclose(reloaded.encode(queries, tokenizer), encoder.encode(queries, tokenizer), atol=1e-6)
    again = XCPredictor.from_pretrained(tmp_path / "copy", encoder_backend="onnxruntime")
    assert [p["label_id"] for p in again.predict("w10", k=3)] == [p["label_id"] for p in torch_predictor.predict("w10", k=3)]


def test_bad_backend_and_missing_graph_fail_clearly(tmp_path, tokenizer):
    encoder = tiny_encoder()
    XCPredictor(encoder, tokenizer, ["w1", "w2"], index_backend="exact").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="encoder_backend"):
        XCPredictor.from_pretrained(tmp_path, encoder_backend="tensorrt")
    with pytest.raises(FileNotFoundError, match="export_encoder_onnx"):
        OnnxRamenEncoder.from_pretrained(tmp_path, export_if_missing=False)
    with pytest.raises(FileNotFoundError, match="export_encoder_onnx"):
        OnnxRamenEncoder(tmp_path / "nope.onnx", encoder.config)
    with pytest.raises(TypeError, match="RamenEncoder"):
        export_encoder_onnx(torch.nn.Linear(2, 2), tokenizer, tmp_path)
