"""RamenTrainer on tiny random encoders and a small synthetic XC set: losses logged, graphs validated, the
saved model identical in size and speed with and without the graph regularizer, predictor round trip, CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

import hf_compress  # noqa: F401
from hf_compress.ramen import RamenConfig, RamenEncoder
from hf_compress.ramen.data import MetadataGraph, XCData, XCSplit, write_xc_repository
from hf_compress.ramen.losses import multi_positive_triplet_loss
from hf_compress.ramen.predict import XCPredictor, label_vectors_with_points
from trainers import RamenTrainer, RamenTrainingArguments

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(60)]


@pytest.fixture
def tokenizer():
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(WORDS)}, do_lower_case=False)


def synthetic_data(num_train: int = 48, num_test: int = 16, num_labels: int = 12, seed: int = 0) -> XCData:
    """Points are a few words; label j's text is word w{j}; a point holds the words of its labels."""
    rng = np.random.default_rng(seed)

    def split(n):
        texts, rows = [], []
        for _ in range(n):
            ids = sorted(rng.choice(num_labels, size=rng.integers(1, 4), replace=False).tolist())
            noise = rng.integers(30, 60, size=2).tolist()
            texts.append(" ".join(f"w{i}" for i in ids + noise))
            rows.append(ids)
        matrix = sp.lil_matrix((n, num_labels), dtype=np.float32)
        for r, ids in enumerate(rows):
            matrix[r, ids] = 1.0
        return XCSplit(texts, matrix.tocsr())

    train, test = split(num_train), split(num_test)
    # "cites": each train point links to the next point with a shared label
    links = sp.lil_matrix((num_train, num_train), dtype=np.float32)
    for i in range(num_train):
        for j in range(i + 1, num_train):
            if train.labels[i].multiply(train.labels[j]).nnz:
                links[i, j] = links[j, i] = 1.0
                break
    graphs = {"cites": MetadataGraph("cites", links.tocsr(), list(train.texts))}
    return XCData(name="synthetic", train=train, test=test, label_texts=[f"w{j}" for j in range(num_labels)], graphs=graphs)


def tiny_encoder(seed: int = 0) -> RamenEncoder:
    torch.manual_seed(seed)
    backbone = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=32)
    return RamenEncoder(RamenConfig(backbone_config=backbone.to_dict()))


def arguments(tmp_path, **overrides) -> RamenTrainingArguments:
    settings = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=2, learning_rate=5e-3,
                    logging_steps=1, save_strategy="no", report_to=[], seed=0, cluster_size=4, use_cpu=True, disable_tqdm=True)
    settings.update(overrides)
    return RamenTrainingArguments(**settings)


def test_training_logs_every_loss_term_and_improves_in_batch_retrieval(tmp_path, tokenizer):
    data = synthetic_data()
    trainer = RamenTrainer(model=tiny_encoder(), args=arguments(tmp_path, graph_weights="cites=0.2", num_train_epochs=10,
                                                                        learning_rate=3e-3),
                           data=data, processing_class=tokenizer)
    before = trainer.evaluate()["eval_P@1"]
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert {"loss_labels", "loss_graph_cites", "graph_weight_cites", "inbatch_p@1"} <= set(logs[0])
    assert logs[0]["graph_weight_cites"] == pytest.approx(0.2)
    assert np.mean([log["loss"] for log in logs[-3:]]) < 0.5 * np.mean([log["loss"] for log in logs[:3]])
    after = trainer.evaluate()
    assert after["eval_P@1"] >= before
    assert {"eval_P@5", "eval_nDCG@5", "eval_PSP@5", "eval_PSnDCG@5"} <= set(after)


def test_unknown_graph_and_wrong_model_are_refused(tmp_path, tokenizer):
    data = synthetic_data()
    with pytest.raises(ValueError, match="available metadata graphs: \\['cites'\\]"):
        RamenTrainer(model=tiny_encoder(), args=arguments(tmp_path, graph_weights="users=0.2"), data=data, processing_class=tokenizer)
    with pytest.raises(TypeError, match="RamenEncoder"):
        RamenTrainer(model=BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)),
                     args=arguments(tmp_path), data=data, processing_class=tokenizer)
    with pytest.raises(ValueError, match="name=weight"):
        arguments(tmp_path, graph_weights="cites=heavy")


