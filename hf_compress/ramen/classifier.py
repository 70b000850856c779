"""One-vs-all classifier stage (NGAME/DEXA style) on top of a frozen RAMEN encoder.

Each label gets a vector initialised from its text embedding (so the stage starts where the encoder is) and
a bias; they are trained with binary cross-entropy over an ANN shortlist of each point plus its positives, the
encoder frozen (point embeddings computed once). At prediction the encoder's shortlist is re-scored with a
fusion ``w * sigmoid(classifier) + (1 - w) * cosine``.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class OneVsAllClassifier(nn.Module):
    """Per-label vectors [num_labels, dim] and biases; ``logits(x, ids)`` scores only the given candidates."""

    def __init__(self, num_labels: int, dim: int, label_embeddings: np.ndarray | torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_labels, dim))
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.scale = nn.Parameter(torch.tensor(10.0))  # cosine-sized logits need a scale for BCE to separate
        if label_embeddings is not None:
            init = torch.as_tensor(np.asarray(label_embeddings), dtype=torch.float32)
            if init.shape != self.weight.shape:
                raise ValueError(f"label_embeddings shape {tuple(init.shape)} != [num_labels, dim] {tuple(self.weight.shape)}.")
            self.weight.data.copy_(init)
        else:
            nn.init.normal_(self.weight, std=dim**-0.5)

    def logits(self, x_bd: torch.Tensor, candidate_ids_bc: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of each point's candidates (ids < 0 are padding and get -inf)."""
        safe_bc = candidate_ids_bc.clamp(min=0)
        w_bcd = self.weight[safe_bc]
        out_bc = self.scale * torch.einsum("bd,bcd->bc", x_bd, w_bcd) + self.bias[safe_bc]
        return out_bc.masked_fill(candidate_ids_bc < 0, float("-inf"))

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.detach().cpu().contiguous(), "bias": self.bias.detach().cpu().contiguous(),
                "scale": self.scale.detach().cpu().reshape(1).contiguous()}

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor]) -> "OneVsAllClassifier":
        weight = tensors["weight"]
        model = cls(weight.shape[0], weight.shape[1])
        model.weight.data.copy_(weight)
        model.bias.data.copy_(tensors["bias"])
        model.scale.data.copy_(tensors["scale"].reshape(()))
        return model


def _candidates(shortlist_nk: np.ndarray, labels: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: shortlist ids plus positives (deduplicated, -1 padded) and their 0/1 targets."""
    lists = []
    for r in rows:
        positives = labels.indices[labels.indptr[r] : labels.indptr[r + 1]]
        short = shortlist_nk[r][shortlist_nk[r] >= 0]
        lists.append((np.unique(np.concatenate([short, positives])), set(positives.tolist())))
    width = max(len(ids) for ids, _ in lists)
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    targets = np.zeros((len(rows), width), dtype=np.float32)
    for i, (cand, positives) in enumerate(lists):
        ids[i, : len(cand)] = cand
        targets[i, : len(cand)] = [1.0 if c in positives else 0.0 for c in cand]
    return ids, targets


def train_classifier(
    point_embeddings: np.ndarray,
    labels: sp.csr_matrix,
    label_embeddings: np.ndarray,
    shortlist_nk: np.ndarray,
    epochs: int = 5,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[OneVsAllClassifier, list[float]]:
    """Fit label vectors on frozen point embeddings; returns the classifier and the mean loss per epoch."""
    labels = sp.csr_matrix(labels)
    num_points = point_embeddings.shape[0]
    if labels.shape[0] != num_points or shortlist_nk.shape[0] != num_points:
        raise ValueError(
            f"train_classifier: {num_points} point embeddings, {labels.shape[0]} label rows and "
            f"{shortlist_nk.shape[0]} shortlist rows must agree."
        )
    classifier = OneVsAllClassifier(labels.shape[1], point_embeddings.shape[1], label_embeddings)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=learning_rate)
    x_nd = torch.as_tensor(point_embeddings, dtype=torch.float32)
    generator = np.random.default_rng(seed)
    history = []
    for epoch in tqdm(range(epochs), desc="classifier", disable=not show_progress):
        order = generator.permutation(num_points)
        losses = []
        for start in range(0, num_points, batch_size):
            rows = order[start : start + batch_size]
            ids, targets = _candidates(shortlist_nk, labels, rows)
            ids_t = torch.from_numpy(ids)
            logits = classifier.logits(x_nd[rows], ids_t)
            valid = ids_t >= 0
            loss = F.binary_cross_entropy_with_logits(logits[valid], torch.from_numpy(targets)[valid])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        logger.info("classifier epoch %d: bce %.4f", epoch + 1, history[-1])
    return classifier, history


@torch.no_grad()
def fuse_scores(
    classifier: OneVsAllClassifier | None,
    point_embeddings: np.ndarray,
    shortlist_ids: np.ndarray,
    shortlist_scores: np.ndarray,
    weight: float,
) -> np.ndarray:
    """Fused scores [N, K] of a shortlist: ``weight * sigmoid(classifier) + (1 - weight) * cosine``."""
    if classifier is None or weight == 0.0:
        return shortlist_scores.astype(np.float32)
    logits = classifier.logits(torch.as_tensor(point_embeddings, dtype=torch.float32), torch.from_numpy(shortlist_ids))
    fused = weight * torch.sigmoid(logits).numpy() + (1.0 - weight) * shortlist_scores
    return np.where(shortlist_ids >= 0, fused, -np.inf).astype(np.float32)
