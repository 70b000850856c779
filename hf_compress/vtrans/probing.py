"""Attention probing: where each head looks, and how that relates to what VTrans prunes.

VTrans reports that heads attending mostly to special tokens ([CLS]/[SEP], <s>/</s>) or to the current
token are the first to be pruned, while kept heads attend to task keywords. ``probe_attention`` measures
those attention masses per head (dense models and ``vtrans_encoder`` models, whose layers may have
different head counts); ``compare_with_pruning`` and ``spearman`` relate them to what pruning removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel

from .modeling_pruned_encoder import PrunedEncoderAttention


@dataclass
class HeadProbe:
    """Mean attention mass per ``[layer, head]`` over the non-padding query tokens probed.

    Layers with fewer heads than the widest one (pruned models) are padded with NaN. ``special`` and
    ``current`` overlap where a special token attends to itself; ``rest`` is the mass on every other token,
    so ``1 - rest`` (:attr:`trivial`) is the mass on special-or-current tokens without double counting.
    """

    special: np.ndarray  # on special tokens
    current: np.ndarray  # on the query token itself
    keywords: np.ndarray | None  # on the given keyword tokens
    tokens: int  # query tokens averaged over
    rest: np.ndarray | None = None  # on tokens that are neither special nor the query itself

    @property
    def trivial(self) -> np.ndarray:
        """Mass on special tokens or the current token: the score VTrans says predicts pruning."""
        if self.rest is None:
            raise ValueError("This HeadProbe has no 'rest' mass; re-run probe_attention to get it.")
        return 1.0 - self.rest

    def as_dict(self) -> dict:
        nan_to_none = lambda a: [[None if np.isnan(v) else float(v) for v in row] for row in a]  # noqa: E731
        out = {"special": nan_to_none(self.special), "current": nan_to_none(self.current), "tokens": self.tokens}
        if self.rest is not None:
            out["rest"] = nan_to_none(self.rest)
        if self.keywords is not None:
            out["keywords"] = nan_to_none(self.keywords)
        return out


def _pruned_layers(model: PreTrainedModel):
    base = model if hasattr(model, "layers") else getattr(model, "model", None)
    if base is None or not hasattr(base, "layers"):
        raise ValueError(f"{type(model).__name__} is a vtrans_encoder model without encoder layers; cannot probe it.")
    return base.layers


@contextmanager
def _capture_pruned_attention(model: PreTrainedModel):
    """Record each pruned layer's attention probabilities (``[B, H, Q, K]``, None for a removed sub-layer).

    ``PrunedEncoderAttention`` uses fused SDPA, which returns no weights, so a hook recomputes
    ``softmax(QK^T / sqrt(d) + bias)`` from the module's own inputs; the forward pass is unchanged.
    """
    layers = _pruned_layers(model)
    captured: list[torch.Tensor | None] = [None] * len(layers)
    handles = []

    def hook_for(index: int):
        def hook(module: PrunedEncoderAttention, args, output) -> None:
            hidden, bias = args[0], args[1] if len(args) > 1 else None
            batch, seq, _ = hidden.shape
            shape = (batch, seq, module.num_heads, module.head_dim)
            query = module.q_proj(hidden).view(shape).transpose(1, 2)
            key = module.k_proj(hidden).view(shape).transpose(1, 2)
            scores = query @ key.transpose(-1, -2) / module.head_dim**0.5
            if bias is not None:
                scores = scores + bias
            captured[index] = scores.softmax(-1)

        return hook

    for i, layer in enumerate(layers):
        if isinstance(getattr(layer, "attention", None), PrunedEncoderAttention):
            handles.append(layer.attention.register_forward_hook(hook_for(i)))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _attention_maps(model: PreTrainedModel, inputs: dict) -> list[torch.Tensor | None]:
    """Per layer ``[B, H, Q, K]`` attention probabilities (None where the attention sub-layer is gone)."""
    if getattr(model.config, "model_type", None) == "vtrans_encoder":
        with _capture_pruned_attention(model) as captured:
            model(**inputs)
        return list(captured)
    return list(model(**inputs, output_attentions=True).attentions)


@torch.no_grad()
def probe_attention(
    model: PreTrainedModel,
    batches: Iterable[dict],
    special_token_ids: Iterable[int],
    keyword_token_ids: Iterable[int] | None = None,
    max_batches: int | None = 8,
) -> HeadProbe:
    """Attention mass each head puts on special tokens, on the current token, on keywords and on the rest.

    Dense models run with eager attention (the fused kernels return no weights); pruned ``vtrans_encoder``
    models are probed through hooks. Eval mode and the attention implementation are restored afterwards.
    ``max_batches=None`` probes every batch.
    """
    pruned = getattr(model.config, "model_type", None) == "vtrans_encoder"
    previous_impl, was_training = model.config._attn_implementation, model.training
    if not pruned:
        model.set_attn_implementation("eager")
    model.eval()
    device = next(model.parameters()).device
    special_ids = torch.as_tensor(sorted(set(special_token_ids)), device=device)
    keyword_ids = None if keyword_token_ids is None else torch.as_tensor(sorted(set(keyword_token_ids)), device=device)
    sums: list[dict[str, torch.Tensor]] | None = None
    heads: list[int] = []
    tokens = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask", torch.ones_like(ids)).to(device).float()
            inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            maps = _attention_maps(model, inputs)
            if sums is None:
                heads = [0 if a is None else a.shape[1] for a in maps]
                sums = [{} for _ in maps]
            query_mask = mask[:, None, :]  # [B, 1, Q]
            key_masks = {"special": torch.isin(ids, special_ids).float()[:, None, None, :]}
            if keyword_ids is not None:
                key_masks["keywords"] = torch.isin(ids, keyword_ids).float()[:, None, None, :]
            eye = torch.eye(ids.shape[1], device=device)[None, None]
            for layer, attention in enumerate(maps):
                if attention is None:
                    continue
                attention = attention.float()
                masses = {name: (attention * keys).sum(-1) for name, keys in key_masks.items()}
                masses["current"] = (attention * eye).sum(-1)
                masses["rest"] = (attention * (1 - key_masks["special"]) * (1 - eye)).sum(-1)
                for name, mass in masses.items():  # [B, H, Q] -> [H]
                    sums[layer][name] = sums[layer].get(name, 0.0) + (mass * query_mask).sum((0, 2))
            tokens += int(mask.sum())
    finally:
        if not pruned:
            model.set_attn_implementation(previous_impl)
        model.train(was_training)
    if tokens == 0 or sums is None:
        raise ValueError("probe_attention got no tokens: pass at least one non-empty batch.")
    width = max(heads, default=0)

    def table(name: str) -> np.ndarray:
        out = np.full((len(heads), width), np.nan)
        for layer, n in enumerate(heads):
            if n:
                out[layer, :n] = (sums[layer][name] / tokens).cpu().numpy()
        return out

    return HeadProbe(
        special=table("special"),
        current=table("current"),
        keywords=table("keywords") if keyword_ids is not None else None,
        tokens=tokens,
        rest=table("rest"),
    )


def kept_head_index(report: dict | None, dense_heads: int) -> list[list[int]] | None:
    """Original indices of the heads a pruned model kept, per layer, if its ``pruning_report`` records them.

    Reads ``pruning_report["head_index"]`` (one sorted list per layer). Returns None when the field is
    absent; a field that disagrees with the per-layer head counts raises (the report is inconsistent).
    """
    if not report or report.get("head_index") is None:
        return None
    index = [[int(h) for h in layer] for layer in report["head_index"]]
    counts = list(report.get("num_heads", [len(layer) for layer in index]))
    if [len(layer) for layer in index] != counts or any(h < 0 or h >= dense_heads for layer in index for h in layer):
        raise ValueError(
            f"pruning_report['head_index'] {index} does not match num_heads {counts} of a {dense_heads}-head model; "
            "the config was edited or mixed up: re-materialize the model."
        )
    return index


def align_to_dense(values: np.ndarray, head_index: Sequence[Sequence[int]], dense_heads: int) -> np.ndarray:
    """Move a pruned model's per-head values ``[layer, kept slot]`` to the dense positions (NaN = removed)."""
    out = np.full((len(head_index), dense_heads), np.nan)
    for layer, kept in enumerate(head_index):
        if len(kept):
            out[layer, list(kept)] = np.asarray(values)[layer, : len(kept)]
    return out


