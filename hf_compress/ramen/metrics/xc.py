"""Extreme-classification (XC) ranking metrics: P@k, nDCG@k, PSP@k and PSnDCG@k.

Pure numpy / scipy.sparse. The conventions follow the Extreme Classification Repository (Bhatia et al.,
2016) and its reference evaluation code; the propensity model is that of Jain, Prabhu & Varma (KDD 2016).
This is an independent implementation of the published definitions.

Notation
--------
For a test point ``i`` let ``y_i`` be its set of relevant labels (a row of the binary label matrix ``Y``)
and ``p_1, p_2, ...`` its ranked predicted label ids (best first). ``y_i[l]`` is 1 if ``l`` is relevant and
0 otherwise; an empty prediction slot (id ``-1``) scores 0.

* **Inverse propensity** of label ``l`` (Jain et al. 2016)::

      w_l = 1 + C * (n_l + B) ** (-A),     C = (ln N - 1) * (B + 1) ** A

  with ``N`` the number of training points and ``n_l`` the number of training points tagged with ``l``.
  Defaults ``A, B = 0.55, 1.5``; the repository uses ``0.5, 0.4`` for Wikipedia and ``0.6, 2.6`` for
  Amazon data sets. Rare labels get a large ``w_l``.

* **P@k** = mean over points of ``(1/k) * sum_{r<=k} y_i[p_r]``.

* **nDCG@k** = mean over points of ``DCG_i@k / IDCG_i@k`` with ``DCG_i@k = sum_{r<=k} y_i[p_r] / log2(r+1)``
  and ``IDCG_i@k = sum_{r<=min(k, |y_i|)} 1 / log2(r+1)`` (all relevant labels ranked first).

* **PSP@k** (propensity-scored precision) is a ratio of *data-set totals*, normalised by the best
  achievable value::

      PSP@k = [sum_i sum_{r<=k} w[p_r] * y_i[p_r] / k] / [sum_i (sum of the min(k, |y_i|) largest w_l, l in y_i) / k]

  so a perfect ranking scores exactly 1. (The unnormalised variant found in some papers is the numerator
  divided by the number of points; it is not bounded by 1 and is not what is reported here.)

* **PSnDCG@k** likewise::

      PSnDCG@k = sum_i PSDCG_i@k / sum_i ideal-PSDCG_i@k,    PSDCG_i@k = sum_{r<=k} w[p_r] * y_i[p_r] / log2(r+1)

  where the ideal PSDCG places ``y_i``'s largest-``w`` labels first.

All values are fractions in ``[0, 1]``.

Points with no relevant label
-----------------------------
By default such points **stay in the mean** of P@k / nDCG@k and contribute 0 to it, so a test set with
empty rows can never reach 1.0 (this is what the repository's evaluation code does, because test points
that lost all their labels are usually kept). ``ignore_empty=True`` drops them from the mean instead. For
PSP@k / PSnDCG@k an empty point adds 0 to both the numerator and the normaliser, so ``ignore_empty`` does
not change them. With no point left (or a zero normaliser) a metric is reported as 0.0.

Predictions and filtering
-------------------------
Predictions are ranked label ids, one row per point; ``-1`` is an empty slot (it occupies its rank and
scores 0; rows shorter than ``k`` are padded with ``-1``). A label id may occur at most once per row — a
repeated id would be counted twice by P@k, so it raises ``ValueError``.

``filter_pairs`` (``[n, 2]`` array of ``(row, label)``) implements the repository's convention for
"reciprocal pairs" (e.g. a Wikipedia article that would predict itself among its see-also links): every
such pair is deleted from the references *and* from the predictions before scoring, and the predictions
ranked after a deleted one move up one rank. To keep the pairs out of the ranking in the first place,
pass ``filter_matrix(pairs, shape)`` as ``exclude=`` to :func:`top_k`.

:func:`top_k` orders candidates by score descending and breaks ties by the *lower* label id, so the result
does not depend on the sort algorithm, the platform or the storage order of a sparse matrix.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["filter_matrix", "inverse_propensity", "top_k", "xc_metrics"]

# Rows of a dense score matrix handled at once by ``top_k`` (bounds the temporary arrays to ~16M entries).
_TOPK_CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------------------------------------
# propensity
# ----------------------------------------------------------------------------------------------------------
def inverse_propensity(
    train_labels: Any,
    num_points: int | None = None,
    A: float = 0.55,
    B: float = 1.5,
) -> np.ndarray:
    """Inverse propensity ``w_l = 1 + (ln N - 1)(B + 1)^A (n_l + B)^(-A)`` of every label (float64 ``[L]``).

    Args:
        train_labels: the training label matrix ``[N, L]`` (scipy sparse or a 2-D numpy array; an entry
            counts when it is non-zero, so ``n_l`` is the number of training points tagged with ``l``), or
            a 1-D array of per-label training counts ``n_l`` (then ``num_points`` is required).
        num_points: ``N``, the number of training points. Defaults to the number of rows of the matrix.
        A, B: the propensity-model constants (0.55 / 1.5 by default; 0.5 / 0.4 Wikipedia, 0.6 / 2.6 Amazon).
    """
    if sp.issparse(train_labels):
        matrix = sp.csc_matrix(train_labels)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        counts = np.diff(matrix.indptr).astype(np.float64)
        rows = matrix.shape[0]
    else:
        arr = np.asarray(_to_numpy(train_labels))
        if arr.ndim == 2:
            counts = (arr != 0).sum(axis=0).astype(np.float64)
            rows = arr.shape[0]
        elif arr.ndim == 1:
            if num_points is None:
                raise ValueError("inverse_propensity: num_points (N) is required when passing per-label counts")
            counts = arr.astype(np.float64)
            rows = None
        else:
            raise ValueError(f"inverse_propensity: expected a [N, L] matrix or [L] counts, got shape {arr.shape}")
    n = rows if num_points is None else num_points
    if n is None or int(n) != n or n < 1:
        raise ValueError(f"inverse_propensity: num_points must be a positive integer, got {n!r}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("inverse_propensity: label counts must be finite and non-negative")
    if B <= 0 and np.any(counts + B <= 0):
        raise ValueError(f"inverse_propensity: n_l + B must be positive (B={B})")
    c = (math.log(n) - 1.0) * (B + 1.0) ** A
    return 1.0 + c * np.power(counts + B, -A)


# ----------------------------------------------------------------------------------------------------------
# ranking
# ----------------------------------------------------------------------------------------------------------
def filter_matrix(pairs: Any, shape: tuple[int, int]) -> sp.csr_matrix:
    """A boolean ``csr_matrix`` of ``shape`` with ``True`` at each ``(row, label)`` pair (for ``exclude=``)."""
    n_rows, n_cols = (int(s) for s in shape)
    pairs = _as_pairs(pairs)
    if len(pairs):
        bad = (pairs[:, 0] < 0) | (pairs[:, 0] >= n_rows) | (pairs[:, 1] < 0) | (pairs[:, 1] >= n_cols)
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(f"filter pair {j} = {tuple(pairs[j].tolist())} is outside the shape {(n_rows, n_cols)}")
    data = np.ones(len(pairs), dtype=bool)
    out = sp.csr_matrix((data, (pairs[:, 0], pairs[:, 1])), shape=(n_rows, n_cols), dtype=bool)
    out.sum_duplicates()
    out.sort_indices()
    return out


def top_k(scores: Any, k: int, exclude: Any = None) -> np.ndarray:
    """The ``k`` best label ids of every row of ``scores``: an int64 array ``[N, k]``.

    Args:
        scores: ``[N, L]`` scores — a dense numpy array, a torch tensor (dense or sparse COO) or a scipy
            sparse matrix. For sparse input only the stored entries are candidates (an explicitly stored 0
            is a candidate, an absent entry is not); for dense input every entry is a candidate (``-inf``
            included, ranked last). NaN scores raise ``ValueError``.
        k: how many labels to return per row (``>= 1``).
        exclude: optional ``[N, L]`` sparse (or dense boolean) matrix whose non-zero entries are never
            returned — e.g. ``filter_matrix(filter_pairs, shape)`` or the training labels.

    Order is by score descending with ties broken by the lower label id. Rows with fewer than ``k``
    candidates are padded with ``-1``.
    """
    k = _check_k(k)
    scores = _scores_to_numpy_or_sparse(scores)
    if scores.ndim != 2:
        raise ValueError(f"top_k: scores must be 2-D [N, L], got shape {scores.shape}")
    n_rows, n_cols = scores.shape
    excl = _exclude_to_csr(exclude, (n_rows, n_cols))
    if sp.issparse(scores):
        return _top_k_sparse(scores, k, excl)
    return _top_k_dense(scores, k, excl)


def _top_k_dense(scores: np.ndarray, k: int, excl: sp.csr_matrix | None) -> np.ndarray:
    n_rows, n_cols = scores.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    if n_rows == 0 or n_cols == 0:
        return out
    if scores.dtype.kind not in "biuf":
        raise TypeError(f"top_k: scores must be numeric, got dtype {scores.dtype}")
    chunk = max(1, _TOPK_CHUNK_ELEMENTS // n_cols)
    for start in range(0, n_rows, chunk):
        stop = min(n_rows, start + chunk)
        s = np.array(scores[start:stop], dtype=np.float64)  # a copy: float64 keeps the order of any input
        if np.isnan(s).any():
            r = start + int(np.argmax(np.isnan(s).any(axis=1)))
            raise ValueError(f"top_k: scores contain NaN (row {r})")
        valid = np.ones(s.shape, dtype=bool)
        if excl is not None:
            sub = excl[start:stop].tocoo()
            valid[sub.row, sub.col] = False
            s[sub.row, sub.col] = -np.inf
        kk = min(k, n_cols)
        if kk < n_cols:
            # k-th largest (excluded entries are -inf, i.e. never above a candidate) -> everything >= it.
            # Ties at the threshold may select more than k entries; the sort below resolves them by id.
            thresh = -np.partition(-s, kk - 1, axis=1)[:, kk - 1]
            selected = valid & (s >= thresh[:, None])
        else:
            selected = valid
        rows, cols = np.nonzero(selected)
        _scatter_ranked(out, rows + start, cols, s[rows, cols], k)
    return out


def _top_k_sparse(scores: sp.spmatrix, k: int, excl: sp.csr_matrix | None) -> np.ndarray:
    n_rows, n_cols = scores.shape
    out = np.full((n_rows, k), -1, dtype=np.int64)
    coo = sp.coo_matrix(scores)
    # Canonical form (sums duplicate entries) without dropping explicitly stored zeros.
    csr = sp.csr_matrix((coo.data, (coo.row, coo.col)), shape=coo.shape)
    csr.sum_duplicates()
    if csr.dtype.kind not in "biuf":
        raise TypeError(f"top_k: scores must be numeric, got dtype {csr.dtype}")
    counts = np.diff(csr.indptr)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
    cols = csr.indices.astype(np.int64)
    vals = csr.data.astype(np.float64)
    if np.isnan(vals).any():
        raise ValueError(f"top_k: scores contain NaN (row {int(rows[np.argmax(np.isnan(vals))])})")
    if excl is not None and excl.nnz:
        ex = excl.tocoo()
        keep = ~np.isin(rows * n_cols + cols, ex.row.astype(np.int64) * n_cols + ex.col.astype(np.int64))
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        counts = np.bincount(rows, minlength=n_rows)
    if len(rows) == 0:
        return out
    # Each row's candidates go into a padded [rows, width] block (width = the block's longest row) so that a
    # per-row partition can cut them down to about k before the exact (score desc, id asc) sort.
    row_start = np.concatenate([[0], np.cumsum(counts)])
    start = 0
    while start < n_rows:
        stop, width = start, 0
        while stop < n_rows:
            grown = max(width, int(counts[stop]))
            if stop > start and (stop + 1 - start) * grown > _TOPK_CHUNK_ELEMENTS:
                break
            width, stop = grown, stop + 1
        lo, hi = row_start[start], row_start[stop]
        if width <= k:  # every candidate is kept
            _scatter_ranked(out, rows[lo:hi], cols[lo:hi], vals[lo:hi], k)
        else:
            r = rows[lo:hi] - start
            pos = np.arange(hi - lo) - (row_start[start:stop] - lo)[r]
            block_v = np.full((stop - start, width), -np.inf)
            block_c = np.full((stop - start, width), -1, dtype=np.int64)
            block_v[r, pos] = vals[lo:hi]
            block_c[r, pos] = cols[lo:hi]
            thresh = -np.partition(-block_v, k - 1, axis=1)[:, k - 1]
            sel_r, sel_j = np.nonzero((block_c >= 0) & (block_v >= thresh[:, None]))
            _scatter_ranked(out, sel_r + start, block_c[sel_r, sel_j], block_v[sel_r, sel_j], k)
        start = stop
    return out


def _scatter_ranked(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int) -> None:
    """Write the first ``k`` of each row's (score desc, id asc) order of the given entries into ``out``."""
    if len(rows) == 0:
        return
    order = np.lexsort((cols, -vals, rows))
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - starts
    keep = rank < k
    out[rows[keep], rank[keep]] = cols[keep]