def test_graph_regularizer_adds_no_inference_cost(tmp_path, tokenizer):
    """Same saved size, same tensors, same forward cost with and without the graph regularizer."""
    data = synthetic_data()
    saved = {}
    for name, graphs in (("plain", ""), ("graph", "cites=0.5")):
        trainer = RamenTrainer(model=tiny_encoder(), args=arguments(tmp_path / name, graph_weights=graphs),
                               data=data, processing_class=tokenizer)
        trainer.train()
        trainer.save_predictor(str(tmp_path / name / "model"))
        saved[name] = tmp_path / name / "model"
    plain, graph = (XCPredictor.from_pretrained(saved[n]) for n in ("plain", "graph"))
    assert (saved["plain"] / "model.safetensors").stat().st_size == (saved["graph"] / "model.safetensors").stat().st_size
    assert json.loads((saved["plain"] / "config.json").read_text()) == json.loads((saved["graph"] / "config.json").read_text())
    plain_state, graph_state = plain.encoder.state_dict(), graph.encoder.state_dict()
    assert {k: v.shape for k, v in plain_state.items()} == {k: v.shape for k, v in graph_state.items()}
    assert any(not torch.equal(plain_state[k], graph_state[k]) for k in plain_state)  # trained differently

    # interleave the two models query by query so machine load drifts hit both alike
    times = {"plain": [], "graph": []}
    for repeat in range(4):
        for text in data.test.texts:
            for name, predictor in (("plain", plain), ("graph", graph)):
                start = time.perf_counter()
                predictor.predict(text, k=5)
                if repeat:  # the first pass is warm-up
                    times[name].append(time.perf_counter() - start)
    # the fastest run of each is what the model costs; slower ones measure other load on the machine
    ratio = min(times["graph"]) / min(times["plain"])
    assert 0.5 < ratio < 2.0, ratio


def test_predictor_round_trip_and_classifier_stage(tmp_path, tokenizer):
    data = synthetic_data()
    trainer = RamenTrainer(model=tiny_encoder(), args=arguments(tmp_path, classifier_epochs=3, shortlist_size=6),
                           data=data, processing_class=tokenizer)
    trainer.train()
    summary = trainer.train_classifier()
    assert summary["classifier_bce_last"] < summary["classifier_bce_first"]
    assert 0.0 <= summary["fusion_weight"] <= 1.0
    folder = trainer.save_predictor(str(tmp_path / "pred"))
    loaded = XCPredictor.from_pretrained(folder)
    assert loaded.classifier is not None and loaded.fusion_weight == trainer.fusion_weight
    texts = data.test.texts[:4]
    original = trainer.build_predictor().predict(texts, k=3)
    again = loaded.predict(texts, k=3)
    assert [[r["label_id"] for r in row] for row in again] == [[r["label_id"] for r in row] for row in original]
    assert all(len(row) == 3 and row[0]["score"] >= row[-1]["score"] for row in again)
    assert isinstance(loaded.predict("w1 w2", k=2), list) and "label" in loaded.predict("w1 w2", k=2)[0]
    with pytest.raises(FileNotFoundError, match="xc/predictor.json"):
        XCPredictor.from_pretrained(tmp_path / "out")


def test_cli_trains_on_an_xc_repository_folder(tmp_path, tokenizer, capsys):
    from hf_compress.cli import main

    data = synthetic_data()
    write_xc_repository(data, tmp_path / "xc")
    backbone = tmp_path / "backbone"
    model = BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=32))
    model.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    code = main(["ramen", "--dataset", str(tmp_path / "xc"), "--model_name_or_path", str(backbone), "--output_dir",
                 str(tmp_path / "run"), "--graph_weights", "cites=0.2", "--num_train_epochs", "1",
                 "--per_device_train_batch_size", "16", "--use_cpu", "true", "--export_onnx", "true"])
    assert code == 0
    out = capsys.readouterr().out
    assert "untrained" in out and "P@5" in out and "ONNX query encoder" in out
    results = json.loads((tmp_path / "run" / "ramen_results.json").read_text())
    assert set(results) >= {"untrained", "trained", "saved_to", "onnx_encoder"}
    assert (tmp_path / "run" / "xc" / "predictor.json").is_file()
    fast = XCPredictor.from_pretrained(tmp_path / "run", encoder_backend="onnxruntime")  # uses the exported graph
    plain = XCPredictor.from_pretrained(tmp_path / "run")
    assert [r["label_id"] for r in fast.predict("w1 w2", k=3)] == [r["label_id"] for r in plain.predict("w1 w2", k=3)]
    assert main(["ramen", "--dataset", str(tmp_path / "nowhere")]) == 2
    assert "Extreme Classification Repository" in capsys.readouterr().err


