"""Gates -> which units to keep -> physically sliced weights in a :class:`PrunedEncoderConfig` model.

The kept units' ``mu`` are folded into the weights that read the gated activation, so the materialized
model computes what the masked model computes at inference, except for hidden dimensions: a LayerNorm
over the kept dims alone normalizes with their own mean/variance (tests report that gap).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from .adapters import EncoderAdapter, get_adapter
from .budget import Budget, EncoderShape, count_flops, count_params, layer_params, measure
from .configuration_pruned_encoder import PrunedEncoderConfig
from .gates import VIBGates
from .masking import dense_shape, get_gates
from .modeling_pruned_encoder import (
    PrunedEncoderForSequenceClassification,
    PrunedEncoderForTokenClassification,
    PrunedEncoderModel,
)

logger = logging.getLogger(__name__)

TASK_CLASSES = {
    "base": PrunedEncoderModel,
    "ForSequenceClassification": PrunedEncoderForSequenceClassification,
    "ForTokenClassification": PrunedEncoderForTokenClassification,
}


@dataclass
class KeepPlan:
    """Indices of the kept units (sorted) and the multipliers folded into the weights."""

    hidden: np.ndarray
    heads: list[np.ndarray]  # per layer; empty = attention sub-layer removed
    ffn: list[np.ndarray]  # per layer; empty = FFN sub-layer removed
    hidden_scale: np.ndarray | None = None  # per original hidden dim
    head_scale: np.ndarray | None = None  # [layers, heads], the sub-layer multiplier folded in
    ffn_scale: np.ndarray | None = None  # [layers, neurons], the sub-layer multiplier folded in
    mha_bias_scale: np.ndarray | None = None  # [layers]
    ffn_bias_scale: np.ndarray | None = None  # [layers]

    def shape(self, dense: EncoderShape) -> EncoderShape:
        return replace(
            dense,
            hidden_size=len(self.hidden),
            num_heads=[len(h) for h in self.heads],
            intermediate_sizes=[len(f) for f in self.ffn],
        )


# --------------------------------------------------------------------------------------------------
# choosing units
# --------------------------------------------------------------------------------------------------
class _Selection:
    """Mutable kept/score state of every gate group, with greedy removal against a budget."""

    def __init__(self, dense: EncoderShape, keep: dict[str, np.ndarray], scores: dict[str, np.ndarray], round_to: int):
        n, H = dense.num_layers, dense.num_heads[0]
        full = {
            "hidden": (dense.hidden_size,),
            "heads": (n, H),
            "ffn": (n, dense.intermediate_sizes[0]),
            "mha": (n,),
            "ffn_layer": (n,),
        }
        self.dense = dense
        self.keep = {g: np.asarray(keep[g], bool).copy() if g in keep else np.ones(s, bool) for g, s in full.items()}
        self.scores = {
            g: np.asarray(scores[g], np.float64) if g in scores else np.full(s, np.inf) for g, s in full.items()
        }
        self.round_to = max(1, int(round_to or 1))
        for i in range(n):  # a removed sub-layer removes its units, and a sub-layer without units is removed
            if not self.keep["mha"][i] or not self.keep["heads"][i].any():
                self.keep["mha"][i] = False
                self.keep["heads"][i] = False
            if not self.keep["ffn_layer"][i] or not self.keep["ffn"][i].any():
                self.keep["ffn_layer"][i] = False
                self.keep["ffn"][i] = False

    def shape(self) -> EncoderShape:
        return replace(
            self.dense,
            hidden_size=int(self.keep["hidden"].sum()),
            num_heads=[int(k.sum()) for k in self.keep["heads"]],
            intermediate_sizes=[int(k.sum()) for k in self.keep["ffn"]],
        )

    def _set_count(self, kept: np.ndarray, scores: np.ndarray, count: int) -> None:
        order = np.argsort(-np.where(kept, scores + 1e12, scores), kind="stable")  # kept first, best first
        kept[:] = False
        kept[order[:count]] = True

    def round_counts(self) -> None:
        """Round hidden size and FFN widths to the nearest multiple of ``round_to`` (hardware alignment)."""
        m = self.round_to
        if m == 1:
            return
        c = int(self.keep["hidden"].sum())
        self._set_count(self.keep["hidden"], self.scores["hidden"], min(max(m, int(round(c / m)) * m), len(self.keep["hidden"])))
        for i in range(self.dense.num_layers):
            c = int(self.keep["ffn"][i].sum())
            if c == 0:
                continue
            target = min(int(round(c / m)) * m, len(self.keep["ffn"][i]))
            self._set_count(self.keep["ffn"][i], self.scores["ffn"][i], target)
            if target == 0:
                self.keep["ffn_layer"][i] = False

    def _candidates(self):
        """(score, group, layer, indices) of each group's cheapest next removal."""
        m, out = self.round_to, []
        kept = self.keep["hidden"]
        if kept.sum() > m:
            idx = np.flatnonzero(kept)
            worst = idx[np.argsort(self.scores["hidden"][idx], kind="stable")[:m]]
            out.append((self.scores["hidden"][worst].mean(), "hidden", None, worst))
        for i in range(self.dense.num_layers):
            for group, step, sub in (("heads", 1, "mha"), ("ffn", m, "ffn_layer")):
                kept = self.keep[group][i]
                if not kept.any():
                    continue
                idx = np.flatnonzero(kept)
                worst = idx[np.argsort(self.scores[group][i][idx], kind="stable")[:step]]
                out.append((self.scores[group][i][worst].mean(), group, i, worst))
                # removing a whole sub-layer loses its best unit too: it never ranks below that unit
                best_unit = self.scores[group][i][idx].max()
                out.append((max(self.scores[sub][i], best_unit), sub, i, None))
        return out

    def _remove(self, group: str, layer: int | None, idx) -> None:
        """Switch a candidate off; a sub-layer takes its units with it, and its last unit takes the sub-layer."""
        if group == "hidden":
            self.keep["hidden"][idx] = False
        elif group in ("mha", "ffn_layer"):
            self.keep[group][layer] = False
            self.keep["heads" if group == "mha" else "ffn"][layer] = False
        else:
            self.keep[group][layer][idx] = False
            if not self.keep[group][layer].any():
                self.keep["mha" if group == "heads" else "ffn_layer"][layer] = False

    def fit(self, budget: Budget) -> dict[str, np.ndarray]:
        """Remove the lowest-scoring units until the budget is met; returns masks of what was removed."""
        before = {g: k.copy() for g, k in self.keep.items()}
        while self.size(budget) > budget.target:
            candidates = self._candidates()
            if not candidates:
                raise ValueError(f"Cannot meet the budget ({budget.description}): nothing left to remove.")
            _, group, layer, idx = min(candidates, key=lambda c: c[0])
            self._remove(group, layer, idx)
        return {g: before[g] & ~self.keep[g] for g in ("hidden", "heads", "ffn")}

    def fill(self, budget: Budget, eligible: dict[str, np.ndarray] | None = None) -> int:
        """Re-admit removed units, best score first, while the budget still holds (a removed sub-layer can
        overshoot; the gates can also stop short of the budget). Returns how many chunks were re-admitted."""
        m, chunks = self.round_to, []
        for group, rows in (("hidden", [self.keep["hidden"]]), ("heads", self.keep["heads"]), ("ffn", self.keep["ffn"])):
            step = 1 if group == "heads" else m
            for layer, row in enumerate(rows):
                allowed = ~row if eligible is None else (~row & (eligible[group] if group == "hidden" else eligible[group][layer]))
                idx = np.flatnonzero(allowed)
                score = self.scores[group] if group == "hidden" else self.scores[group][layer]
                idx = idx[np.argsort(-score[idx], kind="stable")]
                for start in range(0, len(idx) - step + 1, step):
                    chunk = idx[start : start + step]
                    chunks.append((float(np.mean(score[chunk])), row, chunk))
        added = 0
        for _, row, chunk in sorted(chunks, key=lambda c: -c[0]):
            row[chunk] = True
            if self.size(budget) > budget.target:
                row[chunk] = False
            else:
                added += 1
        self.keep["mha"] = self.keep["heads"].any(-1)
        self.keep["ffn_layer"] = self.keep["ffn"].any(-1)
        return added

    def size(self, budget: Budget) -> float:
        return measure(self.shape(), budget.metric, budget.seq_len)