# ----------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------
def xc_metrics(
    predictions: Any,
    references: Any,
    ks: int | Iterable[int] = (1, 3, 5),
    inv_propensity: Any = None,
    filter_pairs: Any = None,
    num_labels: int | None = None,
    ignore_empty: bool = False,
) -> dict[str, float]:
    """P@k and nDCG@k (and PSP@k, PSnDCG@k when ``inv_propensity`` is given) for every ``k`` in ``ks``.

    Args:
        predictions: ``[N, m]`` ranked label ids, best first (numpy / torch integer array, or a list of
            lists; ``-1`` = empty slot). Rows shorter than ``max(ks)`` are padded with ``-1``.
        references: the relevant labels — a scipy sparse ``[N, L]`` matrix (non-zero = relevant) or a list
            of ``N`` lists of label ids (``-1`` entries are ignored; a repeated id counts once). A dense 2-D
            numpy indicator matrix is rejected as ambiguous: wrap it in ``scipy.sparse.csr_matrix``.
        ks: the cut-offs, an int or an iterable of ints ``>= 1``.
        inv_propensity: ``[L]`` inverse propensities (see :func:`inverse_propensity`); enables PSP@k and
            PSnDCG@k.
        filter_pairs: ``[n, 2]`` ``(row, label)`` pairs deleted from references and predictions before
            scoring (later predictions move up).
        num_labels: ``L``. Defaults to the reference matrix width, else ``len(inv_propensity)``, else
            ``1 + `` the largest id seen.
        ignore_empty: drop points without relevant labels (after filtering) from the P@k / nDCG@k means.

    Returns:
        ``{"P@1": .., "P@3": .., ..., "nDCG@1": .., ...}`` plus ``"PSP@k"`` / ``"PSnDCG@k"`` — floats in
        ``[0, 1]``.

    Raises:
        ValueError: mismatched sizes, label ids ``< -1`` or ``>= num_labels``, or a label id repeated
        within one prediction row (the message names the row).
    """
    ks = _check_ks(ks)
    kmax = max(ks)
    preds = _predictions_to_array(predictions)
    n_points = preds.shape[0]

    ref_matrix = None
    ref_rows = ref_cols = None
    if sp.issparse(references):
        ref_matrix = sp.csr_matrix(references)
        n_ref = ref_matrix.shape[0]
    else:
        ref_rows, ref_cols, n_ref = _reference_lists(references)
    if n_ref != n_points:
        raise ValueError(f"predictions have {n_points} rows but references have {n_ref}")

    w = None
    if inv_propensity is not None:
        w = np.asarray(_to_numpy(inv_propensity), dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"inv_propensity must be 1-D [L], got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("inv_propensity must be finite and non-negative")

    # ---- the label space
    sizes = {}
    if num_labels is not None:
        sizes["num_labels"] = int(num_labels)
    if ref_matrix is not None:
        sizes["references.shape[1]"] = ref_matrix.shape[1]
    if w is not None:
        sizes["len(inv_propensity)"] = len(w)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inconsistent label-space sizes: {sizes}")
    if sizes:
        n_labels = next(iter(sizes.values()))
    else:
        hi = max(int(preds.max(initial=-1)), int(ref_cols.max(initial=-1)))
        n_labels = hi + 1

    _check_prediction_ids(preds, n_labels)
    if ref_matrix is None:
        bad = (ref_cols < 0) | (ref_cols >= n_labels)
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(
                f"references row {int(ref_rows[j])}: label id {int(ref_cols[j])} is outside [0, {n_labels})"
            )
        ref_matrix = sp.csr_matrix(
            (np.ones(len(ref_rows), dtype=np.float64), (ref_rows, ref_cols)), shape=(n_points, n_labels)
        )
    ref_matrix = _binarize(ref_matrix)

    # ---- reciprocal-pair filtering
    if filter_pairs is not None:
        fmat = filter_matrix(filter_pairs, (n_points, n_labels))
        if fmat.nnz:
            ref_matrix = _binarize(ref_matrix - ref_matrix.multiply(fmat))
            fcoo = fmat.tocoo()
            fkeys = fcoo.row.astype(np.int64) * n_labels + fcoo.col.astype(np.int64)
            row_ids = np.arange(n_points, dtype=np.int64)[:, None]
            hit = (preds >= 0) & np.isin(row_ids * n_labels + preds, fkeys)
            if hit.any():
                order = np.argsort(hit, axis=1, kind="stable")  # kept entries first, in their order
                preds = np.take_along_axis(preds, order, axis=1)
                preds[np.take_along_axis(hit, order, axis=1)] = -1

    # ---- rank the first kmax predictions
    if preds.shape[1] < kmax:
        pad = np.full((n_points, kmax - preds.shape[1]), -1, dtype=np.int64)
        preds = np.concatenate([preds, pad], axis=1)
    preds = preds[:, :kmax]
    hits = _lookup(ref_matrix, preds)  # [N, kmax] 0/1 float
    n_rel = np.diff(ref_matrix.indptr)
    discount = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))  # rank r -> 1/log2(r+1)
    cum_discount = np.cumsum(discount)

    keep = n_rel > 0 if ignore_empty else np.ones(n_points, dtype=bool)
    n_kept = int(keep.sum())
    out: dict[str, float] = {}
    for k in ks:
        prec = hits[:, :k].sum(axis=1) / k
        out[f"P@{k}"] = float(prec[keep].sum() / n_kept) if n_kept else 0.0
    for k in ks:
        dcg = hits[:, :k] @ discount[:k]
        idcg = np.where(n_rel > 0, cum_discount[np.clip(np.minimum(n_rel, k) - 1, 0, None)], 1.0)
        ndcg = np.where(n_rel > 0, dcg / idcg, 0.0)
        out[f"nDCG@{k}"] = float(ndcg[keep].sum() / n_kept) if n_kept else 0.0
    if w is not None:
        pred_w = np.where(preds >= 0, w[np.clip(preds, 0, None)], 0.0) * hits  # [N, kmax]
        ideal_w = _largest_true_weights(ref_matrix, w, kmax)  # [N, kmax], descending, zero-padded
        for k in ks:
            num = pred_w[:, :k].sum() / k
            den = ideal_w[:, :k].sum() / k
            out[f"PSP@{k}"] = float(num / den) if den > 0 else 0.0
        for k in ks:
            num = float((pred_w[:, :k] @ discount[:k]).sum())
            den = float((ideal_w[:, :k] @ discount[:k]).sum())
            out[f"PSnDCG@{k}"] = num / den if den > 0 else 0.0
    return out


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.double()  # bfloat16 / float16 have no (or lossy) numpy counterparts
        return x.numpy()
    return x


