"""Gates -> kept units -> a physically smaller decoder LM.

Non-uniform results become :class:`PrunedDecoderForCausalLM` (per-layer query / KV heads and FFN widths).
With ``uniform=True`` every layer keeps the same shape and, for the LLaMA layout, the result is a model of
the original family (``LlamaForCausalLM``, ``MistralForCausalLM``, ...) with a plain native config that stock
transformers loads without hf-compress.

Under grouped-query attention a query head is only kept with its KV group and a KV group only with at least
one of its query heads, so the group structure (``heads % kv_heads == 0`` with the right pairing) survives.
RMSNorms over the kept dims get ``eps * H / H'`` and weights ``* sqrt(H / H')``: with the residual stream's
pruned dims at zero this makes masked and materialized outputs equal (LayerNorm, GPT-2, is only close).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from .budget import Budget, count_flops, count_params, layer_params
from .decoder_adapters import DecoderAdapter
from .decoder_budget import DecoderShape
from .configuration_pruned_decoder import PrunedDecoderConfig
from .gates import VIBGates
from .materialize import _Selection, gate_decisions, round_trim_fill
from .modeling_pruned_decoder import PrunedDecoderForCausalLM, PrunedDecoderModel

logger = logging.getLogger(__name__)


@dataclass
class DecoderKeepPlan:
    """Kept unit indices (sorted) per structure and the multipliers folded into the weights."""

    hidden: np.ndarray
    heads: list[np.ndarray]  # query heads kept per layer (original indices)
    kv_heads: list[np.ndarray]  # KV heads kept per layer
    ffn: list[np.ndarray]  # FFN neurons kept per layer
    head_scale: np.ndarray | None = None  # [layers, query heads]: head, group and sub-layer mu
    ffn_scale: np.ndarray | None = None  # [layers, neurons]: neuron and sub-layer mu
    mha_bias_scale: np.ndarray | None = None  # [layers]
    ffn_bias_scale: np.ndarray | None = None  # [layers]

    def shape(self, dense: DecoderShape) -> DecoderShape:
        return replace(
            dense,
            hidden_size=len(self.hidden),
            num_heads=[len(h) for h in self.heads],
            num_kv_heads=[len(g) for g in self.kv_heads],
            intermediate_sizes=[len(f) for f in self.ffn],
        )

    @property
    def is_uniform(self) -> bool:
        return len({(len(h), len(g), len(f)) for h, g, f in zip(self.heads, self.kv_heads, self.ffn)}) == 1


# --------------------------------------------------------------------------------------------------
# choosing units
# --------------------------------------------------------------------------------------------------
class _DecoderSelection(_Selection):
    """Kept / score state of every decoder gate group (KV groups too), with budget trimming and refilling."""

    def __init__(self, dense: DecoderShape, keep: dict, scores: dict, round_to: int) -> None:
        n, Q, G, F = dense.num_layers, dense.num_heads[0], dense.num_kv_heads[0], dense.intermediate_sizes[0]
        self.dense, self.group_size, self.round_to = dense, Q // G, max(1, int(round_to or 1))
        full = {"hidden": (dense.hidden_size,), "heads": (n, Q), "kv_groups": (n, G), "ffn": (n, F), "mha": (n,), "ffn_layer": (n,)}
        self.keep = {g: np.asarray(keep[g], bool).copy() if g in keep else np.ones(s, bool) for g, s in full.items()}
        raw = {g: np.asarray(scores[g], np.float64) if g in scores else np.full(s, np.inf) for g, s in full.items()}
        # a query head is as weak as its weaker gate (its own or its KV group's)
        raw["heads"] = np.minimum(raw["heads"], np.repeat(raw["kv_groups"], self.group_size, axis=-1))
        self.scores = raw
        self.normalize()

    def normalize(self) -> None:
        """Make the structures consistent: heads need their group and sub-layer, a sub-layer needs a unit."""
        k, gs = self.keep, self.group_size
        k["heads"] &= k["mha"][:, None] & np.repeat(k["kv_groups"], gs, axis=-1)
        k["kv_groups"] = k["heads"].reshape(len(k["heads"]), -1, gs).any(-1)
        k["mha"] = k["heads"].any(-1)
        k["ffn"] &= k["ffn_layer"][:, None]
        k["ffn_layer"] = k["ffn"].any(-1)

    def shape(self) -> DecoderShape:
        k = self.keep
        kv_per_head = 1 if self.dense.num_kv_heads[0] == self.dense.num_heads[0] else None
        return replace(
            self.dense,
            hidden_size=int(k["hidden"].sum()),
            num_heads=[int(r.sum()) for r in k["heads"]],
            num_kv_heads=[int(r.sum()) if kv_per_head is None else int(h.sum()) for r, h in zip(k["kv_groups"], k["heads"])],
            intermediate_sizes=[int(r.sum()) for r in k["ffn"]],
        )

    def round_counts(self) -> None:
        m = self.round_to
        if m == 1:
            return
        c = int(self.keep["hidden"].sum())
        self._set_count(self.keep["hidden"], self.scores["hidden"], min(max(m, round(c / m) * m), len(self.keep["hidden"])))
        for i in range(self.dense.num_layers):
            c = int(self.keep["ffn"][i].sum())
            if c:
                self._set_count(self.keep["ffn"][i], self.scores["ffn"][i], min(round(c / m) * m, len(self.keep["ffn"][i])))
        self.normalize()

    # -- non-uniform (trimming: _Selection.fit / _candidates, with these removals) -------------------
    def _remove(self, group: str, layer: int | None, idx) -> None:
        if group == "hidden":
            self.keep["hidden"][idx] = False
        elif group in ("mha", "ffn_layer"):
            self.keep[group][layer] = False
        else:
            self.keep[group][layer][idx] = False
        self.normalize()

    def fill(self, budget: Budget, eligible: dict[str, np.ndarray] | None = None) -> int:
        """Re-admit removed units, best first, while the budget holds (a head brings back its group)."""
        m, chunks = self.round_to, []
        for group, rows in (("hidden", [self.keep["hidden"]]), ("heads", self.keep["heads"]), ("ffn", self.keep["ffn"])):
            step = 1 if group == "heads" else m
            for layer, row in enumerate(rows):
                allowed = ~row
                if eligible is not None:
                    allowed &= eligible[group] if group == "hidden" else eligible[group][layer]
                score = self.scores[group] if group == "hidden" else self.scores[group][layer]
                idx = np.flatnonzero(allowed)
                idx = idx[np.argsort(-score[idx], kind="stable")]
                for start in range(0, len(idx) - step + 1, step):
                    chunk = idx[start : start + step]
                    chunks.append((float(np.mean(score[chunk])), group, layer, chunk))
        added = 0
        for _, group, layer, chunk in sorted(chunks, key=lambda c: -c[0]):
            saved = {g: k.copy() for g, k in self.keep.items()}
            if group == "hidden":
                self.keep["hidden"][chunk] = True
            else:
                self.keep[group][layer][chunk] = True
                if group == "heads":
                    self.keep["kv_groups"][layer][chunk // self.group_size] = True
                    self.keep["mha"][layer] = True
                else:
                    self.keep["ffn_layer"][layer] = True
            self.normalize()
            if self.size(budget) > budget.target:
                self.keep = saved
            else:
                added += 1
        return added

    # -- uniform ---------------------------------------------------------------------------------------
    def fit_uniform(self, budget: Budget, heads_divide_hidden: bool) -> None:
        """Same shape in every layer: remove, everywhere at once, the weakest KV group (with its query
        heads), FFN chunk or hidden chunk until the budget holds; no sub-layer is removed."""
        n, gs, m = self.dense.num_layers, self.group_size, self.round_to
        k = self.keep
        k["mha"][:], k["ffn_layer"][:] = True, True
        group_scores = self.scores["heads"].reshape(n, -1, gs).mean(-1)  # [layers, groups]
        # start from the dense shape: uniform counts come from the scores' ranking alone
        k["hidden"][:], k["kv_groups"][:], k["heads"][:], k["ffn"][:] = True, True, True, True

        def worst(kept_row: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
            idx = np.flatnonzero(kept_row)
            return idx[np.argsort(scores[idx], kind="stable")[:count]]

        while self.size(budget) > budget.target:
            options = []
            if k["hidden"].sum() > m:
                w = worst(k["hidden"], self.scores["hidden"], m)
                options.append((self.scores["hidden"][w].mean(), "hidden", w))
            if k["kv_groups"][0].sum() > 1:
                w = [worst(k["kv_groups"][i], group_scores[i], 1) for i in range(n)]
                options.append((np.mean([group_scores[i][w[i]].mean() for i in range(n)]), "kv_groups", w))
            if k["ffn"][0].sum() > m:
                w = [worst(k["ffn"][i], self.scores["ffn"][i], m) for i in range(n)]
                options.append((np.mean([self.scores["ffn"][i][w[i]].mean() for i in range(n)]), "ffn", w))
            if not options:
                raise ValueError(f"Cannot meet the budget ({budget.description}) with uniform layers.")
            _, group, idx = min(options, key=lambda o: o[0])
            if group == "hidden":
                k["hidden"][idx] = False
            else:
                for i in range(n):
                    k[group][i][idx[i]] = False
                    if group == "kv_groups":
                        k["heads"][i][np.repeat(k["kv_groups"][i], gs) == 0] = False
        if heads_divide_hidden:  # native configs require hidden_size % num_attention_heads == 0
            q = int(k["heads"][0].sum())
            h = int(k["hidden"].sum())
            self._set_count(k["hidden"], self.scores["hidden"], h - h % q)
        self.normalize()


def _to_plan(selection: _DecoderSelection) -> DecoderKeepPlan:
    k = selection.keep
    mha_style = selection.dense.num_kv_heads[0] == selection.dense.num_heads[0]
    return DecoderKeepPlan(
        hidden=np.flatnonzero(k["hidden"]),
        heads=[np.flatnonzero(r) for r in k["heads"]],
        kv_heads=[np.flatnonzero(h if mha_style else g) for h, g in zip(k["heads"], k["kv_groups"])],
        ffn=[np.flatnonzero(r) for r in k["ffn"]],
    )


def select_decoder_units(
    dense: DecoderShape,
    keep: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    budget: Budget | None,
    round_to: int | None = None,
    fill_to_budget: bool = True,
    uniform: bool = False,
    heads_divide_hidden: bool = False,
) -> DecoderKeepPlan:
    """Per-unit keep decisions and scores -> a :class:`DecoderKeepPlan` that meets ``budget``."""
    selection = _DecoderSelection(dense, keep, scores, round_to or 1)
    if uniform:
        if budget is None:
            raise ValueError("uniform=True needs a budget: the common layer shape is sized to it.")
        selection.fit_uniform(budget, heads_divide_hidden)
        return _to_plan(selection)
    round_trim_fill(selection, budget, fill_to_budget)
    return _to_plan(selection)


def decoder_plan_from_gates(
    gates: VIBGates,
    dense: DecoderShape,
    budget: Budget | None,
    round_to: int | None = None,
    fill_to_budget: bool = True,
    uniform: bool = False,
    heads_divide_hidden: bool = False,
) -> DecoderKeepPlan:
    """The VIB decision (``log_alpha < 0``) trimmed to the budget, with ``mu`` as the folded multipliers."""
    with torch.no_grad():
        scores = {g: s.detach().float().cpu().numpy() for g, s in gates.keep_scores().items()}
    plan = select_decoder_units(
        dense, gate_decisions(gates), scores, budget, round_to, fill_to_budget, uniform, heads_divide_hidden
    )
    mus = {g: gate.mu.detach().float().cpu().numpy() for g, gate in gates.groups.items()}
    n, Q = dense.num_layers, dense.num_heads[0]
    ones = lambda *s: np.ones(s)  # noqa: E731
    group_mu = np.repeat(mus.get("kv_groups", ones(n, dense.num_kv_heads[0])), Q // dense.num_kv_heads[0], axis=-1)
    mha, ffn_layer = mus.get("mha", ones(n)), mus.get("ffn_layer", ones(n))
    plan.head_scale = mus.get("heads", ones(n, Q)) * group_mu * mha[:, None]
    plan.ffn_scale = mus.get("ffn", ones(n, dense.intermediate_sizes[0])) * ffn_layer[:, None]
    plan.mha_bias_scale, plan.ffn_bias_scale = mha, ffn_layer
    return plan


# --------------------------------------------------------------------------------------------------
# slicing weights
# --------------------------------------------------------------------------------------------------
def _rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)[None, :]).reshape(-1)


@torch.no_grad()
def pruned_state_dict(model: PreTrainedModel, adapter: DecoderAdapter, plan: DecoderKeepPlan) -> dict[str, torch.Tensor]:
    """The pruned weights, named as in :class:`PrunedDecoderForCausalLM` (multipliers folded in)."""
    dims = adapter.dims(model)
    ref = adapter.module(model, "embed_tokens").weight
    device, dtype = ref.device, ref.dtype
    n, d, H = dims.num_layers, dims.head_dim, dims.hidden_size
    hidden = torch.as_tensor(plan.hidden, dtype=torch.long, device=device)
    Hk = len(hidden)
    rms = adapter.style == "llama"
    norm_gain = math.sqrt(H / Hk) if rms else 1.0
    tensor = lambda x, *shape: (  # noqa: E731  (a missing multiplier is 1)
        torch.ones(shape, dtype=dtype, device=device) if x is None else torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    )
    head_scale = tensor(plan.head_scale, n, dims.num_heads)
    ffn_scale = tensor(plan.ffn_scale, n, dims.intermediate_size)
    mha_bias, ffn_bias = tensor(plan.mha_bias_scale, n), tensor(plan.ffn_bias_scale, n)
    prefix = "model." if adapter.task(model) != "base" else ""
    sd: dict[str, torch.Tensor] = {}

    def norm(name: str, module) -> None:
        sd[name + ".weight"] = module.weight.detach()[hidden] * norm_gain
        if getattr(module, "bias", None) is not None:
            sd[name + ".bias"] = module.bias.detach()[hidden]

    def linear(name: str, layer: int, src: str, rows=None, cols=None, col_scale=None, bias_scale=None) -> None:
        weight, bias = adapter.projection(model, layer, src)
        weight = weight[rows] if rows is not None else weight
        weight = weight[:, cols] if cols is not None else weight
        sd[name + ".weight"] = weight * col_scale[None, :] if col_scale is not None else weight
        if bias is not None:
            bias = bias[rows] if rows is not None else bias
            sd[name + ".bias"] = bias * bias_scale if bias_scale is not None else bias

    sd[prefix + "embed_tokens.weight"] = adapter.module(model, "embed_tokens").weight.detach()[:, hidden]
    if adapter.embed_positions is not None:
        sd[prefix + "embed_positions.weight"] = adapter.module(model, "embed_positions").weight.detach()[:, hidden]
    for i in range(n):
        p = f"{prefix}layers.{i}."
        heads = torch.as_tensor(plan.heads[i], dtype=torch.long, device=device)
        if len(heads):
            kv = torch.as_tensor(plan.kv_heads[i], dtype=torch.long, device=device)
            q_rows, kv_rows = _rows(heads, d), _rows(kv, d)
            norm(p + "attention_norm", adapter.layer_module(model, i, "attention_norm"))
            linear(p + "self_attn.q_proj", i, "q_proj", rows=q_rows, cols=hidden)
            linear(p + "self_attn.k_proj", i, "k_proj", rows=kv_rows, cols=hidden)
            linear(p + "self_attn.v_proj", i, "v_proj", rows=kv_rows, cols=hidden)
            linear(p + "self_attn.o_proj", i, "o_proj", rows=hidden, cols=q_rows,
                   col_scale=head_scale[i][heads].repeat_interleave(d), bias_scale=mha_bias[i])
        neurons = torch.as_tensor(plan.ffn[i], dtype=torch.long, device=device)
        if len(neurons):
            norm(p + "mlp_norm", adapter.layer_module(model, i, "mlp_norm"))
            if adapter.gate_proj is not None:
                linear(p + "mlp.gate_proj", i, "gate_proj", rows=neurons, cols=hidden)
            linear(p + "mlp.up_proj", i, "up_proj", rows=neurons, cols=hidden)
            linear(p + "mlp.down_proj", i, "down_proj", rows=hidden, cols=neurons, col_scale=ffn_scale[i][neurons],
                   bias_scale=ffn_bias[i])
    norm(prefix + "norm", adapter.module(model, "final_norm"))
    head = adapter.lm_head(model)
    if head is not None and not dims.tie_word_embeddings:
        sd["lm_head.weight"] = head.weight.detach()[:, hidden]
    return {k: v.contiguous() for k, v in sd.items()}


def kv_head_maps(plan: DecoderKeepPlan, heads_per_group: int) -> list[list[int] | None]:
    """Per layer, the kept KV slot each kept query head reads; None where groups stayed equal in size."""
    maps = []
    for heads, kv in zip(plan.heads, plan.kv_heads):
        slot = {int(g): j for j, g in enumerate(kv)}
        kv_map = [slot[int(h) // heads_per_group] for h in heads]
        regular = len(kv) > 0 and len(heads) % len(kv) == 0 and kv_map == [j // (len(heads) // len(kv)) for j in range(len(heads))]
        maps.append(None if regular or not len(heads) else kv_map)
    return maps


def pruned_decoder_config(model: PreTrainedModel, adapter: DecoderAdapter, shape: DecoderShape,
                          kv_maps: list[list[int] | None] | None = None) -> PrunedDecoderConfig:
    dims = adapter.dims(model)
    eps = dims.norm_eps * (dims.hidden_size / shape.hidden_size if adapter.style == "llama" else 1.0)
    task = adapter.task(model)
    return PrunedDecoderConfig(
        base_model_type=model.config.model_type,
        style=adapter.style,
        vocab_size=dims.vocab_size,
        hidden_size=shape.hidden_size,
        head_dim=dims.head_dim,
        num_hidden_layers=dims.num_layers,
        num_attention_heads_per_layer=list(shape.num_heads),
        num_key_value_heads_per_layer=list(shape.num_kv_heads),
        intermediate_size_per_layer=list(shape.intermediate_sizes),
        kv_head_map_per_layer=kv_maps,
        hidden_act=dims.hidden_act,
        norm_eps=eps,
        max_position_embeddings=dims.max_position_embeddings,
        rope_parameters=dims.rope_parameters,
        attention_bias=dims.attention_bias,
        o_proj_bias=dims.o_proj_bias,
        mlp_bias=dims.mlp_bias,
        attention_dropout=dims.attention_dropout,
        hidden_dropout=dims.hidden_dropout,
        sliding_window=dims.sliding_window,
        initializer_range=dims.initializer_range,
        tie_word_embeddings=dims.tie_word_embeddings,
        bos_token_id=dims.bos_token_id,
        eos_token_id=dims.eos_token_id,
        pad_token_id=dims.pad_token_id,
        original_sizes=dict(
            hidden_size=dims.hidden_size, num_attention_heads=dims.num_heads, num_key_value_heads=dims.num_kv_heads,
            intermediate_size=dims.intermediate_size, norm_eps=dims.norm_eps, model_type=model.config.model_type,
            name_or_path=getattr(model.config, "_name_or_path", ""),
        ),
        architectures=[(PrunedDecoderForCausalLM if task != "base" else PrunedDecoderModel).__name__],
    )


def native_uniform_config(model: PreTrainedModel, adapter: DecoderAdapter, shape: DecoderShape):
    """The original family's own config at the uniform pruned shape (stock transformers loads it)."""
    if adapter.style != "llama":
        raise ValueError(
            f"uniform=True saves a native config only for the LLaMA layout; {model.config.model_type} ties "
            f"head_dim to hidden_size / num_heads, which pruning breaks. Use uniform=False (hf-compress's own "
            f"per-layer config) for this model."
        )
    dims = adapter.dims(model)
    values = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "auto_map"):
        values.pop(key, None)
    values.update(
        hidden_size=shape.hidden_size,
        num_attention_heads=shape.num_heads[0],
        num_key_value_heads=shape.num_kv_heads[0],
        intermediate_size=shape.intermediate_sizes[0],
        head_dim=dims.head_dim,
        rms_norm_eps=dims.norm_eps * dims.hidden_size / shape.hidden_size,
    )
    return AutoConfig.for_model(**values)


