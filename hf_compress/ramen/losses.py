"""RAMEN training losses: in-batch multi-positive triplet, and the same loss over metadata-graph anchors.

Both take query embeddings [B, d], candidate embeddings [M, d] (unit vectors, so dot = cosine) and a boolean
``positive_bm`` saying which candidates are relevant to which query. For every (query, positive) pair the
``num_negatives`` hardest in-batch negatives of that query contribute ``relu(s_neg - s_pos + margin)``.
The graph regularizer is this loss with a point's graph neighbours (anchors) as positives: it pulls a
point towards the texts it is linked to, so it shapes the encoder only and costs nothing at inference.
"""

from __future__ import annotations

import torch


def multi_positive_triplet_loss(
    query_bd: torch.Tensor,
    candidate_md: torch.Tensor,
    positive_bm: torch.Tensor,
    margin: float = 0.3,
    num_negatives: int = 5,
    temperature: float | None = None,
    row_mask_b: torch.Tensor | None = None,
    ignore_bm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean hinge over (query, positive, hard negative) triples; 0 (with a graph) when nothing applies.

    ``temperature`` weights each query's negatives by softmax(s_neg / temperature) instead of uniformly (the
    hardest count most). ``row_mask_b`` drops queries (e.g. points with no graph neighbour in this batch).
    ``ignore_bm`` marks candidates that are neither positive nor negative for a query (likely relevant, unconfirmed).
    """
    if query_bd.dim() != 2 or candidate_md.dim() != 2 or query_bd.shape[1] != candidate_md.shape[1]:
        raise ValueError(
            f"multi_positive_triplet_loss: expected [B, d] queries and [M, d] candidates, got "
            f"{tuple(query_bd.shape)} and {tuple(candidate_md.shape)}."
        )
    if positive_bm.shape != (query_bd.shape[0], candidate_md.shape[0]):
        raise ValueError(
            f"multi_positive_triplet_loss: positive mask shape {tuple(positive_bm.shape)} does not match "
            f"[B={query_bd.shape[0]}, M={candidate_md.shape[0]}]."
        )
    positive_bm = positive_bm.bool()
    not_negative_bm = positive_bm if ignore_bm is None else positive_bm | ignore_bm.bool()
    scores_bm = query_bd @ candidate_md.T
    negatives_available = (~not_negative_bm).sum(dim=1)
    k = int(min(num_negatives, candidate_md.shape[0]))
    if k == 0:
        return scores_bm.sum() * 0.0
    negative_scores_bm = scores_bm.masked_fill(not_negative_bm, float("-inf"))
    hard_bk, _ = negative_scores_bm.topk(k, dim=1)
    valid_bk = torch.isfinite(hard_bk)
    hard_bk = torch.where(valid_bk, hard_bk, torch.zeros_like(hard_bk))
    if temperature is not None:
        weights_bk = torch.softmax((hard_bk / temperature).masked_fill(~valid_bk, float("-inf")), dim=1)
        weights_bk = torch.nan_to_num(weights_bk.detach(), nan=0.0) * valid_bk.sum(dim=1, keepdim=True)
    else:
        weights_bk = valid_bk.to(scores_bm.dtype)
    # hinge for every (query b, candidate m that is positive, negative j): [B, M, k]
    hinge_bmk = torch.relu(hard_bk.unsqueeze(1) - scores_bm.unsqueeze(2) + margin) * weights_bk.unsqueeze(1)
    pair_bm = positive_bm & (negatives_available > 0).unsqueeze(1)
    if row_mask_b is not None:
        pair_bm = pair_bm & row_mask_b.bool().unsqueeze(1)
    if not bool(pair_bm.any()):
        return scores_bm.sum() * 0.0
    total = (hinge_bmk * pair_bm.unsqueeze(2)).sum()
    # mean over triples: each (query, positive) pair meets that query's available hard negatives
    per_query_triples = (pair_bm.sum(dim=1) * valid_bk.sum(dim=1)).sum().clamp(min=1)
    return total / per_query_triples


def graph_regularizer(
    point_bd: torch.Tensor,
    anchor_ad: torch.Tensor,
    linked_ba: torch.Tensor,
    has_anchor_b: torch.Tensor | None = None,
    spared_ba: torch.Tensor | None = None,
    **triplet_kwargs,
) -> torch.Tensor:
    """The triplet loss with graph neighbours as positives (points without a sampled neighbour are skipped);
    ``spared_ba`` marks anchors that are not used as negatives for a point (see ``RamenCollator.graph_negatives``)."""
    if has_anchor_b is None:
        has_anchor_b = linked_ba.any(dim=1)
    return multi_positive_triplet_loss(point_bd, anchor_ad, linked_ba, row_mask_b=has_anchor_b, ignore_bm=spared_ba,
                                       **triplet_kwargs)