def _scores_to_numpy_or_sparse(scores: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(scores, torch.Tensor):
        if scores.layout != torch.strided:
            coo = scores.detach().cpu().to_sparse_coo().coalesce()
            if coo.sparse_dim() != 2 or coo.dense_dim() != 0:
                raise ValueError("top_k: a sparse torch tensor must be a 2-D sparse matrix")
            idx = coo.indices().numpy()
            vals = _to_numpy(coo.values())
            return sp.coo_matrix((vals, (idx[0], idx[1])), shape=tuple(coo.shape))
        return _to_numpy(scores)
    if sp.issparse(scores):
        return scores
    return np.asarray(scores)


def _exclude_to_csr(exclude: Any, shape: tuple[int, int]) -> sp.csr_matrix | None:
    if exclude is None:
        return None
    if sp.issparse(exclude):
        excl = sp.csr_matrix(exclude, copy=True)
    else:
        arr = np.asarray(_to_numpy(exclude))
        if arr.ndim != 2:
            raise ValueError(f"top_k: exclude must be a 2-D [N, L] matrix, got shape {arr.shape}")
        excl = sp.csr_matrix(arr)
    if excl.shape != tuple(shape):
        raise ValueError(f"top_k: exclude has shape {excl.shape}, scores have {tuple(shape)}")
    excl.sum_duplicates()
    excl.eliminate_zeros()
    return excl


def _check_k(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_ks(ks: Any) -> list[int]:
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, (bool, np.bool_)):
        ks = [ks]
    try:
        ks = list(ks)
    except TypeError:
        raise ValueError(f"ks must be an int or an iterable of ints, got {ks!r}") from None
    if not ks:
        raise ValueError("ks must not be empty")
    out: list[int] = []
    for k in ks:
        k = _check_k(k)
        if k not in out:
            out.append(k)
    return out


def _as_pairs(pairs: Any) -> np.ndarray:
    arr = np.asarray(_to_numpy(pairs))
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"filter pairs must be an [n, 2] array of (row, label), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(arr == np.round(arr)):
            raise ValueError(f"filter pairs must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _predictions_to_array(predictions: Any) -> np.ndarray:
    predictions = _to_numpy(predictions)
    if isinstance(predictions, np.ndarray) and predictions.dtype != object:
        arr = predictions
        if arr.ndim == 1 and arr.size == 0:
            arr = arr.reshape(0, 0)
        if arr.ndim != 2:
            raise ValueError(f"predictions must be 2-D [N, m] ranked label ids, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                pass  # integral floats, e.g. from a float tensor of ids
            else:
                raise ValueError(f"predictions must be integer label ids, got dtype {arr.dtype}")
        return arr.astype(np.int64)
    if isinstance(predictions, (str, bytes)) or not isinstance(predictions, (Sequence, np.ndarray)):
        raise TypeError(f"predictions must be an [N, m] array or a list of lists, got {type(predictions).__name__}")
    if not isinstance(predictions, np.ndarray):
        try:  # fast path: a rectangular list of lists of ints
            arr = np.asarray(predictions)
        except (ValueError, TypeError):
            arr = None
        if arr is not None and arr.ndim == 2 and arr.dtype.kind in "iu":
            return arr.astype(np.int64)
    rows = []
    for i, row in enumerate(predictions):
        r = np.asarray(_to_numpy(row))
        if r.ndim != 1:
            raise ValueError(f"predictions row {i} must be a flat list of label ids")
        if r.size and r.dtype.kind not in "iu":
            if not (r.dtype.kind == "f" and np.all(np.isfinite(r)) and np.all(r == np.round(r))):
                raise ValueError(f"predictions row {i}: label ids must be integers")
        rows.append(r.astype(np.int64))
    width = max((len(r) for r in rows), default=0)
    arr = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        arr[i, : len(r)] = r
    return arr


def _reference_lists(references: Any) -> tuple[np.ndarray, np.ndarray, int]:
    references = _to_numpy(references)
    if isinstance(references, np.ndarray) and references.dtype != object and references.ndim == 2:
        raise TypeError(
            "references: a dense 2-D array is ambiguous (indicator matrix or padded id lists?); pass "
            "scipy.sparse.csr_matrix(dense) for an indicator matrix, or a list of lists of label ids"
        )
    if isinstance(references, (str, bytes)) or not isinstance(references, (Sequence, np.ndarray)):
        raise TypeError(f"references must be a sparse matrix or a list of lists, got {type(references).__name__}")
    rows, cols = [], []
    for i, row in enumerate(references):
        r = np.asarray(_to_numpy(row))
        if r.ndim == 0:
            raise ValueError(f"references row {i} must be a list of label ids, got a scalar")
        r = r.ravel()
        if r.size and r.dtype.kind not in "iu":
            if not (r.dtype.kind == "f" and np.all(np.isfinite(r)) and np.all(r == np.round(r))):
                raise ValueError(f"references row {i}: label ids must be integers")
        r = r.astype(np.int64)
        if (r < -1).any():
            raise ValueError(f"references row {i}: label id {int(r[r < -1][0])} is negative")
        r = r[r >= 0]
        rows.append(np.full(len(r), i, dtype=np.int64))
        cols.append(r)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    return np.concatenate(rows), np.concatenate(cols), len(rows)


def _check_prediction_ids(preds: np.ndarray, n_labels: int) -> None:
    bad = (preds < -1) | (preds >= n_labels)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"predictions row {int(i)}: label id {int(preds[i, j])} is outside [0, {n_labels}) (-1 = no prediction)"
        )
    if preds.shape[1] > 1:
        srt = np.sort(preds, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
        if dup.any():
            i, j = np.argwhere(dup)[0]
            raise ValueError(
                f"predictions row {int(i)}: label id {int(srt[i, j])} appears more than once (it would be counted "
                "twice by P@k)"
            )


def _binarize(matrix: sp.spmatrix) -> sp.csr_matrix:
    m = sp.csr_matrix(matrix, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data = np.ones_like(m.data, dtype=np.float64)
    m = m.astype(np.float64)
    m.sort_indices()
    return m


def _lookup(ref: sp.csr_matrix, preds: np.ndarray) -> np.ndarray:
    """``ref[i, preds[i, r]]`` (0 for ``-1``) as a dense float array, via a search in each sorted csr row."""
    n, m = preds.shape
    out = np.zeros((n, m), dtype=np.float64)
    if n == 0 or m == 0 or ref.nnz == 0:
        return out
    n_labels = ref.shape[1]
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(ref.indptr))
    keys = row_of * n_labels + ref.indices.astype(np.int64)  # sorted: csr rows in order, sorted indices
    valid = preds >= 0
    qi, qj = np.nonzero(valid)
    qkeys = qi.astype(np.int64) * n_labels + preds[qi, qj]
    pos = np.searchsorted(keys, qkeys)
    pos_c = np.minimum(pos, len(keys) - 1)
    found = keys[pos_c] == qkeys
    out[qi[found], qj[found]] = 1.0
    return out


def _largest_true_weights(ref: sp.csr_matrix, w: np.ndarray, kmax: int) -> np.ndarray:
    """Per row, the ``kmax`` largest ``w_l`` over the row's relevant labels, descending, zero-padded."""
    n = ref.shape[0]
    out = np.zeros((n, kmax), dtype=np.float64)
    if ref.nnz == 0:
        return out
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(ref.indptr))
    vals = w[ref.indices]
    order = np.lexsort((-vals, rows))
    rows, vals = rows[order], vals[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < kmax
    out[rows[keep], rank[keep]] = vals[keep]
    return out