def test_cli_help_lists_ramen_options(capsys):
    from hf_compress.cli import main

    with pytest.raises(SystemExit) as done:
        main(["ramen", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--graph_weights" in out and "--cluster_size" in out and "--dataset" in out


def test_graph_bandit_moves_towards_the_rewarded_weight():
    from trainers.ramen_trainer import GraphWeightBandit

    bandit = GraphWeightBandit(["cites"], [0.0, 0.2, 0.5], seed=0, learning_rate=1.0)
    bandit.choose()
    bandit.reward(0.5)  # first reward only sets the baseline
    for _ in range(300):
        weight = bandit.choose()["cites"]
        bandit.reward(1.0 if weight == 0.5 else 0.0)  # only the 0.5 arm helps in-batch P@1
    probabilities = bandit.probabilities("cites")
    assert probabilities.argmax() == 2 and probabilities[2] > 0.8
    assert bandit.expected_weights()["cites"] > 0.4


def test_bandit_and_mined_negatives_run_inside_training(tmp_path, tokenizer):
    data = synthetic_data()
    args = arguments(tmp_path, graph_weights="cites=0.2", graph_bandit=True, bandit_arms="0,0.5", mined_negatives=2)
    trainer = RamenTrainer(model=tiny_encoder(), args=args, data=data, processing_class=tokenizer)
    trainer.train()
    mined = trainer.collator.mined_negatives
    assert mined.shape == (len(data.train), 2)
    for row, negatives in enumerate(mined):  # mined label negatives are never positives of that point
        assert not set(negatives[negatives >= 0].tolist()) & set(data.train.labels[row].indices.tolist())
    weights = {log["graph_weight_cites"] for log in trainer.state.log_history if "graph_weight_cites" in log}
    assert weights <= {0.0, 0.5} and len(weights) >= 1


def test_label_vectors_from_text_and_points_reach_the_saved_predictor(tmp_path, tokenizer):
    from huggingface_hub import ModelCard

    data = synthetic_data()
    args = arguments(tmp_path, label_vectors="text+points", label_text_weight=0.5, num_train_epochs=1)
    trainer = RamenTrainer(model=tiny_encoder(), args=args, data=data, processing_class=tokenizer)
    trainer.train()
    encoder = trainer.model
    expected = label_vectors_with_points(encoder.encode(data.label_texts, tokenizer), encoder.encode(data.train.texts, tokenizer),
                                         data.train.labels, text_weight=0.5)
    predictor = trainer.build_predictor()
    np.testing.assert_allclose(predictor.label_embeddings, expected, atol=1e-5)
    text_only = encoder.encode(data.label_texts, tokenizer)
    assert not np.allclose(predictor.label_embeddings, text_only, atol=1e-3)
    assert predictor.label_embeddings.shape == text_only.shape  # same index size, same query cost
    trainer.evaluate()
    folder = trainer.save_predictor(str(tmp_path / "pred"))
    loaded = XCPredictor.from_pretrained(folder)
    assert loaded.label_vectors == "text+points"
    np.testing.assert_allclose(loaded.label_embeddings, predictor.label_embeddings, atol=1e-6)
    assert "mixed with the mean of its training points" in ModelCard.load(tmp_path / "pred" / "README.md").text
    with pytest.raises(ValueError, match="label_vectors"):
        arguments(tmp_path, label_vectors="points")


def test_saved_predictor_carries_a_valid_card_with_the_measured_metrics(tmp_path, tokenizer):
    from huggingface_hub import ModelCard

    from model_cards import validate_card

    trainer = RamenTrainer(model=tiny_encoder(), args=arguments(tmp_path, graph_weights="cites=0.2"),
                           data=synthetic_data(), processing_class=tokenizer)
    trainer.train()
    metrics = trainer.evaluate()
    folder = trainer.save_predictor(str(tmp_path / "pred"), command="hf-compress ramen --graph_weights cites=0.2")
    card = ModelCard.load(tmp_path / "pred" / "README.md")
    results = validate_card(card, folder=folder)
    by_name = {r.metric_name: r.metric_value for r in results}
    assert by_name["P@5"] == pytest.approx(metrics["eval_P@5"]) and by_name["PSP@5"] == pytest.approx(metrics["eval_PSP@5"])
    assert "cites (0.2)" in card.text and "hf-compress ramen --graph_weights cites=0.2" in card.text
    assert card.data.pipeline_tag == "sentence-similarity"


def test_mined_negatives_are_refreshed_without_cluster_batches(tmp_path, tokenizer):
    data = synthetic_data()
    trainer = RamenTrainer(model=tiny_encoder(), args=arguments(tmp_path, cluster_size=0, mined_negatives=2),
                           data=data, processing_class=tokenizer)
    trainer.train()
    assert trainer.collator.mined_negatives is not None and trainer.collator.mined_negatives.shape == (len(data.train), 2)


def test_graph_reweight_prunes_logs_kept_edges_and_matches_a_direct_computation(tmp_path, tokenizer):
    from hf_compress.ramen.graph_weights import reweight_graph

    data = synthetic_data()
    original = data.graphs["cites"].matrix.copy()
    args = arguments(tmp_path, graph_weights="cites=0.2", graph_reweight=True, graph_min_weight=0.45)
    trainer = RamenTrainer(model=tiny_encoder(), args=args, data=data, processing_class=tokenizer)
    trainer.train()
    kept_logs = [log for log in trainer.state.log_history if "graph_cites_edges_kept" in log]
    # once before the first step, then at the refresh of epoch 1 (cluster_refresh_epochs=1, 2 epochs)
    assert [log["step"] for log in kept_logs] == [0, 3] and trainer.graph_refreshes == 2
    assert all(0 < log["graph_cites_edges_kept"] < original.nnz for log in kept_logs)
    assert kept_logs[-1]["graph_cites_kept_fraction"] == pytest.approx(kept_logs[-1]["graph_cites_edges_kept"] / original.nnz)
    assert kept_logs[0]["graph_anchor_texts_encoded"] == 0  # the anchors are the train texts: embeddings reused
    # the original graph is kept as loaded; the collator holds the pruned, weighted one
    assert (trainer.original_graphs["cites"] != original).nnz == 0 and (data.graphs["cites"].matrix != original).nnz == 0
    pruned = trainer.collator.graphs["cites"][0]
    assert "cites" in trainer.collator.weighted_graphs and pruned.nnz == kept_logs[-1]["graph_cites_edges_kept"]
    assert pruned.data.min() > 0.45 and (pruned.multiply(original > 0) != pruned).nnz == 0  # a subset of the edges
    assert trainer.training_summary()["graph_edges_kept"] == {"cites": pruned.nnz}
    # a refresh equals the formula applied to freshly encoded points and anchors
    stats = trainer.refresh_graphs()
    model = trainer.accelerator.unwrap_model(trainer.model)
    embeddings = model.encode(data.train.texts, tokenizer)
    expected = reweight_graph(original, embeddings, model.encode(data.graphs["cites"].anchor_texts, tokenizer), min_weight=0.45)
    refreshed = trainer.collator.graphs["cites"][0]
    assert stats["cites"]["edges_kept"] == refreshed.nnz == expected.nnz
    np.testing.assert_array_equal(refreshed.indices, expected.indices)
    np.testing.assert_allclose(refreshed.data, expected.data, rtol=1e-5)


def test_graph_reweight_without_mining_refreshes_runs_once_before_training(tmp_path, tokenizer):
    data = synthetic_data()
    args = arguments(tmp_path, graph_weights="cites=0.2", graph_reweight=True, cluster_size=0, cluster_refresh_epochs=0)
    trainer = RamenTrainer(model=tiny_encoder(), args=args, data=data, processing_class=tokenizer)
    trainer.train()
    kept_logs = [log for log in trainer.state.log_history if "graph_cites_edges_kept" in log]
    assert trainer.graph_refreshes == 1 and [log["step"] for log in kept_logs] == [0]
    # threshold 0 only drops edges with a non-positive cosine
    cosine_positive = trainer.collator.graphs["cites"][0]
    assert 0 < cosine_positive.nnz <= data.graphs["cites"].matrix.nnz and cosine_positive.data.min() > 0
    with pytest.raises(ValueError, match="graph_min_weight"):
        arguments(tmp_path, graph_min_weight=-1.0)


def test_graph_reweight_on_a_citeulike_slice_reuses_point_embeddings_for_train_title_anchors(tmp_path):
    """Real citeulike-a rows (citation graph, anchors = all 10,721 train titles) with a tiny random encoder."""
    from transformers import AutoTokenizer

    from hf_compress.data import minilm_path
    from hf_compress.ramen.data import load_citeulike

    try:
        full = load_citeulike()
        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    except FileNotFoundError as err:
        pytest.skip(str(err))
    data = full.head(num_train=256, num_test=16, graphs=["citation"])
    graph = data.graphs["citation"]
    torch.manual_seed(0)
    backbone = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64)
    encoder = RamenEncoder(RamenConfig(backbone_config=backbone.to_dict()))
    args = arguments(tmp_path, graph_weights="citation=0.2", graph_reweight=True, per_device_train_batch_size=32,
                     max_steps=3, cluster_size=8)
    trainer = RamenTrainer(model=encoder, args=args, data=data, processing_class=tokenizer)
    trainer.train()
    log = next(entry for entry in trainer.state.log_history if "graph_citation_edges_kept" in entry)
    used = np.unique(graph.matrix.indices)
    train_texts = set(data.train.texts)
    outside = {graph.anchor_texts[a] for a in used if graph.anchor_texts[a] not in train_texts}
    assert len(outside) < len(used)  # some linked anchors are titles of the slice itself ...
    assert log["graph_anchor_texts_encoded"] == len(outside)  # ... and only the others were encoded
    assert 0 < log["graph_citation_edges_kept"] <= graph.matrix.nnz
    pruned = trainer.collator.graphs["citation"][0]
    assert pruned.shape == graph.matrix.shape == (256, 10721) and pruned.nnz == log["graph_citation_edges_kept"]
    assert trainer.state.global_step == 3


def loss_with_and_without(trainer: RamenTrainer, batch: dict, key: str) -> tuple[float, float]:
    """The trainer's loss on one batch (eval mode, no grad) with the batch as is and with ``key`` removed."""
    model = trainer.model.eval()
    with torch.no_grad():
        full = float(trainer.compute_loss(model, dict(batch)))
        without = {k: v for k, v in batch.items() if k != key}
        return full, float(trainer.compute_loss(model, without))


def test_anchor_label_term_is_added_and_logged(tmp_path, tokenizer):
    data = synthetic_data()
    # the graph listed at weight 0 still feeds the anchor-label term
    args = arguments(tmp_path, graph_weights="cites=0", anchor_label_weight=0.5)
    trainer = RamenTrainer(model=tiny_encoder(), args=args, data=data, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    carried = batch["graph_cites_anchor_label_positive"]
    assert carried.shape == (int(batch["segment_sizes"][2]), int(batch["segment_sizes"][1])) and bool(carried.any())
    full, labels_only = loss_with_and_without(trainer, batch, "graph_cites_anchor_label_positive")
    model = trainer.model
    with torch.no_grad():
        # the difference is exactly 0.5 x the triplet loss of anchors against in-batch labels
        sizes = batch["segment_sizes"].tolist()
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        parts = torch.split(model(**inputs).pooler_output, sizes)
        expected = multi_positive_triplet_loss(parts[2], parts[1], carried, row_mask_b=carried.any(dim=1), margin=args.margin,
                                               num_negatives=args.num_negatives)
    assert full - labels_only == pytest.approx(0.5 * float(expected), abs=1e-5)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert "loss_anchor_labels_cites" in logs[0] and logs[0]["graph_weight_cites"] == 0.0
    with pytest.raises(ValueError, match="anchor_label_weight"):
        arguments(tmp_path, anchor_label_weight=-1.0)


def test_label_aware_graph_negatives_reach_the_loss(tmp_path, tokenizer):
    data = synthetic_data()
    args = arguments(tmp_path, graph_weights="cites=0.5", graph_negatives="shared_label")
    trainer = RamenTrainer(model=tiny_encoder(), args=args, data=data, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    spared = batch["graph_cites_spared"]
    assert spared.shape == batch["graph_cites_linked"].shape and not bool((spared & batch["graph_cites_linked"]).any())
    assert bool(spared.any())  # the synthetic graph links label-sharing points, so some anchors are spared
    # the trainer's loss uses the mask: the same batch scores differently without it
    with_mask, plain = loss_with_and_without(trainer, batch, "graph_cites_spared")
    assert with_mask != pytest.approx(plain)
    trainer.train()
    assert any("loss_graph_cites" in log for log in trainer.state.log_history)
    with pytest.raises(ValueError, match="graph_negatives"):
        arguments(tmp_path, graph_negatives="none")