def round_trim_fill(selection: _Selection, budget: Budget | None, fill_to_budget: bool) -> None:
    """Round the kept counts, trim to the budget (warn when the gates left it above), then re-admit removed
    units while they fit (warn when the gates ended far below). Shared by encoder and decoder selections."""
    selection.round_counts()
    if budget is None:
        return
    before = selection.size(budget)
    trimmed = selection.fit(budget)
    if before > budget.target:
        warnings.warn(
            f"The gates' own decisions give {before:,.0f} ({budget.metric}), above the budget "
            f"{budget.target:,.0f}; kept the highest-scoring units that fit. Train the gates longer "
            f"or raise the Lagrangian learning rate to let them reach the budget themselves.",
            stacklevel=3,
        )
    gated = selection.size(budget)
    selection.fill(budget, None if fill_to_budget else trimmed)
    realised = selection.size(budget)
    if gated < 0.9 * budget.target:
        warnings.warn(
            f"The gates ended far below the budget: {gated:,.0f} vs target {budget.target:,.0f} "
            f"({budget.metric}); "
            + (f"re-admitted the best-scoring pruned units up to {realised:,.0f}." if fill_to_budget else
               "the model is smaller than asked. Lower the KL weight or the Lagrangian learning rate."),
            stacklevel=3,
        )