@dataclass
class PruningComparison:
    """Dense probing scores vs what pruning removed.

    ``level`` is ``"head"`` when the pruned model records which original heads it kept (then ``removed`` is a
    ``[layer, head]`` mask) and ``"layer"`` otherwise (``removed`` is the fraction of heads removed per layer,
    compared with the layer's mean score). A positive ``rho`` supports the paper: heads with more mass on
    special / current tokens were removed more. ``rho`` is None when one side does not vary.
    """

    level: str
    scores: np.ndarray  # dense [layer, head] mass on special-or-current tokens
    removed: np.ndarray
    rho: float | None
    n: int  # heads (head level) or layers (layer level) correlated
    mean_score_removed: float | None = None
    mean_score_kept: float | None = None

    def as_dict(self) -> dict:
        return {
            "level": self.level, "spearman": self.rho, "n": self.n,
            "removed": np.asarray(self.removed).tolist(),
            "mean_score_removed": self.mean_score_removed, "mean_score_kept": self.mean_score_kept,
        }


def _rho(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return spearman(a, b)


def compare_with_pruning(
    dense_scores: np.ndarray, kept_heads: Sequence[int], head_index: Sequence[Sequence[int]] | None = None
) -> PruningComparison:
    """Relate the dense per-head ``dense_scores`` ``[layer, head]`` to the heads pruning removed.

    With ``head_index`` (original indices kept per layer) each head is compared; without it only the
    per-layer kept counts are known, so the layers' mean scores are compared with the share of heads removed.
    """
    scores = np.asarray(dense_scores, float)
    layers, dense_heads = scores.shape
    if len(kept_heads) != layers:
        raise ValueError(
            f"The pruned model has {len(kept_heads)} layers but the dense probe has {layers}: pass the dense model "
            "the pruned one was made from."
        )
    if any(k > dense_heads for k in kept_heads):
        raise ValueError(
            f"The pruned model keeps {max(kept_heads)} heads in a layer but the dense probe has only {dense_heads}: "
            "pass the dense model the pruned one was made from."
        )
    if head_index is not None:
        removed = np.ones_like(scores, dtype=bool)
        for layer, kept in enumerate(head_index):
            removed[layer, list(kept)] = False
        flat_scores, flat_removed = scores.ravel(), removed.ravel().astype(float)
        return PruningComparison(
            level="head", scores=scores, removed=removed, rho=_rho(flat_scores, flat_removed), n=scores.size,
            mean_score_removed=float(scores[removed].mean()) if removed.any() else None,
            mean_score_kept=float(scores[~removed].mean()) if (~removed).any() else None,
        )
    fraction = 1.0 - np.asarray(kept_heads, float) / dense_heads
    return PruningComparison(
        level="layer", scores=scores, removed=fraction, rho=_rho(scores.mean(1), fraction), n=layers
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