_NATIVE_NAMES = {".attention_norm.": ".input_layernorm.", ".mlp_norm.": ".post_attention_layernorm."}


def build_pruned_decoder(model: PreTrainedModel, adapter: DecoderAdapter, plan: DecoderKeepPlan, dense: DecoderShape,
                         native: bool = False) -> PreTrainedModel:
    """Instantiate the pruned model (ours, or the native class for a uniform LLaMA-layout plan) and load the
    sliced weights into it."""
    shape = plan.shape(dense)
    if shape.hidden_size == 0:
        raise ValueError(
            "Every hidden dimension was pruned, which leaves no model. Give a budget (materialize(model, "
            "budget=...)) so the best units are kept, or train the gates with a smaller KL weight."
        )
    sd = pruned_state_dict(model, adapter, plan)
    task = adapter.task(model)
    # parameters start on the meta device and take the sliced tensors as they are (assign): peak memory is
    # the dense model plus one pruned copy, not two, which matters when a 7B model barely fits
    with init_empty_weights(include_buffers=False):
        if native:
            if not plan.is_uniform or any(f == 0 for f in shape.intermediate_sizes) or any(q == 0 for q in shape.num_heads):
                raise ValueError("A native config needs every layer to keep the same, non-empty shape (uniform=True).")
            config = native_uniform_config(model, adapter, shape)
            pruned = AutoModelForCausalLM.from_config(config) if task != "base" else type(adapter.base_model(model))(config)
        else:
            config = pruned_decoder_config(model, adapter, shape, kv_head_maps(plan, dense.num_heads[0] // dense.num_kv_heads[0]))
            pruned = PrunedDecoderForCausalLM(config) if task != "base" else PrunedDecoderModel(config)
    if native:
        for old, new in _NATIVE_NAMES.items():
            sd = {k.replace(old, new): v for k, v in sd.items()}
    missing, unexpected = pruned.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"Pruned decoder weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    if config.tie_word_embeddings and task != "base":
        pruned.tie_weights()
    pruned.to(device=adapter.module(model, "embed_tokens").weight.device)  # buffers (rotary frequencies) follow
    return pruned.train(model.training)


def decoder_size_report(dense: DecoderShape, shape: DecoderShape, seq_len: int = 128) -> dict:
    d_params, p_params = count_params(dense), count_params(shape)
    return {
        "layer_sparsity": 1.0 - layer_params(shape) / layer_params(dense),
        "embedding_sparsity": 1.0 - p_params["embeddings"] / d_params["embeddings"],
        "total_sparsity": 1.0 - p_params["total"] / d_params["total"],
        "params_dense": d_params,
        "params_pruned": p_params,
        "flops_dense": count_flops(dense, seq_len),
        "flops_pruned": count_flops(shape, seq_len),
        "flops_seq_len": seq_len,
        "hidden_size": shape.hidden_size,
        "num_heads": list(shape.num_heads),
        "num_kv_heads": list(shape.num_kv_heads),
        "intermediate_sizes": list(shape.intermediate_sizes),
    }


def materialize_decoder(
    model: PreTrainedModel,
    adapter: DecoderAdapter,
    dense: DecoderShape,
    budget: Budget | None = None,
    round_to: int | None = None,
    plan: DecoderKeepPlan | None = None,
    fill_to_budget: bool = True,
    uniform: bool = False,
) -> PreTrainedModel:
    """A physically smaller copy of a gated decoder (see :func:`hf_compress.vtrans.materialize`)."""
    native = uniform and adapter.style == "llama"
    if plan is None:
        from .masking import get_gates

        gates = get_gates(model)
        if gates is None:
            raise ValueError(
                "materialize() needs a model with VTrans gates attached (hf_compress.vtrans.attach_gates) or an "
                "explicit DecoderKeepPlan (e.g. from a baseline's scores)."
            )
        plan = decoder_plan_from_gates(gates, dense, budget, round_to, fill_to_budget, uniform, heads_divide_hidden=native)
    pruned = build_pruned_decoder(model, adapter, plan, dense, native=native)
    report = decoder_size_report(dense, plan.shape(dense), budget.seq_len if budget else 128)
    report["hidden_index"] = [int(i) for i in plan.hidden]
    report["head_index"] = [[int(h) for h in heads] for heads in plan.heads]
    if budget is not None:
        report["budget"] = budget.summary(plan.shape(dense))
        report["budget"]["description"] = budget.description
    pruned.config.pruning_report = report
    logger.info(
        "Materialized decoder: hidden %d -> %d, layer sparsity %.1f%%, total params %s -> %s%s",
        dense.hidden_size, len(plan.hidden), 100 * report["layer_sparsity"],
        f"{report['params_dense']['total']:,}", f"{report['params_pruned']['total']:,}",
        " (native uniform config)" if native else "",
    )
    return pruned