def select_units(
    dense: EncoderShape,
    keep: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    budget: Budget | None,
    round_to: int | None = None,
    fill_to_budget: bool = True,
) -> KeepPlan:
    """Turn per-unit keep decisions and scores into a :class:`KeepPlan` that meets ``budget``.

    Units are taken from ``keep``. Above budget, the lowest-scoring kept units are removed (a whole
    sub-layer competes with its own score) and a warning gives both figures. Then removed units are
    re-admitted, best score first, while they fit: with ``fill_to_budget`` any removed unit (the budget is
    used, not undershot), else only those the trimming removed.
    """
    selection = _Selection(dense, keep, scores, round_to or 1)
    round_trim_fill(selection, budget, fill_to_budget)
    k = selection.keep
    return KeepPlan(
        hidden=np.flatnonzero(k["hidden"]),
        heads=[np.flatnonzero(row) for row in k["heads"]],
        ffn=[np.flatnonzero(row) for row in k["ffn"]],
    )


def gate_decisions(gates: VIBGates) -> dict[str, np.ndarray]:
    """Per-unit keep decisions of the thresholded gates (a sub-layer without units counts as removed)."""
    with torch.no_grad():
        return {g: (z != 0).cpu().numpy() for g, z in gates.deterministic().items()}


def plan_from_gates(
    gates: VIBGates,
    dense: EncoderShape,
    budget: Budget | None,
    round_to: int | None = None,
    fill_to_budget: bool = True,
) -> KeepPlan:
    """The VIB decision (``log_alpha < 0``), trimmed to the budget, with ``mu`` as the folded multipliers."""
    with torch.no_grad():
        scores = {g: s.detach().float().cpu().numpy() for g, s in gates.keep_scores().items()}
    plan = select_units(dense, gate_decisions(gates), scores, budget, round_to, fill_to_budget)
    # units re-admitted by rounding are scaled by their own mu (their deterministic value is 0)
    mus = {g: gate.mu.detach().float().cpu().numpy() for g, gate in gates.groups.items()}
    n = dense.num_layers
    ones = lambda *s: np.ones(s)  # noqa: E731
    mha = mus.get("mha", ones(n))
    ffn_layer = mus.get("ffn_layer", ones(n))
    plan.hidden_scale = mus.get("hidden", ones(dense.hidden_size))
    plan.head_scale = mus.get("heads", ones(n, dense.num_heads[0])) * mha[:, None]
    plan.ffn_scale = mus.get("ffn", ones(n, dense.intermediate_sizes[0])) * ffn_layer[:, None]
    plan.mha_bias_scale = mha
    plan.ffn_bias_scale = ffn_layer
    return plan


# --------------------------------------------------------------------------------------------------
# slicing weights
# --------------------------------------------------------------------------------------------------
def _copy_linear(dst: nn.Linear, src: nn.Linear, rows, cols, col_scale=None, bias_scale: float = 1.0) -> None:
    """``dst = src[rows][:, cols]``, input columns scaled by ``col_scale``; the bias (and, with the weight,
    a whole sub-layer's output) by ``bias_scale`` when it is a sub-layer multiplier."""
    weight = src.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    if col_scale is not None:
        weight = weight * col_scale[None, :]
    bias = src.bias.detach()[rows] if rows is not None else src.bias.detach()
    dst.weight.data.copy_(weight)
    dst.bias.data.copy_(bias * bias_scale)


def _copy_norm(dst: nn.LayerNorm, src: nn.LayerNorm, hidden, scale) -> None:
    dst.weight.data.copy_(src.weight.detach()[hidden] * scale)
    dst.bias.data.copy_(src.bias.detach()[hidden] * scale)


