"""Top-k label prediction for new texts, and XC evaluation of a trained RAMEN model.

``XCPredictor`` = encoder + tokenizer + label texts + an ANN index over label embeddings (+ the optional
one-vs-all classifier). It is saved into the encoder's folder (under ``xc/``), so one folder is both a
sentence-transformers model and a ready-to-serve XC predictor. No metadata graph is involved anywhere here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from .classifier import OneVsAllClassifier, fuse_scores
from .metrics import METRIC_NAMES, inverse_propensity, load_metric
from .mining import EmbeddingIndex
from .modeling_ramen import RamenEncoder

logger = logging.getLogger(__name__)
XC_FOLDER = "xc"


def label_vectors_with_points(
    label_embeddings: np.ndarray,
    point_embeddings: np.ndarray,
    point_labels: sp.spmatrix,
    text_weight: float = 1.0,
) -> np.ndarray:
    """One vector per label from its text *and* its training points: ``normalize(text_weight * e(text) + mean e(x))``
    over the train points x that have the label; labels without a train point keep their text embedding.

    Why: a point is then scored against the label's known documents as well as its (often two-word) name, so an
    encoder whose document space is organised well (what a metadata-graph regularizer shapes) helps retrieval too.
    Same number and size of vectors as text-only labels, so the index and the query cost do not change.
    """
    labels = (sp.csr_matrix(point_labels) != 0).astype(np.float32)  # a new, binary matrix; the caller's stays as is
    if labels.shape != (point_embeddings.shape[0], label_embeddings.shape[0]):
        raise ValueError(
            f"label_vectors_with_points: a {labels.shape[0]} x {labels.shape[1]} label matrix does not match "
            f"{point_embeddings.shape[0]} point and {label_embeddings.shape[0]} label embeddings."
        )
    if text_weight < 0:
        raise ValueError(f"label_vectors_with_points: text_weight must be >= 0, got {text_weight}.")
    counts = np.asarray(labels.sum(axis=0)).ravel()
    sums = np.asarray(labels.T @ point_embeddings, dtype=np.float64)
    means = sums / np.maximum(counts, 1)[:, None]
    vectors = text_weight * label_embeddings.astype(np.float64) + means
    vectors[counts == 0] = label_embeddings[counts == 0]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class XCPredictor:
    """Encode texts, search the label index, optionally re-score with the classifier, return the top k."""

    def __init__(
        self,
        encoder: RamenEncoder,
        tokenizer,
        label_texts: list[str],
        label_embeddings: np.ndarray | None = None,
        classifier: OneVsAllClassifier | None = None,
        fusion_weight: float = 0.0,
        index_backend: str = "auto",
        shortlist_size: int = 50,
        batch_size: int = 256,
        label_vectors: str = "text",
    ) -> None:
        self.encoder = encoder
        self.label_vectors = label_vectors  # how label_embeddings were made ("text" or "text+points"); saved
        self.tokenizer = tokenizer
        self.label_texts = list(label_texts)
        self.classifier = classifier
        self.fusion_weight = float(fusion_weight)
        self.shortlist_size = int(shortlist_size)
        self.batch_size = batch_size
        if label_embeddings is None:
            label_embeddings = encoder.encode(self.label_texts, tokenizer, batch_size=batch_size)
        if label_embeddings.shape[0] != len(self.label_texts):
            raise ValueError(f"{label_embeddings.shape[0]} label embeddings for {len(self.label_texts)} label texts.")
        self.label_embeddings = np.ascontiguousarray(label_embeddings, dtype=np.float32)
        self.index = EmbeddingIndex(self.label_embeddings.shape[1], backend=index_backend)
        self.index.add(self.label_embeddings)

    def embed(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self.encoder.encode(list(texts), self.tokenizer, batch_size=self.batch_size, show_progress=show_progress)

    def top_k_from_embeddings(self, embeddings: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(label ids [N, k], scores [N, k]) for point embeddings, best first."""
        use_classifier = self.classifier is not None and self.fusion_weight > 0
        depth = max(k, self.shortlist_size) if use_classifier else k
        depth = min(depth, len(self.label_texts))
        scores, ids = self.index.search(np.ascontiguousarray(embeddings, dtype=np.float32), depth)
        if use_classifier:
            scores = fuse_scores(self.classifier, embeddings, ids, scores, self.fusion_weight)
            order = np.argsort(-scores, axis=1, kind="stable")
            ids = np.take_along_axis(ids, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
        ids, scores = ids[:, :k], scores[:, :k]
        if ids.shape[1] < k:  # fewer labels than k: pad like the metrics expect
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids, scores

    def predict(self, texts: str | list[str], k: int = 5) -> list[list[dict]]:
        """For each text, its k best labels as ``{"label": text, "label_id": id, "score": float}``, best first."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        ids, scores = self.top_k_from_embeddings(self.embed(texts), k)
        results = [
            [{"label": self.label_texts[i], "label_id": int(i), "score": float(s)} for i, s in zip(row_ids, row_scores) if i >= 0]
            for row_ids, row_scores in zip(ids, scores)
        ]
        return results[0] if single else results

    # -- persistence -----------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        folder = Path(save_directory)
        self.encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        xc = folder / XC_FOLDER
        xc.mkdir(parents=True, exist_ok=True)
        (xc / "label_texts.json").write_text(json.dumps(self.label_texts, ensure_ascii=False))
        save_file({"label_embeddings": torch.from_numpy(self.label_embeddings)}, str(xc / "label_embeddings.safetensors"))
        if self.classifier is not None:
            save_file(self.classifier.state_dict_for_save(), str(xc / "classifier.safetensors"))
        settings = {
            "fusion_weight": self.fusion_weight,
            "shortlist_size": self.shortlist_size,
            "index_backend": self.index.backend,
            "num_labels": len(self.label_texts),
            "label_vectors": self.label_vectors,
        }
        (xc / "predictor.json").write_text(json.dumps(settings, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        index_backend: str | None = None,
        revision: str | None = None,
        encoder_backend: str = "torch",
        num_threads: int | None = None,
    ) -> "XCPredictor":
        """Load from a local folder or a Hub repo id (the whole snapshot: encoder, tokenizer and ``xc/``).

        ``encoder_backend="onnxruntime"`` encodes queries with ``onnx/encoder.onnx`` (exported on first use, checked
        against PyTorch): the same embeddings, about 3x lower single-query latency on CPU. ``num_threads`` sets
        onnxruntime's intra-op threads (default: its own choice).
        """
        if encoder_backend not in ("torch", "onnxruntime"):
            raise ValueError(f"encoder_backend must be 'torch' or 'onnxruntime', got {encoder_backend!r}.")
        from transformers import AutoTokenizer

        if not Path(folder).exists() and "/" in str(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(str(folder), revision=revision)
        folder = Path(folder)
        xc = folder / XC_FOLDER
        missing = [name for name in ("predictor.json", "label_texts.json", "label_embeddings.safetensors") if not (xc / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} is not a saved XC predictor: {', '.join(XC_FOLDER + '/' + m for m in missing)} missing. "
                "Save one with XCPredictor.save_pretrained (or RamenTrainer.save_predictor); a folder with only the "
                "encoder loads with RamenEncoder.from_pretrained."
            )
        settings = json.loads((xc / "predictor.json").read_text())
        label_texts = json.loads((xc / "label_texts.json").read_text())
        embeddings = load_file(str(xc / "label_embeddings.safetensors"))["label_embeddings"].numpy()
        classifier = None
        if (xc / "classifier.safetensors").is_file():
            classifier = OneVsAllClassifier.from_saved(load_file(str(xc / "classifier.safetensors")))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if encoder_backend == "onnxruntime":
            from .onnx_encoder import OnnxRamenEncoder

            encoder = OnnxRamenEncoder.from_pretrained(folder, num_threads=num_threads, tokenizer=tokenizer)
        else:
            encoder = RamenEncoder.from_pretrained(folder)
        return cls(
            encoder,
            tokenizer,
            label_texts,
            label_embeddings=embeddings,
            classifier=classifier,
            fusion_weight=settings.get("fusion_weight", 0.0),
            index_backend=index_backend or settings.get("index_backend", "auto"),
            shortlist_size=settings.get("shortlist_size", 50),
            label_vectors=settings.get("label_vectors", "text"),
        )


def evaluate_xc(
    predictor: XCPredictor,
    texts: list[str],
    labels,
    train_labels=None,
    ks: tuple[int, ...] = (1, 3, 5),
    filter_pairs: np.ndarray | None = None,
    propensity_a: float = 0.55,
    propensity_b: float = 1.5,
    point_embeddings: np.ndarray | None = None,
) -> dict[str, float]:
    """P@k, nDCG@k (and PSP@k, PSnDCG@k when ``train_labels`` gives label frequencies) in percent.

    Scored by the bundled ``evaluate`` modules (``hf_compress.ramen.metrics.load_metric``), the same ones users
    load with ``evaluate.load``.
    """
    if point_embeddings is None:
        point_embeddings = predictor.embed(texts)
    depth = max(ks) + (0 if filter_pairs is None else 5)
    ids, _ = predictor.top_k_from_embeddings(point_embeddings, depth)
    propensity = None
    if train_labels is not None:
        propensity = inverse_propensity(train_labels, A=propensity_a, B=propensity_b)
    labels = sp.csr_matrix(labels)
    references = [row.tolist() for row in np.split(labels.indices, labels.indptr[1:-1])]
    predictions = ids.tolist()
    common = {"k": list(ks), "filter_pairs": filter_pairs, "num_labels": len(predictor.label_texts)}
    metrics: dict[str, float] = {}
    for name in METRIC_NAMES:
        extra = {}
        if name.startswith("ps"):
            if propensity is None:
                continue
            extra["inv_propensity"] = propensity
        module = _metric_module(name)
        metrics.update(module.compute(predictions=predictions, references=references, **common, **extra))
    return {name: 100.0 * value for name, value in metrics.items()}


_METRIC_MODULES: dict = {}


def _metric_module(name: str):
    """The local ``evaluate`` module ``name``, loaded once per process."""
    if name not in _METRIC_MODULES:
        _METRIC_MODULES[name] = load_metric(name)
    return _METRIC_MODULES[name]
