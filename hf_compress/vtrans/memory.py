"""Peak-memory plan of Faster-VTrans on big decoder LMs, and the measurements that check it.

Why this exists: Faster-VTrans freezes every weight and trains only the VIB gates (and the two Lagrange
multipliers), so on a 7B model the trainable state is a few MB while the frozen bf16 weights are 13.5 GB.
Whether a run fits a GPU then depends on what else lives next to those weights: the activations autograd
saves for the gates' gradients (gradient checkpointing cuts them to one hidden state per layer), the
vocabulary-sized logits / KL buffers, the teacher (a second copy of the weights, or the same weights with the
gates switched off, see :class:`SharedWeightsTeacher`), hidden-state distillation, materialization (a pruned
copy of the kept weights) and the optional full fine-tune of the pruned model. :func:`estimate_memory` adds
these up per phase from the model built on the meta device (no weight is allocated, so a 70B config costs
nothing here); :func:`format_memory_plan` prints the plan; :func:`measure_peak_memory` and
:class:`MemoryMonitor` measure real runs next to it.

Exact vs approximate. Parameter, gate, gradient and optimizer bytes are counted from the meta model and are
exact. The tensors saved for backward follow what PyTorch autograd actually saves for a LLaMA-layout layer
with frozen weights and gate hooks (SDPA attention); :func:`saved_tensor_bytes` traces them on a real model and
the tests check formula == trace to the byte. The vocabulary-sized loss buffers are followed moment by moment
in the order ``VTransTrainer.compute_loss`` creates and frees them (on SmolLM2 the measured step peak is within
2% of the estimate); one layer's gradients in backward and a no-grad teacher layer are approximations, and the
materialization and
fine-tune phases assume the kept weights are ``1 - target_sparsity`` of the layer weights with the embeddings
kept whole (an upper bound when hidden dims are pruned). Allocator slack and the CUDA context are not in the
estimate; :data:`DEFAULT_RESERVE_BYTES` covers them in :func:`fits`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .gates import GATE_GROUPS

GB = 10**9
GiB = 2**30
#: CUDA context, cuBLAS workspaces and caching-allocator fragmentation: not in the estimate, kept free by fits().
DEFAULT_RESERVE_BYTES = int(1.5 * GiB)
#: What ``torch.cuda.get_device_properties(0).total_memory`` reports on common cards (bytes).
GPU_CAPACITIES: dict[str, int] = {
    "80GB (A100/H100 80GB)": int(79.2 * GiB),
    "24GB (RTX 3090/4090)": int(23.6 * GiB),
}
#: Optimizer states per trainable parameter, in the parameter's dtype.
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 0, "sgd_momentum": 1}
TEACHERS = ("shared", "copy", "none")
HIDDEN_DISTILL = ("pairwise", "selected", "none")


# ------------------------------------------------------------------------------------------------ the meta model


def meta_model(config: PretrainedConfig, dtype: torch.dtype = torch.bfloat16) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_config(config)`` on the meta device: every shape and dtype, no storage."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()  # init_empty_weights re-registers every parameter, which undoes the tie on the way
    return model


@dataclass(frozen=True)
class Architecture:
    """The sizes the activation formulas need (read through the decoder adapter, so any supported family)."""

    model_type: str
    style: str  # 'llama' (RMSNorm, rotary, gated MLP) or 'gpt2' (LayerNorm, learned positions)
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    gated_mlp: bool
    tie_word_embeddings: bool

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


def _architecture(model: PreTrainedModel) -> tuple[Architecture, Any]:
    from .adapters import get_adapter

    adapter = get_adapter(model)
    if adapter.kind != "decoder":
        raise ValueError(
            f"estimate_memory plans the big-model path of decoder LMs (AutoModelForCausalLM); {type(model).__name__} "
            f"is an encoder."
        )
    dims = adapter.dims(model)
    arch = Architecture(
        model_type=model.config.model_type, style=adapter.style, num_layers=dims.num_layers,
        hidden_size=dims.hidden_size, intermediate_size=dims.intermediate_size, num_heads=dims.num_heads,
        num_kv_heads=dims.num_kv_heads, head_dim=dims.head_dim, vocab_size=dims.vocab_size,
        gated_mlp=adapter.gate_proj is not None, tie_word_embeddings=dims.tie_word_embeddings,
    )
    return arch, adapter


def _param_summary(model: PreTrainedModel, adapter) -> dict[str, int]:
    """Parameter counts by part and bytes of the weights (tied weights once) and buffers, gates excluded."""
    layers_prefix = f"{adapter.base_prefix}.{adapter.layers}." if adapter.is_task_model(model) else f"{adapter.layers}."
    embed = adapter.module(model, "embed_tokens").weight
    positions = adapter.module(model, "embed_positions")
    head = adapter.lm_head(model)
    counts = {"embeddings": 0, "layers": 0, "lm_head": 0, "other": 0}
    weight_bytes = largest = 0
    for name, param in model.named_parameters():
        if name.startswith("vtrans_gates."):
            continue
        weight_bytes += param.numel() * param.element_size()
        largest = max(largest, param.numel())
        if name.startswith(layers_prefix):
            counts["layers"] += param.numel()
        elif param is embed or (positions is not None and param is positions.weight):
            counts["embeddings"] += param.numel()
        elif head is not None and param is head.weight:
            counts["lm_head"] += param.numel()
        else:
            counts["other"] += param.numel()
    buffer_bytes = sum(b.numel() * b.element_size() for _, b in model.named_buffers())
    return {**counts, "total": sum(counts.values()), "weight_bytes": weight_bytes, "buffer_bytes": buffer_bytes,
            "largest": largest}


def _gate_summary(model: PreTrainedModel, groups: tuple[str, ...]) -> dict[str, Any]:
    """Gates as ``attach_gates`` builds them (it works on meta tensors: shapes only, nothing allocated)."""
    from .masking import attach_gates, detach_gates

    gates = attach_gates(model, groups=groups)
    try:
        params = list(gates.named_parameters())
        return {
            "groups": list(gates.groups.keys()),  # kv_groups is dropped without grouped-query attention
            "params": sum(p.numel() for _, p in params),
            "trainable_params": sum(p.numel() for _, p in params if p.requires_grad),
            "bytes": sum(p.numel() * p.element_size() for _, p in params),
            "trainable_bytes": sum(p.numel() * p.element_size() for _, p in params if p.requires_grad),
            "shapes": {n: list(p.shape) for n, p in params},
        }
    finally:
        detach_gates(model)


# ------------------------------------------------------------------------------------------------ activations


def layer_saved_bytes_per_token(
    arch: Architecture,
    dtype_bytes: int,
    groups: tuple[str, ...] | list[str],
    weights_trainable: bool = False,
    attn_implementation: str = "sdpa",
    seq_len: int = 512,
) -> dict[str, int]:
    """Bytes one token leaves saved for backward in one decoder layer (what autograd keeps until backward).

    LLaMA layout, frozen weights, gate hooks of :mod:`decoder_masking` (checked against a trace in the tests):

    - MLP: gate_proj and up_proj outputs and the SiLU output (3 x intermediate, model dtype); the FFN gate's
      product adds the down_proj input (1 x intermediate). A non-gated MLP (GPT-2) keeps its fc output.
    - attention (SDPA, also CUDA flash / memory-efficient): rotated q and the output (q-sized), rotated k and v
      (kv-sized), the log-sum-exp (fp32, one per head). The head gates scale a view of that output: no extra.
      Eager attention adds the fp32 probabilities (heads x seq_len) and their dtype cast.
    - norms: RMSNorm upcasts its input to fp32 and keeps it (2 x hidden x 4 bytes) plus rsqrt per token.
    - gates on sub-layer outputs: every gate multiplied into an output keeps that output for the gate's
      gradient: the sub-layer gate (mha / ffn_layer) and the hidden gate, each hidden-sized.
    - trainable weights (the fine-tune of the pruned model, no gates): inputs are kept for the weight
      gradients: the down_proj input, and per norm its normalized input (norm weight) and output (projections).

    Frozen linears keep no input (their weight gradient is not needed), which is why Faster-VTrans saves less
    than full training even without checkpointing.
    """
    if attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
        raise ValueError(f"attn_implementation must be 'sdpa', 'eager' or 'flash_attention_2', got {attn_implementation!r}.")
    e, h, i = dtype_bytes, arch.hidden_size, arch.intermediate_size
    q, kv, nh = arch.q_dim, arch.kv_dim, arch.num_heads
    groups = set(groups)
    mlp = (3 if arch.gated_mlp else 1) * i
    if "ffn" in groups:
        mlp += i
    if weights_trainable:
        mlp += i
    out = {"mlp": e * mlp}
    if attn_implementation == "eager":
        # q @ k^T keeps q and the repeated k; probs @ v keeps the probabilities (dtype) and the repeated v; the
        # fp32 softmax keeps its output. Then the o_proj input is a fresh contiguous copy.
        probs = nh * seq_len * (4 + (e if e != 4 else 0))
        out["attention"] = e * (4 * q) + probs
    else:
        out["attention"] = e * (2 * q + 2 * kv) + 4 * nh
    if arch.style == "llama":
        out["norms"] = 2 * (4 * h + 4)
    else:  # LayerNorm keeps its input and fp32 mean / rstd
        out["norms"] = 2 * (e * h + 8)
    gated_outputs = ("mha" in groups) + ("ffn_layer" in groups) + 2 * ("hidden" in groups)
    out["gated_outputs"] = e * h * gated_outputs
    out["trainable_inputs"] = e * 4 * h if weights_trainable else 0
    return out


def top_saved_bytes(
    arch: Architecture,
    dtype_bytes: int,
    groups: tuple[str, ...] | list[str],
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool = False,
    weights_trainable: bool = False,
) -> dict[str, int]:
    """Saved-for-backward bytes outside the layers: the embeddings' output kept by the hidden gate, the rotary
    cos / sin tables (one per position, kept by the layers unless they are checkpointed), the final norm, and the
    causal-LM loss (its fp32 log-softmax over the vocabulary and the int64 labels). Trainable weights add the
    token ids (embedding gradient) and the final norm's normalized input and output (its weight and the LM head's).
    """
    e, h, t = dtype_bytes, arch.hidden_size, batch_size * seq_len
    llama = arch.style == "llama"
    out = {
        "embeddings": t * e * h * (1 + (not llama)) if "hidden" in groups else 0,
        "rotary": seq_len * 2 * arch.head_dim * e if llama and not gradient_checkpointing else 0,
        "final_norm": t * (4 * h + 4 if llama else e * h + 8),
        "lm_loss": t * (4 * arch.vocab_size + 8),
    }
    if weights_trainable:
        out["trainable_inputs"] = t * (e * 2 * h + 8)
    return out


# ------------------------------------------------------------------------------------------------ the plan


def _item(name: str, nbytes: int | float, note: str) -> dict[str, Any]:
    return {"name": name, "bytes": int(nbytes), "note": note}


def _phase(items: list[dict], note: str) -> dict[str, Any]:
    return {"items": items, "bytes": int(sum(i["bytes"] for i in items)), "note": note}


def estimate_memory(
    config: PretrainedConfig | PreTrainedModel,
    dtype: torch.dtype = torch.bfloat16,
    batch_size: int = 1,
    seq_len: int = 512,
    gradient_checkpointing: bool = True,
    optimizer: str = "adamw",
    *,
    teacher: str = "shared",
    hidden_distill: str = "selected",
    gate_groups: tuple[str, ...] = GATE_GROUPS,
    target_sparsity: float = 0.3,
    finetune: bool = True,
    device: str = "cuda",
    attn_implementation: str | None = None,
    capacities: dict[str, int] | None = None,
    reserve_bytes: int = DEFAULT_RESERVE_BYTES,
) -> dict[str, Any]:
    """The peak-memory plan of a Faster-VTrans run, per phase, in bytes (see the module docstring).

    Phases: ``load`` (frozen weights in ``dtype``), ``prune_step`` (one Faster-VTrans training step: weights +
    fp32 gates with their gradients and optimizer states + activations + logits / distillation buffers +
    teacher), ``materialize`` (the sliced state dict and the pruned model next to the dense one) and, when
    ``finetune``, ``finetune`` (full-weight training of the pruned model as ``VTransTrainer`` does after
    pruning; skip it with ``finetune_epochs=0``).

    ``teacher``: 'shared' (the student's own frozen weights with the gates switched off,
    :class:`SharedWeightsTeacher`: no second copy), 'copy' (a separate dense teacher model, as
    ``VTransTrainer(teacher_model=dense)``) or 'none' (no distillation). ``hidden_distill``: 'selected' is the
    trainer's layer-mapped hidden-state MSE: the closest student layer per teacher layer is chosen without a
    graph and only the chosen pair's difference is kept for backward (O(layers)); 'pairwise' keeps every
    (teacher layer, student layer) difference for backward (O(layers^2)), what a direct implementation of the
    mapping costs; 'none' (``distill_hidden_weight=0``). ``device`` ('cuda' or 'cpu') is recorded in the
    plan; no phase depends on it (materialization assigns the sliced tensors to a meta-built model on
    either). ``capacities`` maps GPU names to bytes (default :data:`GPU_CAPACITIES`) for the ``fits`` table.
    """
    if isinstance(config, PreTrainedModel):
        config = config.config
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}, got {optimizer!r}.")
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}.")
    if hidden_distill not in HIDDEN_DISTILL:
        raise ValueError(f"hidden_distill must be one of {HIDDEN_DISTILL}, got {hidden_distill!r}.")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}.")
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity must be in [0, 1), got {target_sparsity}.")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}.")
    unknown = set(gate_groups) - set(GATE_GROUPS)
    if unknown:
        raise ValueError(f"Unknown gate groups {sorted(unknown)}; choose from {GATE_GROUPS}.")

    model = meta_model(config, dtype)
    arch, adapter = _architecture(model)
    params = _param_summary(model, adapter)
    gates = _gate_summary(model, tuple(gate_groups))
    attn = attn_implementation or getattr(model.config, "_attn_implementation", None) or "sdpa"
    if attn not in ("sdpa", "eager", "flash_attention_2"):
        attn = "sdpa"
    del model

    e = torch.empty((), dtype=dtype).element_size()
    t = batch_size * seq_len
    L, h, V = arch.num_layers, arch.hidden_size, arch.vocab_size
    groups = tuple(gates["groups"])
    distill = teacher != "none"
    hidden_mode = hidden_distill if distill else "none"

    # -- resident state ---------------------------------------------------------------------------------
    weights = params["weight_bytes"]
    n_states = OPTIMIZER_STATES[optimizer]
    resident = [
        _item("weights", weights, f"frozen, {str(dtype).replace('torch.', '')}: {params['total']:,} parameters"),
        _item("buffers", params["buffer_bytes"], "rotary tables etc."),
        _item("gates", gates["bytes"], f"fp32 VIB gates + 2 Lagrange multipliers: {gates['params']:,} parameters"),
        _item("gate_grads", gates["trainable_bytes"], f"fp32, {gates['trainable_params']:,} trainable"),
        _item("optimizer_states", n_states * gates["trainable_bytes"], f"{optimizer}: {n_states} fp32 states per gate"),
    ]
    if teacher == "copy":
        resident.append(_item("teacher_weights", weights, "a second, dense copy of the weights"))

    # -- one Faster-VTrans step -------------------------------------------------------------------------
    per_layer = layer_saved_bytes_per_token(arch, e, groups, attn_implementation=attn, seq_len=seq_len)
    layer_bytes = sum(per_layer.values())
    top = top_saved_bytes(arch, e, groups, batch_size, seq_len, gradient_checkpointing)
    if gradient_checkpointing:
        saved_layers = L * t * e * h
        saved_note = f"checkpointed: one hidden state per layer ({L} x {t} tokens x {h})"
        recompute = t * layer_bytes
    else:
        saved_layers = L * t * layer_bytes
        saved_note = f"{L} layers x {t} tokens x {layer_bytes:,} B/token"
        recompute = 0
    # one layer's gradients in backward: the MLP intermediates, attention and fp32 norm grads (approximate)
    backward_working = t * (e * (3 * arch.intermediate_size + 2 * h + 2 * arch.q_dim) + 4 * 2 * h)
    saved_top = sum(top.values()) - top["lm_loss"]
    lm_loss_saved = top["lm_loss"]

    teacher_hidden = (L + 1) * t * e * h if hidden_mode != "none" else 0
    pairs = {"pairwise": L * L, "selected": L, "none": 0}[hidden_mode]
    distill_pairs = pairs * t * e * h
    logits = t * e * V  # one logits tensor in the model dtype
    fp32 = 4 * t * V  # one fp32 vocabulary-sized buffer
    teacher_working = t * (e * (2 * arch.q_dim + 2 * arch.kv_dim + 3 * arch.intermediate_size + 2 * h) + 4 * h)

    # What is alive on top of the resident state and the saved layer activations, moment by moment in the order
    # VTransTrainer.compute_loss runs; the step's peak is the largest.
    ce = {"student_logits": logits, "lm_loss": lm_loss_saved}
    moments: dict[str, dict[str, int]] = {
        "student_loss": {**ce, "fp32_upcast": fp32},
        "backward_logits": {"lm_loss": lm_loss_saved, "logit_grads": 2 * fp32 + logits},
        "backward_layer": {"recompute": recompute, "layer_grads": backward_working},
    }
    if distill:
        kd = {"distill_log_softmax": 2 * fp32}
        moments["teacher_forward"] = {**ce, "teacher_layer": teacher_working, "teacher_hidden": teacher_hidden,
                                      "teacher_logits": logits}
        moments["distill_logits"] = {**ce, "teacher_logits": logits, "teacher_hidden": teacher_hidden, **kd,
                                     "kl_elementwise": 3 * fp32}
        moments["backward_logits"] = {"lm_loss": lm_loss_saved, **kd, "logit_grads": 2 * fp32 + logits}
        if distill_pairs:
            moments["distill_hidden"] = {**ce, "teacher_logits": logits, "teacher_hidden": teacher_hidden, **kd,
                                         "distill_hidden_pairs": distill_pairs}
    totals = {name: sum(items.values()) for name, items in moments.items()}
    peak_moment = max(totals, key=totals.get)
    notes = {
        "student_logits": "the student's logits (model dtype)",
        "lm_loss": f"fp32 log-softmax over the {V:,}-token vocabulary kept by the LM loss, + labels",
        "fp32_upcast": "the logits upcast to fp32 for the loss",
        "logit_grads": "fp32 gradients of the log-softmaxes and the logits' gradient",
        "recompute": "one checkpointed layer recomputed for backward",
        "layer_grads": "one layer's gradients in backward (approximate)",
        "teacher_layer": "one no-grad teacher layer's buffers (approximate)",
        "teacher_hidden": "the teacher's hidden states (hidden-state distillation)",
        "teacher_logits": "the teacher's logits",
        "distill_log_softmax": "student and teacher fp32 log-softmax kept by the KL",
        "kl_elementwise": "kl_div(log_target=True) materializes target - input, exp(target) and their product (fp32)",
        "distill_hidden_pairs": f"{pairs} (teacher layer, student layer) differences kept for backward ({hidden_mode})",
    }
    step = resident + [
        _item("saved_layers", saved_layers, saved_note),
        _item("saved_outside_layers", saved_top, "embeddings x hidden gate, rotary tables, final norm"),
    ] + [_item(name, nbytes, notes[name]) for name, nbytes in moments[peak_moment].items() if nbytes]

    # -- materialization ----------------------------------------------------------------------------------
    non_layer = params["total"] - params["layers"]
    pruned_params = int(non_layer + (1.0 - target_sparsity) * params["layers"])
    pruned_bytes = pruned_params * e
    base = [i for i in resident if i["name"] != "gate_grads"]  # Trainer zeroes grads with set_to_none
    # the pruned model is built on the meta device and takes the sliced tensors as they are (assign): one
    # pruned copy, plus the largest weight while it is sliced and scaled by its gate means
    materialize = base + [
        _item("pruned_state_dict", pruned_bytes,
              f"sliced kept weights, ~{pruned_params:,} parameters (the pruned model's own, assigned)"),
        _item("slicing", params["largest"] * e, "the largest weight while it is sliced and scaled"),
    ]

    # -- fine-tune of the pruned model (all its weights train) --------------------------------------------
    phases = {
        "load": _phase(resident[:2], "from_pretrained(..., dtype): the frozen weights"),
        "prune_step": _phase(step, f"one Faster-VTrans step, peak while '{peak_moment}': {_MOMENT_NOTES[peak_moment]}"),
        "materialize": _phase(materialize, "dense + gates + optimizer still alive, pruned copy being built"),
    }
    if finetune:
        ft_layer = layer_saved_bytes_per_token(arch, e, (), weights_trainable=True, attn_implementation=attn, seq_len=seq_len)
        ft_top = top_saved_bytes(arch, e, (), batch_size, seq_len, gradient_checkpointing, weights_trainable=True)
        ft_saved = L * t * (e * h if gradient_checkpointing else sum(ft_layer.values()))
        ft_saved += sum(ft_top.values()) - ft_top["lm_loss"]
        ft_transient = (t * sum(ft_layer.values()) if gradient_checkpointing else 0) + backward_working
        logit_items = ("student_logits", "lm_loss", "fp32_upcast", "logit_grads", "teacher_logits",
                       "distill_log_softmax", "kl_elementwise")
        ft_logits = max(sum(v for k, v in items.items() if k in logit_items) for items in moments.values())
        phases["finetune"] = _phase(
            base + [
                _item("pruned_weights", pruned_bytes, "trainable"),
                _item("pruned_grads", pruned_bytes, f"in {str(dtype).replace('torch.', '')}"),
                _item("pruned_optimizer_states", n_states * pruned_bytes, f"{optimizer}, in the weights' dtype"),
                _item("activations", ft_saved + ft_transient, "weights train: linear inputs are kept too"),
                _item("logits", ft_logits, "loss + logits-distillation buffers at their peak"),
                _item("distill_hidden", teacher_hidden + distill_pairs, "teacher hidden states + layer-pair differences"),
            ],
            "VTransTrainer's fine-tune of the materialized model (finetune_epochs > 0), dense model still alive",
        )
    peak_phase = max(phases, key=lambda k: phases[k]["bytes"])
    plan: dict[str, Any] = {
        "model": {
            "model_type": arch.model_type, "params": params["total"],
            "params_by_part": {k: params[k] for k in ("embeddings", "layers", "lm_head", "other")},
            "dtype": str(dtype).replace("torch.", ""), "bytes_per_param": e,
            "architecture": dataclasses.asdict(arch),
            "gates": {k: v for k, v in gates.items() if k != "shapes"},
        },
        "settings": {
            "batch_size": batch_size, "seq_len": seq_len, "tokens": t, "gradient_checkpointing": gradient_checkpointing,
            "optimizer": optimizer, "teacher": teacher, "hidden_distill": hidden_mode, "target_sparsity": target_sparsity,
            "finetune": finetune, "device": device, "attn_implementation": attn,
        },
        "saved_per_layer_per_token": per_layer,
        "saved_outside_layers": top,
        "moments": totals,
        "phases": phases,
        "peak_phase": peak_phase,
        "peak_bytes": phases[peak_phase]["bytes"],
        "reserve_bytes": reserve_bytes,
    }
    plan["fits"] = {
        name: {phase: fits(plan, cap, reserve_bytes, phase) for phase in phases}
        for name, cap in (GPU_CAPACITIES if capacities is None else capacities).items()
    }
    return plan


_MOMENT_NOTES = {
    "student_loss": "the student's LM loss upcasts its logits to fp32",
    "teacher_forward": "the no-grad teacher pass (student logits and loss kept)",
    "distill_logits": "the logits KL: student and teacher logits and log-softmaxes, element-wise KL",
    "distill_hidden": "the hidden-state MSE: every layer pair's difference kept for backward",
    "backward_logits": "backward through the losses: fp32 logit gradients",
    "backward_layer": "backward through one layer: its recomputed activations and its gradients",
}


def fits(plan: dict, capacity_bytes: int, reserve_bytes: int | None = None, phase: str | None = None) -> bool:
    """Whether ``phase`` (default: the peak phase) of ``plan`` fits ``capacity_bytes`` with ``reserve_bytes`` free."""
    reserve = plan.get("reserve_bytes", DEFAULT_RESERVE_BYTES) if reserve_bytes is None else reserve_bytes
    need = plan["phases"][phase]["bytes"] if phase is not None else plan["peak_bytes"]
    return need + reserve <= capacity_bytes


def _fmt(nbytes: float) -> str:
    if abs(nbytes) >= 0.1 * GB:
        return f"{nbytes / GB:8.2f} GB"
    if abs(nbytes) >= 1e5:
        return f"{nbytes / 1e6:8.1f} MB"
    return f"{nbytes / 1e3:8.1f} kB"


def format_memory_plan(plan: dict, measured: dict[str, float] | None = None) -> str:
    """A readable table of ``plan`` (GB = 1e9 bytes); ``measured`` maps phase -> measured peak bytes, if any."""
    m, s = plan["model"], plan["settings"]
    lines = [
        f"Faster-VTrans memory plan: {m['model_type']} {m['params'] / 1e9:.2f}B params in {m['dtype']}, "
        f"batch {s['batch_size']} x seq {s['seq_len']}, "
        f"gradient checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, {s['optimizer']}, "
        f"teacher {s['teacher']}, hidden distillation {s['hidden_distill']}, attention {s['attn_implementation']}",
    ]
    for name, phase in plan["phases"].items():
        header = f"[{name}] {_fmt(phase['bytes']).strip()}"
        if measured and name in measured:
            header += f"   (measured {_fmt(measured[name]).strip()})"
        lines.append(f"{header}  - {phase['note']}")
        for item in phase["items"]:
            lines.append(f"    {item['name']:<34}{_fmt(item['bytes'])}   {item['note']}")
    lines.append(f"peak: {plan['peak_phase']} {_fmt(plan['peak_bytes']).strip()} ({plan['peak_bytes'] / GiB:.2f} GiB)")
    for gpu, by_phase in plan.get("fits", {}).items():
        verdict = ", ".join(f"{p} {'yes' if ok else 'NO'}" for p, ok in by_phase.items())
        lines.append(f"fits {gpu} (keeping {plan['reserve_bytes'] / GiB:.1f} GiB free): {verdict}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ a teacher without weights


@contextlib.contextmanager
def gates_disabled(model: nn.Module):
    """Run ``model`` as the dense model: every gate hook multiplies by nothing, and the gates' current samples
    (which a checkpointed layer re-reads when it recomputes in backward) stay untouched."""
    from .masking import get_gates

    gates = get_gates(model)
    if gates is None:
        yield model
        return
    gates.refresh = lambda: None  # instance attributes shadow the methods the hooks call
    gates.multiplier = lambda group, layer=None: None
    try:
        yield model
    finally:
        del gates.refresh
        del gates.multiplier


class SharedWeightsTeacher(nn.Module):
    """The gated student's own frozen weights, gates off, as the distillation teacher: no second weight copy.

    Faster-VTrans never changes a weight, so the dense teacher is the student with its gates switched off. Pass
    ``teacher_model=SharedWeightsTeacher(student)`` to ``VTransTrainer``. The student is kept outside this
    module's parameters, so what the trainer does to a teacher (``eval()``, ``requires_grad_(False)``, ``.to()``)
    does not touch it; the forward runs it in eval mode (no dropout) and restores its mode. Only valid while the
    weights are frozen (``variant='faster'``), and under FSDP the student's root parameters are sharded outside
    the wrapped forward: use a teacher copy there.
    """

    def __init__(self, student: PreTrainedModel) -> None:
        super().__init__()
        object.__setattr__(self, "_student", student)  # not a submodule: no shared parameters, no mode changes

    @property
    def student(self) -> PreTrainedModel:
        return self._student

    @property
    def config(self) -> PretrainedConfig:
        return self._student.config

    def forward(self, *args, **kwargs):
        student = self._student
        # each module's own flag comes back, not one flag for all: under Faster-VTrans the student's backbone runs
        # without dropout while its gates sample, and a checkpointed layer's recompute must see that mix again
        modes = [(module, module.training) for module in student.modules()]
        student.eval()
        try:
            with gates_disabled(student):
                return student(*args, **kwargs)
        finally:
            for module, training in modes:
                module.training = training


# ------------------------------------------------------------------------------------------------ measurement


def saved_tensor_bytes(fn: Callable[[], Any], exclude: nn.Module | None = None) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` and count what autograd saves for backward, the thing checkpointing trades for compute.

    Saved tensors are grouped by storage (views share one); parameters of ``exclude`` (already resident) are
    left out. Returns ``(fn's result, {"bytes", "tensors", "by_dtype", "entries"})``, ``entries`` being
    ``(nbytes, shape, dtype)`` per storage (shape of the first tensor saved from it). The saved tensors stay
    referenced by the result's graph, so backward still works.
    """
    skip = {p.untyped_storage().data_ptr() for p in exclude.parameters()} if exclude is not None else set()
    storages: dict[int, tuple[int, tuple[int, ...], str]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in skip and ptr not in storages:
                storages[ptr] = (storage.nbytes(), tuple(tensor.shape), str(tensor.dtype).replace("torch.", ""))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    by_dtype: dict[str, int] = {}
    for nbytes, _, dtype in storages.values():
        by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes
    entries = list(storages.values())
    return result, {"bytes": sum(by_dtype.values()), "tensors": len(entries), "by_dtype": by_dtype, "entries": entries}


def resident_tensor_bytes(*objects: nn.Module | torch.optim.Optimizer | torch.Tensor | None) -> int:
    """Bytes of the distinct storages held by modules (parameters, their gradients, buffers), optimizers (state)
    and tensors:
    the exact resident part of a phase, counted once however often a storage is shared or tied."""
    storages: dict[tuple[str, int], int] = {}

    def add(tensor) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()

    for obj in objects:
        if obj is None:
            continue
        if isinstance(obj, nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                add(tensor)
                add(tensor.grad)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for tensor in state.values():
                    add(tensor)
        else:
            add(obj)
    return sum(storages.values())


def _rss_bytes() -> tuple[int, int | None]:
    """(current RSS, kernel high-water mark VmHWM or None) of this process."""
    try:
        with open("/proc/self/status") as handle:
            status = handle.read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024
        return rss, hwm
    except (OSError, AttributeError):
        import psutil

        return psutil.Process().memory_info().rss, None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


_MARK = "hf_compress.memory.mark:"


@dataclass
class MemoryMonitor:
    """Peak memory of a code region, split into named phases with :meth:`mark`.

    Three measures, each saying something different:

    - ``rss_*`` (CPU, always): resident set size of this process, i.e. every page it touches: torch CPU
      tensors, but also the Python heap, memory-mapped checkpoint files while they are read, and what the C
      allocator keeps after a free. The peak comes from the kernel's high-water mark (reset per phase via
      /proc/self/clear_refs, so nothing between samples is missed) where Linux allows it, else from sampling
      every ``interval`` s in a thread.
    - ``torch_cpu_*`` (``torch_cpu=True``): bytes allocated by torch's CPU allocator, i.e. CPU tensors only,
      from the profiler's memory events (``profile_memory=True``): the running sum of allocations and frees, so
      the peak is exact, reported *above what the phase started with* (``torch_cpu_peak_above_start``; add the
      tensors resident at the phase start, :func:`resident_tensor_bytes`, for an absolute figure). The profiler
      sees the threads it runs on only: training steps (CPU autograd runs on the calling thread) and
      materialization are covered, ``from_pretrained``'s threaded weight loading is not (use RSS there).
    - ``cuda_*`` (when a GPU is available): ``torch.cuda.max_memory_allocated`` (tensors; the caching
      allocator's reserve and the CUDA context are not counted).

    ``rss_peak_delta`` / ``cuda_peak_delta`` are above what was held when monitoring began (e.g. before the
    model was loaded).
    """

    interval: float = 0.002
    cuda: bool | None = None
    torch_cpu: bool = False
    phases: dict[str, dict[str, int | float]] = field(default_factory=dict)
    baseline: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cuda is None:
            self.cuda = torch.cuda.is_available()
        self._current: str | None = None
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel_hwm = False
        self._started = 0.0
        self._profiler = None
        self._order: list[str] = []

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> "MemoryMonitor":
        rss, _ = _rss_bytes()
        self.baseline = {"rss": rss}
        if self.cuda:
            torch.cuda.synchronize()
            self.baseline["cuda_allocated"] = torch.cuda.memory_allocated()
        if self.torch_cpu:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.__enter__()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._close_phase()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self._torch_cpu_peaks()
            self._profiler = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss, _ = _rss_bytes()
            self._sampled_peak = max(self._sampled_peak, rss)
            self._stop.wait(self.interval)

    # -- phases -------------------------------------------------------------------------------------------
    def mark(self, phase: str) -> None:
        """End the current phase (recording its peaks) and start ``phase``; a phase seen again keeps its worst
        peak and adds up its time."""
        self._close_phase()
        self._current = phase
        self._order.append(phase)
        if self._profiler is not None:
            with torch.profiler.record_function(_MARK + phase):  # a timestamp in the profiler's own clock
                pass
        rss, _ = _rss_bytes()
        self._sampled_peak = rss
        self._kernel_hwm = _reset_hwm()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._started = time.perf_counter()

    def _close_phase(self) -> None:
        if self._current is None:
            return
        rss, hwm = _rss_bytes()
        peak = max(self._sampled_peak, rss, hwm if (self._kernel_hwm and hwm is not None) else 0)
        record = {"rss_peak": peak, "rss_end": rss, "seconds": time.perf_counter() - self._started}
        if self.cuda:
            torch.cuda.synchronize()
            record["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
            record["cuda_end_allocated"] = torch.cuda.memory_allocated()
        if self._profiler is not None:
            with torch.profiler.record_function(_MARK + "/end"):
                pass
        old = self.phases.get(self._current)
        if old is not None:
            record = {k: (max(old[k], v) if k != "seconds" else old[k] + v) for k, v in record.items()}
        self.phases[self._current] = record
        self._current = None

    def _torch_cpu_peaks(self) -> None:
        """Per phase, the peak of the running sum of CPU allocator events above the phase's start."""
        events = []
        for event in self._profiler.profiler.kineto_results.events():
            name = event.name()
            if name == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU:
                events.append((event.start_ns(), 1, event.nbytes()))
            elif name.startswith(_MARK):
                events.append((event.start_ns(), 0, name[len(_MARK):]))
        events.sort(key=lambda e: (e[0], e[1]))
        held, start, phase = 0, 0, None
        peaks: dict[str, int] = {}
        nets: dict[str, int] = {}
        marks = iter(self._order)
        for _, kind, value in events:
            if kind == 0:
                if phase is not None:
                    nets[phase] = nets.get(phase, 0) + held - start
                phase = None if value == "/end" else next(marks, value)
                start = held
                if phase is not None:
                    peaks.setdefault(phase, 0)
                continue
            held += value
            if phase is not None:
                peaks[phase] = max(peaks[phase], held - start)
        for name, peak in peaks.items():
            if name in self.phases:
                self.phases[name]["torch_cpu_peak_above_start"] = peak
                self.phases[name]["torch_cpu_net"] = nets.get(name, held - start)

    def peaks(self) -> dict[str, dict[str, float]]:
        """Per phase: absolute peaks and peaks above the baseline (``*_delta``), in bytes."""
        out = {}
        for name, record in self.phases.items():
            row = dict(record)
            row["rss_peak_delta"] = record["rss_peak"] - self.baseline["rss"]
            if "cuda_peak_allocated" in record:
                row["cuda_peak_delta"] = record["cuda_peak_allocated"] - self.baseline.get("cuda_allocated", 0)
            row["kernel_hwm"] = self._kernel_hwm
            out[name] = row
        return out


def measure_peak_memory(
    fn: Callable[..., Any], *args, interval: float = 0.002, torch_cpu: bool = True, **kwargs
) -> tuple[Any, dict[str, Any]]:
    """Run ``fn(*args, **kwargs)`` and return ``(result, peaks)`` (see :class:`MemoryMonitor` for what is measured).

    ``peaks`` holds ``rss_peak`` / ``rss_peak_delta`` (bytes, process RSS, absolute / above the value before the
    call), with ``torch_cpu`` ``torch_cpu_peak_above_start`` (CPU tensor bytes allocated on this thread above the
    start, exact) and, with a GPU,
    ``cuda_peak_allocated`` / ``cuda_peak_delta`` (``torch.cuda.max_memory_allocated``).
    """
    with MemoryMonitor(interval=interval, torch_cpu=torch_cpu) as monitor:
        monitor.mark("run")
        result = fn(*args, **kwargs)
    return result, monitor.peaks()["run"]


__all__ = [
    "Architecture", "DEFAULT_RESERVE_BYTES", "GPU_CAPACITIES", "MemoryMonitor", "SharedWeightsTeacher",
    "estimate_memory", "fits", "format_memory_plan", "gates_disabled", "layer_saved_bytes_per_token",
    "measure_peak_memory", "meta_model", "resident_tensor_bytes", "saved_tensor_bytes", "top_saved_bytes",
]