def pruned_config(model: PreTrainedModel, adapter: EncoderAdapter, shape: EncoderShape, task: str) -> PrunedEncoderConfig:
    dims = adapter.read_dims(model.config)
    _, head = adapter.task_head(model)
    config = model.config
    extra = {}
    if task != "base":
        extra = dict(id2label=config.id2label, label2id=config.label2id, problem_type=config.problem_type)
    return PrunedEncoderConfig(
        base_model_type=config.model_type,
        vocab_size=dims.vocab_size,
        hidden_size=shape.hidden_size,
        head_dim=dims.head_dim,
        num_hidden_layers=dims.num_layers,
        num_attention_heads_per_layer=list(shape.num_heads),
        intermediate_size_per_layer=list(shape.intermediate_sizes),
        max_position_embeddings=dims.max_position_embeddings,
        type_vocab_size=dims.type_vocab_size,
        position_style=adapter.position_style,
        hidden_act=dims.hidden_act,
        layer_norm_eps=dims.layer_norm_eps,
        hidden_dropout_prob=dims.hidden_dropout_prob,
        attention_probs_dropout_prob=dims.attention_dropout_prob,
        classifier_dropout=getattr(config, head.dropout_attr, None) if head.dropout_attr else None,
        classifier_dense=head.dense is not None,
        classifier_activation=head.activation,
        initializer_range=getattr(config, "initializer_range", 0.02),
        pooler_size=shape.pooler_size,
        pad_token_id=dims.pad_token_id,
        original_sizes=dict(
            hidden_size=dims.hidden_size,
            num_attention_heads=dims.num_heads,
            intermediate_size=dims.intermediate_size,
            model_type=config.model_type,
            name_or_path=getattr(config, "_name_or_path", ""),
        ),
        architectures=[TASK_CLASSES[task].__name__],
        **extra,
    )


@torch.no_grad()
def build_pruned_model(model: PreTrainedModel, plan: KeepPlan) -> PreTrainedModel:
    """Copy the kept slices of ``model``'s weights (multipliers folded in) into a new pruned model."""
    adapter = get_adapter(model)
    dense = dense_shape(model, adapter)
    dims = adapter.read_dims(model.config)
    task, head = adapter.task_head(model)
    shape = plan.shape(dense)
    if shape.hidden_size == 0:
        raise ValueError(
            "Every hidden dimension was pruned, which leaves no model. Give a budget (materialize(model, "
            "budget=...)) so the best units are kept, or train the gates with a smaller KL weight."
        )
    pruned = TASK_CLASSES[task](pruned_config(model, adapter, shape, task))
    ref = next(model.parameters())
    pruned.to(device=ref.device, dtype=ref.dtype)
    base = pruned if task == "base" else pruned.model

    n, d = dense.num_layers, dims.head_dim
    as_tensor = lambda x, *shape: (  # noqa: E731  (a missing multiplier is 1)
        torch.ones(shape, dtype=ref.dtype, device=ref.device) if x is None
        else torch.as_tensor(np.asarray(x), dtype=ref.dtype, device=ref.device)
    )
    hidden = torch.as_tensor(plan.hidden, dtype=torch.long, device=ref.device)
    h_kept_scale = as_tensor(plan.hidden_scale, dense.hidden_size)[hidden]
    head_scale = as_tensor(plan.head_scale, n, dense.num_heads[0])
    ffn_scale = as_tensor(plan.ffn_scale, n, dense.intermediate_sizes[0])
    mha_bias = as_tensor(plan.mha_bias_scale, n)
    ffn_bias = as_tensor(plan.ffn_bias_scale, n)

    emb = base.embeddings
    emb.word_embeddings.weight.copy_(adapter.embedding_module(model, "word_embeddings").weight[:, hidden])
    emb.position_embeddings.weight.copy_(adapter.embedding_module(model, "position_embeddings").weight[:, hidden])
    if emb.token_type_embeddings is not None:
        emb.token_type_embeddings.weight.copy_(adapter.embedding_module(model, "token_type_embeddings").weight[:, hidden])
    _copy_norm(emb.norm, adapter.embedding_module(model, "embeddings_norm"), hidden, h_kept_scale)

    for i, layer in enumerate(base.layers):
        src = lambda name: adapter.layer_module(model, i, name)  # noqa: E731
        heads = torch.as_tensor(plan.heads[i], dtype=torch.long, device=ref.device)
        if len(heads):
            rows = (heads[:, None] * d + torch.arange(d, device=ref.device)[None, :]).reshape(-1)
            for name in ("q_proj", "k_proj", "v_proj"):
                _copy_linear(getattr(layer.attention, name), src(name), rows, hidden)
            _copy_linear(layer.attention.o_proj, src("o_proj"), hidden, rows,
                         col_scale=head_scale[i][heads].repeat_interleave(d), bias_scale=float(mha_bias[i]))
        _copy_norm(layer.attention_norm, src("attention_norm"), hidden, h_kept_scale)
        neurons = torch.as_tensor(plan.ffn[i], dtype=torch.long, device=ref.device)
        if len(neurons):
            _copy_linear(layer.mlp.up_proj, src("up_proj"), neurons, hidden)
            _copy_linear(layer.mlp.down_proj, src("down_proj"), hidden, neurons,
                         col_scale=ffn_scale[i][neurons], bias_scale=float(ffn_bias[i]))
        _copy_norm(layer.mlp_norm, src("mlp_norm"), hidden, h_kept_scale)

    pooler = adapter.pooler_module(model)
    if pooler is not None:  # base model: the pooler reads the kept dims, its output keeps its width
        _copy_linear(pruned.pooler, pooler, None, hidden)
    if task != "base":
        if head.dense is not None:
            _copy_linear(pruned.classifier.dense, model.get_submodule(head.dense), hidden, hidden)
        out_src = model.get_submodule(head.out_proj)
        col_scale = None if head.per_token else h_kept_scale
        _copy_linear(pruned.classifier.out_proj, out_src, None, hidden, col_scale=col_scale)
    return pruned.train(model.training)


