"""Batches for RAMEN training: points, one sampled positive label each, and sampled graph anchors.

All texts of a batch (points, then labels, then the anchors of each graph) are tokenized into ONE padded
tensor so the encoder runs once per step (one forward keeps DDP's gradient hooks simple). Masks say which
in-batch label is relevant to which point (from the full label matrix, so a label sampled for one point is
a positive, not a negative, for every other point that has it) and which anchor is linked to which point.

Graph anchors are sampled uniformly from a point's edges, or, for the graphs named in ``weighted_graphs`` (e.g. a
graph re-weighted by embedding similarity, see :mod:`hf_compress.ramen.graph_weights`), with probability
proportional to the edge weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class RamenCollator:
    """Turns rows with a ``point_id`` into an encoder batch plus the masks of the losses.

    ``graphs`` maps a graph name to (train points x anchors matrix, anchor texts); ``mined_negatives`` (optional,
    [num_points, k] label ids, -1 padded) adds one mined hard-negative label per point to the candidates.
    ``weighted_graphs`` names the graphs whose anchors are drawn with probability proportional to the edge weight
    (without replacement; zero-weight edges are never drawn); the others, and the labels, are drawn uniformly.
    ``graph_negatives="shared_label"`` adds ``graph_<name>_spared`` [B, A]: the anchors of in-batch points that share a
    label with a point are not negatives for it. Cluster batches put similar points together, so without it their
    anchors, mostly relevant texts, are a point's hardest graph negatives. Only the batch points' labels are used.
    ``anchor_labels=True`` adds ``graph_<name>_anchor_label_positive`` [A, L]: an in-batch label is a positive of a
    sampled anchor when a train point linked to that anchor has it (labels carried over the graph edges, ``Aᵀ Y``), so
    anchors can serve as extra, graph-labelled queries. Every sampled anchor has at least the label sampled for the
    point it was drawn for.
    """

    tokenizer: object
    point_texts: list[str]
    labels: sp.csr_matrix
    label_texts: list[str]
    graphs: dict[str, tuple[sp.csr_matrix, list[str]]] = field(default_factory=dict)
    max_length: int = 32
    label_max_length: int | None = None
    anchors_per_point: int = 1
    seed: int = 0
    mined_negatives: np.ndarray | None = None
    weighted_graphs: set[str] = field(default_factory=set)
    graph_negatives: str = "all"
    anchor_labels: bool = False

    def __post_init__(self) -> None:
        if self.graph_negatives not in ("all", "shared_label"):
            raise ValueError(f"RamenCollator: graph_negatives must be 'all' or 'shared_label', got {self.graph_negatives!r}.")
        self.labels = sp.csr_matrix(self.labels)
        if self.labels.shape[0] != len(self.point_texts):
            raise ValueError(
                f"RamenCollator: {len(self.point_texts)} point texts but a label matrix with {self.labels.shape[0]} rows."
            )
        for name, (matrix, anchor_texts) in self.graphs.items():
            if matrix.shape != (len(self.point_texts), len(anchor_texts)):
                raise ValueError(
                    f"RamenCollator: graph {name!r} is {matrix.shape[0]} x {matrix.shape[1]} but there are "
                    f"{len(self.point_texts)} points and {len(anchor_texts)} anchor texts."
                )
        self.graphs = {name: (sp.csr_matrix(m), texts) for name, (m, texts) in self.graphs.items()}
        self.weighted_graphs = set(self.weighted_graphs)
        unknown = sorted(self.weighted_graphs - set(self.graphs))
        if unknown:
            raise ValueError(f"RamenCollator: weighted_graphs names {unknown}, which are not among the graphs {sorted(self.graphs)}.")
        for name in self.weighted_graphs:
            self._check_weights(name, self.graphs[name][0])
        self._anchor_labels = {name: self._carry_labels(matrix) for name, (matrix, _) in self.graphs.items()} if self.anchor_labels else {}
        self._rng = np.random.default_rng(self.seed)

    @property
    def segment_names(self) -> list[str]:
        return ["points", "labels", *[f"graph_{name}" for name in self.graphs]]

    @staticmethod
    def _check_weights(name: str, matrix: sp.csr_matrix) -> None:
        if matrix.nnz and not (np.all(np.isfinite(matrix.data)) and matrix.data.min() >= 0):
            raise ValueError(f"RamenCollator: graph {name!r} is sampled by weight, so its weights must be finite and >= 0.")

    def _carry_labels(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """Anchors x labels, nonzero where a train point linked to the anchor (edge weight > 0) has the label."""
        linked = sp.csr_matrix(matrix > 0, dtype=np.float32)
        labelled = sp.csr_matrix(self.labels > 0, dtype=np.float32)
        return sp.csr_matrix(linked.T @ labelled)

    def set_graph(self, name: str, matrix: sp.csr_matrix, weighted: bool = True) -> None:
        """Replace the matrix of graph ``name`` (same shape, same anchor texts), e.g. by a re-weighted, pruned one;
        ``weighted`` = sample its anchors in proportion to the edge weights from now on."""
        if name not in self.graphs:
            raise KeyError(f"RamenCollator: no graph {name!r}; graphs: {sorted(self.graphs)}.")
        old, texts = self.graphs[name]
        matrix = sp.csr_matrix(matrix)
        if matrix.shape != old.shape:
            raise ValueError(f"RamenCollator: graph {name!r} is {old.shape[0]} x {old.shape[1]}, the new matrix is "
                             f"{matrix.shape[0]} x {matrix.shape[1]}.")
        if weighted:
            self._check_weights(name, matrix)
            self.weighted_graphs.add(name)
        else:
            self.weighted_graphs.discard(name)
        self.graphs[name] = (matrix, texts)
        if self.anchor_labels:
            self._anchor_labels[name] = self._carry_labels(matrix)

    def _sample_neighbours(
        self, matrix: sp.csr_matrix, point_ids: np.ndarray, count: int, weighted: bool = False
    ) -> list[int]:
        chosen: list[int] = []
        for point in point_ids:
            start, stop = matrix.indptr[point], matrix.indptr[point + 1]
            row = matrix.indices[start:stop]
            if weighted:
                weights = matrix.data[start:stop].astype(np.float64)
                positive = weights > 0
                row, weights = row[positive], weights[positive]
            if len(row):
                take = min(count, len(row))
                p = weights / weights.sum() if weighted else None
                chosen.extend(self._rng.choice(row, size=take, replace=False, p=p).tolist())
        return chosen

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        point_ids = np.asarray([int(f["point_id"]) for f in features], dtype=np.int64)
        label_ids = self._sample_neighbours(self.labels, point_ids, 1)
        if self.mined_negatives is not None:
            mined = self.mined_negatives[point_ids]
            for row in mined:
                valid = row[row >= 0]
                if len(valid):
                    label_ids.append(int(self._rng.choice(valid)))
        label_ids = np.unique(np.asarray(label_ids, dtype=np.int64))
        texts = [self.point_texts[i] for i in point_ids] + [self.label_texts[i] for i in label_ids]
        batch: dict[str, torch.Tensor] = {}
        sizes = [len(point_ids), len(label_ids)]
        batch["label_positive"] = torch.from_numpy(self.labels[point_ids][:, label_ids].toarray() > 0)
        if self.graph_negatives == "shared_label" and self.graphs:
            point_labels = self.labels[point_ids]
            shares_bb = (point_labels @ point_labels.T).toarray() > 0  # includes the point itself
        for name, (matrix, anchor_texts) in self.graphs.items():
            sampled = self._sample_neighbours(matrix, point_ids, self.anchors_per_point, weighted=name in self.weighted_graphs)
            anchor_ids = np.unique(np.asarray(sampled, dtype=np.int64))
            texts += [anchor_texts[i] for i in anchor_ids]
            sizes.append(len(anchor_ids))
            linked_ba = matrix[point_ids][:, anchor_ids].toarray() > 0
            batch[f"graph_{name}_linked"] = torch.from_numpy(linked_ba)
            if self.graph_negatives == "shared_label":
                spared_ba = (shares_bb.astype(np.int32) @ linked_ba.astype(np.int32)) > 0
                batch[f"graph_{name}_spared"] = torch.from_numpy(spared_ba & ~linked_ba)
            if self.anchor_labels:
                carried_al = self._anchor_labels[name][anchor_ids][:, label_ids].toarray() > 0
                batch[f"graph_{name}_anchor_label_positive"] = torch.from_numpy(carried_al)
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch.update(encoded)
        batch["segment_sizes"] = torch.tensor(sizes, dtype=torch.long)
        batch["point_ids"] = torch.from_numpy(point_ids)
        return batch
