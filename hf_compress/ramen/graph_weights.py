"""Re-weighting and pruning of metadata graphs with the current encoder's embeddings.

A metadata graph (train points x anchors) can be noisy: a citation or co-readership link does not always mean
the two texts are about the same thing. RAMEN re-weights every edge with the cosine similarity of the point's
and the anchor's embeddings and normalises the bipartite weight matrix symmetrically,

    W[p, a]  = max(cos(e_p, e_a), 0)                     (only for edges of the original graph)
    Ŵ[p, a]  = W[p, a] / sqrt(d_p * d_a)                 d_p = sum_a W[p, a] (point degree), d_a = sum_p W[p, a]

i.e. ``Ŵ = D_points^-1/2 W D_anchors^-1/2``. Edges whose normalised weight is at or below a threshold are
dropped (with the default threshold 0 only edges with a non-positive cosine go). The collator then samples a
point's anchors with probability proportional to Ŵ, and the pruned edge set decides which anchors count as
positives of the graph loss.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["edge_cosines", "normalise_bipartite", "reweight_graph"]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _csr(matrix) -> sp.csr_matrix:
    """CSR copy with summed duplicates, sorted indices and no explicit zeros."""
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def edge_cosines(
    matrix: sp.csr_matrix, point_embeddings: np.ndarray, anchor_embeddings: np.ndarray, chunk_edges: int = 65536
) -> np.ndarray:
    """Cosine similarity of every stored edge of ``matrix`` (CSR order), float64 [nnz].

    ``point_embeddings`` has one row per matrix row, ``anchor_embeddings`` one row per matrix column; rows need not
    be normalised. Work is done ``chunk_edges`` edges at a time so big graphs do not gather nnz x dim at once.
    """
    matrix = sp.csr_matrix(matrix)
    if point_embeddings.shape[0] != matrix.shape[0] or anchor_embeddings.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"edge_cosines: a {matrix.shape[0]} x {matrix.shape[1]} graph needs {matrix.shape[0]} point and "
            f"{matrix.shape[1]} anchor embeddings, got {point_embeddings.shape[0]} and {anchor_embeddings.shape[0]}."
        )
    points, anchors = _unit_rows(point_embeddings), _unit_rows(anchor_embeddings)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    cols = matrix.indices
    out = np.empty(matrix.nnz, dtype=np.float64)
    for start in range(0, matrix.nnz, chunk_edges):
        stop = start + chunk_edges
        out[start:stop] = np.einsum("ed,ed->e", points[rows[start:stop]], anchors[cols[start:stop]])
    return out


def normalise_bipartite(weights: sp.csr_matrix) -> sp.csr_matrix:
    """``D_r^-1/2 W D_c^-1/2`` with row degrees ``D_r`` and column degrees ``D_c`` of the non-negative ``weights``.

    Returns float64 CSR with the same stored pattern (entries whose row or column degree is 0 are 0 themselves).
    """
    weights = sp.csr_matrix(weights, dtype=np.float64, copy=True)
    if weights.nnz and weights.data.min() < 0:
        raise ValueError("normalise_bipartite: edge weights must be non-negative.")
    row_degree = np.asarray(weights.sum(axis=1)).ravel()
    col_degree = np.asarray(weights.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        row_scale = np.where(row_degree > 0, 1.0 / np.sqrt(row_degree), 0.0)
        col_scale = np.where(col_degree > 0, 1.0 / np.sqrt(col_degree), 0.0)
    rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
    weights.data = weights.data * row_scale[rows] * col_scale[weights.indices]
    return weights


def reweight_graph(
    matrix: sp.csr_matrix, point_embeddings: np.ndarray, anchor_embeddings: np.ndarray, min_weight: float = 0.0
) -> sp.csr_matrix:
    """The pruned, cosine-weighted and normalised graph (float32 CSR, same shape as ``matrix``).

    Every stored edge of ``matrix`` (its original weight is ignored) gets ``max(cos(point, anchor), 0)``; the
    result is normalised with :func:`normalise_bipartite` and edges with a normalised weight ``<= min_weight`` are
    removed, so every stored entry of the result is a positive sampling weight.
    """
    if min_weight < 0:
        raise ValueError(f"reweight_graph: min_weight must be >= 0, got {min_weight}.")
    pattern = _csr(matrix)
    cosines = edge_cosines(pattern, point_embeddings, anchor_embeddings)
    weights = sp.csr_matrix((np.maximum(cosines, 0.0), pattern.indices.copy(), pattern.indptr.copy()),
                            shape=pattern.shape)
    normalised = normalise_bipartite(weights)
    normalised.data[normalised.data <= min_weight] = 0.0
    normalised = _csr(normalised)
    return normalised.astype(np.float32)