def size_report(dense: EncoderShape, shape: EncoderShape, seq_len: int = 128) -> dict:
    """Dense vs pruned parameter / FLOPs figures (what logs, benchmarks and model cards show)."""
    d_params, p_params = count_params(dense), count_params(shape)
    d_flops, p_flops = count_flops(dense, seq_len), count_flops(shape, seq_len)
    return {
        "layer_sparsity": 1.0 - layer_params(shape) / layer_params(dense),
        "embedding_sparsity": 1.0 - p_params["embeddings"] / d_params["embeddings"],
        "total_sparsity": 1.0 - p_params["total"] / d_params["total"],
        "params_dense": d_params,
        "params_pruned": p_params,
        "flops_dense": d_flops,
        "flops_pruned": p_flops,
        "flops_seq_len": seq_len,
        "hidden_size": shape.hidden_size,
        "num_heads": list(shape.num_heads),
        "intermediate_sizes": list(shape.intermediate_sizes),
    }


def materialize(
    model: PreTrainedModel,
    budget: Budget | None = None,
    round_to: int | None = None,
    plan: KeepPlan | None = None,
    fill_to_budget: bool = True,
    uniform: bool = False,
) -> PreTrainedModel:
    """A physically smaller copy of a gated ``model`` (gates folded in) that meets ``budget``.

    Encoders become ``PrunedEncoder*`` models, decoder LMs ``PrunedDecoderForCausalLM`` (or, with
    ``uniform=True`` and the LLaMA layout, a model of the original family with a native config). The config
    records the dense/pruned figures in ``config.pruning_report``.
    """
    adapter = get_adapter(model)
    dense = dense_shape(model, adapter)
    if adapter.kind == "decoder":
        from .decoder_materialize import materialize_decoder

        return materialize_decoder(model, adapter, dense, budget, round_to, plan, fill_to_budget, uniform)
    if uniform:
        raise ValueError("uniform=True applies to decoder LMs (it saves a native config); encoders keep per-layer shapes.")
    if plan is None:
        gates = get_gates(model)
        if gates is None:
            raise ValueError(
                "materialize() needs a model with VTrans gates attached (hf_compress.vtrans.attach_gates) or an "
                "explicit KeepPlan (e.g. from a baseline's scores)."
            )
        plan = plan_from_gates(gates, dense, budget, round_to, fill_to_budget)
    pruned = build_pruned_model(model, plan)
    report = size_report(dense, plan.shape(dense), budget.seq_len if budget else 128)
    report["hidden_index"] = [int(i) for i in plan.hidden]  # kept original dims (for distillation, probing)
    report["head_index"] = [[int(h) for h in heads] for heads in plan.heads]  # kept original heads per layer
    if budget is not None:
        report["budget"] = budget.summary(plan.shape(dense))
        report["budget"]["description"] = budget.description
    pruned.config.pruning_report = report
    logger.info(
        "Materialized: hidden %d -> %d, layer sparsity %.1f%%, total params %s -> %s",
        dense.hidden_size, len(plan.hidden), 100 * report["layer_sparsity"],
        f"{report['params_dense']['total']:,}", f"{report['params_pruned']['total']:,}",
    )
    return pruned

