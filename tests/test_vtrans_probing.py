"""Attention probing: per-head masses on special / current / keyword tokens, and rank correlation."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from hf_compress.vtrans.probing import probe_attention, spearman


def _model():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    return BertForSequenceClassification(config)


def _batch():
    ids = torch.tensor([[1, 10, 11, 12, 2, 0], [1, 13, 14, 2, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def test_probe_masses_match_a_direct_computation():
    model = _model()
    probe = probe_attention(model, [_batch()], special_token_ids=[1, 2], keyword_token_ids=[12, 14])
    assert probe.special.shape == probe.current.shape == probe.keywords.shape == (2, 2)
    assert probe.tokens == 9
    # recompute layer 1 / head 0 by hand from eager attentions
    model.set_attn_implementation("eager")
    model.eval()
    with torch.no_grad():
        att = model(**_batch(), output_attentions=True).attentions[1][:, 0]  # [B, Q, K]
    mask = _batch()["attention_mask"].float()
    special = torch.isin(_batch()["input_ids"], torch.tensor([1, 2])).float()
    expected = ((att * special[:, None, :]).sum(-1) * mask).sum() / mask.sum()
    assert probe.special[1, 0] == pytest.approx(float(expected), rel=1e-5)
    expected_current = ((att.diagonal(dim1=1, dim2=2)) * mask).sum() / mask.sum()
    assert probe.current[1, 0] == pytest.approx(float(expected_current), rel=1e-5)
    # masses are fractions of one attention row
    assert np.all(probe.special + probe.keywords <= 1 + 1e-6) and np.all(probe.current >= 0)
    assert model.config._attn_implementation == "eager"  # we set it here; probe restored its own setting


def test_probe_restores_attention_implementation_and_mode():
    model = _model().train()
    before = model.config._attn_implementation
    probe_attention(model, [_batch()], special_token_ids=[1, 2])
    assert model.config._attn_implementation == before and model.training


def test_spearman():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 1.0, 2.0]), np.array([0.0, 0.0, 1.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        spearman(a, a[:3])
