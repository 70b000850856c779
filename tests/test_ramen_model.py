"""RamenConfig / RamenEncoder on a tiny random BERT: shapes, pooling, save/load, sentence-transformers, losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from transformers import AutoModel, BertConfig, BertTokenizerFast

import hf_compress  # noqa: F401  (registers the Auto classes)
from hf_compress.ramen import RamenConfig, RamenEncoder
from hf_compress.ramen.collator import RamenCollator
from hf_compress.ramen.losses import graph_regularizer, multi_positive_triplet_loss

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]


@pytest.fixture
def tokenizer():
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(WORDS)}, do_lower_case=False)


def tiny_encoder(pooling: str = "mean", normalize: bool = True) -> RamenEncoder:
    torch.manual_seed(0)
    backbone = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=64)
    return RamenEncoder(RamenConfig(backbone_config=backbone.to_dict(), pooling=pooling, normalize=normalize)).eval()


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="pooling"):
        RamenConfig(pooling="attention")
    with pytest.raises(ValueError, match="model_type"):
        RamenConfig(backbone_config={"hidden_size": 8})
    with pytest.raises(ValueError, match="max_seq_length"):
        RamenConfig(max_seq_length=0)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_embeddings_are_unit_vectors_and_ignore_padding(tokenizer, pooling):
    model = tiny_encoder(pooling)
    short = tokenizer(["w1 w2"], return_tensors="pt")
    padded = tokenizer(["w1 w2", "w3 w4 w5 w6 w7 w8"], padding=True, return_tensors="pt")
    out = model(**padded)
    assert out.last_hidden_state.shape == (2, padded["input_ids"].shape[1], 16)
    assert out.pooler_output.shape == (2, 16)
    torch.testing.assert_close(out.pooler_output.norm(dim=-1), torch.ones(2))
    # the first text's embedding does not change when padded to the second's length
    torch.testing.assert_close(model(**short).pooler_output[0], out.pooler_output[0], atol=1e-5, rtol=1e-5)


def test_encode_keeps_input_order(tokenizer):
    model = tiny_encoder()
    texts = ["w5 w6 w7 w8 w9", "w1", "w2 w3"]
    batched = model.encode(texts, tokenizer, batch_size=2)
    one_by_one = np.stack([model.encode([t], tokenizer)[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_save_load_round_trip_auto_model_and_sentence_transformers(tmp_path, tokenizer):
    model = tiny_encoder()
    texts = ["w1 w2 w3", "w4", "w7 w8"]
    reference = model.encode(texts, tokenizer)
    model.save_pretrained(tmp_path / "enc")
    tokenizer.save_pretrained(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["model_type"] == "ramen" and config["auto_map"]["AutoModel"].endswith("RamenEncoder")
    loaded = AutoModel.from_pretrained(tmp_path / "enc")
    assert isinstance(loaded, RamenEncoder)
    np.testing.assert_allclose(loaded.encode(texts, tokenizer), reference, atol=1e-6)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    st_model = sentence_transformers.SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    np.testing.assert_allclose(st_model.encode(texts), reference, atol=1e-5)


def test_loading_a_corrupt_checkpoint_fails_clearly(tmp_path):
    model = tiny_encoder()
    model.save_pretrained(tmp_path / "enc")
    (tmp_path / "enc" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception) as err:
        RamenEncoder.from_pretrained(tmp_path / "enc")
    assert "safetensors" in str(err.value).lower() or "header" in str(err.value).lower()


# -- losses ---------------------------------------------------------------------------------------------
def test_triplet_loss_matches_hand_computation():
    # one query, candidates at cosines 0.9 (positive), 0.8 and 0.1 (negatives), margin 0.3, 1 hardest negative
    q = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[0.9, (1 - 0.81) ** 0.5], [0.8, 0.6], [0.1, (1 - 0.01) ** 0.5]])
    pos = torch.tensor([[True, False, False]])
    loss = multi_positive_triplet_loss(q, c, pos, margin=0.3, num_negatives=1)
    assert loss.item() == pytest.approx(0.8 - 0.9 + 0.3)  # relu(s_neg - s_pos + m) with the hardest negative
    # two hardest negatives: mean of relu(0.8-0.9+0.3)=0.2 and relu(0.1-0.9+0.3)=0
    loss2 = multi_positive_triplet_loss(q, c, pos, margin=0.3, num_negatives=2)
    assert loss2.item() == pytest.approx(0.1)


def test_triplet_loss_multi_positive_and_row_mask():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    pos = torch.tensor([[True, False, True], [False, True, False]])
    # row 0: positives s=1.0 and 0.6, only negative s=0.0 -> relu(0-1+.3)=0, relu(0-0.6+0.3)=0 -> 0
    # row 1: positive s=1.0, negatives 0.0 and 0.8 (hardest 0.8): relu(0.8-1+0.3) = 0.1
    full = multi_positive_triplet_loss(q, c, pos, margin=0.3, num_negatives=1)
    assert full.item() == pytest.approx(0.1 / 3)  # three (query, positive, negative) triples
    only_first = multi_positive_triplet_loss(q, c, pos, margin=0.3, num_negatives=1, row_mask_b=torch.tensor([True, False]))
    assert only_first.item() == pytest.approx(0.0)


def test_triplet_loss_gradients_pull_positives_push_negatives():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_(True)
    c = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1).requires_grad_(True)
    pos = torch.zeros(4, 6, dtype=torch.bool)
    pos[torch.arange(4), torch.arange(4)] = True
    loss = multi_positive_triplet_loss(q, c, pos, margin=1.0, num_negatives=3)
    loss.backward()
    # a gradient step moves every query towards its positive (cosine goes up)
    before = (q * c[:4]).sum(-1)
    after = ((q - 0.1 * q.grad) * c[:4]).sum(-1)
    assert bool((after > before).all())
    # double-precision gradient check of the whole loss
    qd, cd = q.detach().double().requires_grad_(True), c.detach().double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: multi_positive_triplet_loss(a, b, pos, margin=1.0, num_negatives=3), (qd, cd))


def test_triplet_loss_temperature_weights_hard_negatives_more():
    q = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[0.9, (1 - 0.81) ** 0.5], [0.8, 0.6], [0.7, (1 - 0.49) ** 0.5]])
    pos = torch.tensor([[True, False, False]])
    uniform = multi_positive_triplet_loss(q, c, pos, margin=0.3, num_negatives=2)
    weighted = multi_positive_triplet_loss(q, c, pos, margin=0.3, num_negatives=2, temperature=0.05)
    assert uniform.item() == pytest.approx((0.2 + 0.1) / 2)
    assert weighted.item() > uniform.item()  # the harder negative (0.8) dominates


def test_loss_errors_and_empty_cases():
    with pytest.raises(ValueError, match="positive mask"):
        multi_positive_triplet_loss(torch.ones(2, 3), torch.ones(4, 3), torch.ones(2, 3, dtype=torch.bool))
    q = torch.ones(2, 3, requires_grad=True)
    empty = graph_regularizer(q, torch.ones(2, 3), torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()  # still part of the graph


def test_collator_masks_come_from_the_full_label_matrix(tokenizer):
    labels = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    graph = sp.csr_matrix(np.array([[0, 1], [0, 0], [1, 0]], dtype=np.float32))
    collator = RamenCollator(tokenizer, ["w1", "w2", "w3"], labels, ["w10", "w11", "w12"],
                             graphs={"cites": (graph, ["w20", "w21"])}, seed=0)
    batch = collator([{"point_id": 0}, {"point_id": 1}, {"point_id": 2}])
    sizes = batch["segment_sizes"].tolist()
    assert sizes[0] == 3 and sum(sizes) == batch["input_ids"].shape[0]
    assert sizes[2] == 2  # anchors 1 and 0 were sampled for points 0 and 2; point 1 has none
    # which labels were sampled is random, but the mask must agree with the label matrix for all of them
    label_ids = sorted({int(i) for i in range(3) if labels[:, i].nnz})  # every label appears in some row
    positive = batch["label_positive"].numpy()
    assert positive.shape == (3, sizes[1])
    assert positive.sum(axis=1).min() >= 1  # each point's sampled label is in the batch
    linked = batch["graph_cites_linked"].numpy()
    assert linked.tolist() == [[False, True], [False, False], [True, False]]
    assert label_ids == [0, 1, 2]


def test_ignored_candidates_are_neither_positive_nor_negative():
    torch.manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(7, 8), dim=-1)
    pos = torch.zeros(3, 7, dtype=torch.bool)
    pos[0, 0] = pos[1, 1] = pos[2, 2] = True
    ignore = torch.zeros(3, 7, dtype=torch.bool)
    ignore[:, 5] = True  # candidate 5 ignored by every query: the same as not having it
    ignore[0, 6] = True  # candidate 6 ignored by query 0 only
    got = multi_positive_triplet_loss(q, c, pos, margin=0.5, num_negatives=2, ignore_bm=ignore)
    # by hand: every (query, positive) pair against its two hardest allowed negatives
    scores = q @ c.T
    terms = []
    for b in range(3):
        allowed = [m for m in range(7) if not pos[b, m] and not ignore[b, m]]
        hard = sorted((float(scores[b, m]) for m in allowed), reverse=True)[:2]
        terms += [max(0.0, h - float(scores[b, b]) + 0.5) for h in hard]
    assert got.item() == pytest.approx(sum(terms) / len(terms), abs=1e-6)
    plain = multi_positive_triplet_loss(q, c, pos, margin=0.5, num_negatives=2)
    assert got.item() != pytest.approx(plain.item())


def test_collator_spares_anchors_of_points_sharing_a_label(tokenizer):
    # points 0 and 1 share label 1; point 2 shares none. Each point links one anchor of its own.
    labels = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    graph = sp.csr_matrix(np.eye(3, dtype=np.float32))
    features = [{"point_id": 0}, {"point_id": 1}, {"point_id": 2}]
    plain = RamenCollator(tokenizer, ["w1", "w2", "w3"], labels, ["w10", "w11", "w12"],
                          graphs={"cites": (graph, ["w20", "w21", "w22"])}, seed=0)(features)
    assert "graph_cites_spared" not in plain
    batch = RamenCollator(tokenizer, ["w1", "w2", "w3"], labels, ["w10", "w11", "w12"],
                          graphs={"cites": (graph, ["w20", "w21", "w22"])}, seed=0, graph_negatives="shared_label")(features)
    assert batch["graph_cites_linked"].numpy().tolist() == np.eye(3, dtype=bool).tolist()
    # point 0 does not push away point 1's anchor (and vice versa); point 2's anchor stays a negative for both
    assert batch["graph_cites_spared"].numpy().tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    with pytest.raises(ValueError, match="graph_negatives"):
        RamenCollator(tokenizer, ["w1"], sp.csr_matrix((1, 3)), ["a", "b", "c"], graph_negatives="some")


def test_collator_carries_labels_to_anchors_over_the_graph(tokenizer):
    # anchor 0 is linked from points 0 and 2, anchor 1 from point 1 only, anchor 2 from nobody
    labels = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    graph = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=np.float32))
    features = [{"point_id": 0}, {"point_id": 1}, {"point_id": 2}]
    plain = RamenCollator(tokenizer, ["w1", "w2", "w3"], labels, ["w10", "w11", "w12", "w13"],
                          graphs={"cites": (graph, ["w20", "w21", "w22"])}, seed=0)(features)
    assert "graph_cites_anchor_label_positive" not in plain
    collator = RamenCollator(tokenizer, ["w1", "w2", "w3"], labels, ["w10", "w11", "w12", "w13"],
                             graphs={"cites": (graph, ["w20", "w21", "w22"])}, seed=0, anchor_labels=True)
    carried = {(0, 0), (0, 1), (0, 2), (1, 1)}  # (anchor, label) = Aᵀ Y > 0
    for _ in range(5):  # the sampled labels vary; the mask must follow Aᵀ Y for whichever were drawn
        batch = collator(features)
        sizes = batch["segment_sizes"].tolist()
        texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        label_ids = [int(t[1:]) - 10 for t in texts[sizes[0]:sizes[0] + sizes[1]]]
        anchor_ids = [int(t[1:]) - 20 for t in texts[sizes[0] + sizes[1]:]]
        assert anchor_ids == [0, 1]
        mask = batch["graph_cites_anchor_label_positive"].numpy()
        assert mask.tolist() == [[(a, l) in carried for l in label_ids] for a in anchor_ids]
        assert mask.any(axis=1).all()  # each anchor has the label sampled for the point it was drawn for
    # a re-weighted graph that drops point 2's edge no longer carries label 2 to anchor 0
    collator.set_graph("cites", sp.csr_matrix(np.array([[0.5, 0, 0], [0, 1.0, 0], [0, 0, 0]], dtype=np.float32)))
    assert collator._anchor_labels["cites"].toarray().tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_collator_rejects_mismatched_inputs(tokenizer):
    with pytest.raises(ValueError, match="point texts"):
        RamenCollator(tokenizer, ["w1"], sp.csr_matrix((2, 3)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="graph 'g'"):
        RamenCollator(tokenizer, ["w1"], sp.csr_matrix((1, 3)), ["a", "b", "c"], graphs={"g": (sp.csr_matrix((1, 4)), ["x"])})


def test_token_type_ids_reach_a_bert_backbone(tokenizer):
    model = tiny_encoder()
    batch = tokenizer(["w1 w2 w3"], return_tensors="pt")
    segment_b = {**batch, "token_type_ids": torch.ones_like(batch["token_type_ids"])}
    direct = model.backbone(**segment_b).last_hidden_state
    torch.testing.assert_close(model(**segment_b).last_hidden_state, direct)
    assert not torch.allclose(model(**segment_b).pooler_output, model(**batch).pooler_output)
