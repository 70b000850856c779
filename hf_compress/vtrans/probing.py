"""Attention probing: where each head of the dense model looks, and how that relates to what VTrans prunes.

VTrans reports that heads attending mostly to special tokens ([CLS]/[SEP], <s>/</s>) or to the current
token are the first to be pruned, while kept heads attend to task keywords. ``probe_attention`` measures
those attention masses per head; ``spearman`` relates them to the gates' keep scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel


@dataclass
class HeadProbe:
    """Mean attention mass per ``[layer, head]`` over the non-padding query tokens probed."""

    special: np.ndarray  # on special tokens
    current: np.ndarray  # on the query token itself
    keywords: np.ndarray | None  # on the given keyword tokens
    tokens: int  # query tokens averaged over

    def as_dict(self) -> dict:
        out = {"special": self.special.tolist(), "current": self.current.tolist(), "tokens": self.tokens}
        if self.keywords is not None:
            out["keywords"] = self.keywords.tolist()
        return out


@torch.no_grad()
def probe_attention(
    model: PreTrainedModel,
    batches: Iterable[dict],
    special_token_ids: Iterable[int],
    keyword_token_ids: Iterable[int] | None = None,
    max_batches: int = 8,
) -> HeadProbe:
    """Attention mass each head puts on special tokens, on the current token and on keywords.

    Runs the model with eager attention (the fused kernels return no weights) in eval mode and restores
    both afterwards.
    """
    previous_impl, was_training = model.config._attn_implementation, model.training
    model.set_attn_implementation("eager")
    model.eval()
    device = next(model.parameters()).device
    special_ids = torch.as_tensor(sorted(set(special_token_ids)), device=device)
    keyword_ids = None if keyword_token_ids is None else torch.as_tensor(sorted(set(keyword_token_ids)), device=device)
    sums = {"special": 0.0, "current": 0.0, "keywords": 0.0}
    tokens = 0
    try:
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask", torch.ones_like(ids)).to(device).float()
            inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            attentions = torch.stack(model(**inputs, output_attentions=True).attentions)  # [L, B, H, Q, K]
            query_mask = mask[None, :, None, :]  # [1, B, 1, Q]
            is_special = torch.isin(ids, special_ids).float()[None, :, None, None, :]
            sums["special"] += ((attentions * is_special).sum(-1) * query_mask).sum((1, 3))
            eye = torch.eye(ids.shape[1], device=device)[None, None, None]
            sums["current"] += ((attentions * eye).sum(-1) * query_mask).sum((1, 3))
            if keyword_ids is not None:
                is_keyword = torch.isin(ids, keyword_ids).float()[None, :, None, None, :]
                sums["keywords"] += ((attentions * is_keyword).sum(-1) * query_mask).sum((1, 3))
            tokens += int(mask.sum())
    finally:
        model.set_attn_implementation(previous_impl)
        model.train(was_training)
    if tokens == 0:
        raise ValueError("probe_attention got no tokens: pass at least one non-empty batch.")
    to_np = lambda x: (x / tokens).cpu().numpy()  # noqa: E731
    return HeadProbe(
        special=to_np(sums["special"]),
        current=to_np(sums["current"]),
        keywords=to_np(sums["keywords"]) if keyword_ids is not None else None,
        tokens=tokens,
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped arrays (ties get their average rank)."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"spearman needs two arrays of the same size >= 2, got {a.shape} and {b.shape}.")

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty_like(x)
        r[order] = np.arange(len(x), dtype=float)
        for value in np.unique(x):  # average ranks of ties
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0
