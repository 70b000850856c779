"""Exact size of a shape spec, the differentiable expected size from gates, and the budget constraint.

Parameters are counted exactly (every weight, bias and LayerNorm of the pruned model); FLOPs are the
matrix-multiply FLOPs (2 per multiply-add) of one forward pass over one sequence of ``seq_len`` tokens:
projections, attention scores and context, FFN, and the task head. Element-wise work (softmax, norms,
activations) is left out, as is usual for transformer FLOPs figures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from .decoder_budget import DecoderShape


@dataclass
class EncoderShape:
    """Sizes of a (possibly pruned) encoder: enough to count its parameters and FLOPs exactly."""

    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    hidden_size: int
    head_dim: int
    num_heads: list[int]  # per layer; 0 = attention sub-layer removed
    intermediate_sizes: list[int]  # per layer; 0 = FFN sub-layer removed
    head_dense: bool = False  # task head has a hidden->hidden projection
    num_labels: int = 0  # 0 = base model without an output head
    per_token_head: bool = False
    pooler_size: int = 0  # base models with a pooler (hidden -> original hidden, on the first token)

    @property
    def num_layers(self) -> int:
        return len(self.num_heads)


def _layer_params(h: Any, heads: Any, d: int, f: Any, mha_on: Any, ffn_on: Any) -> Any:
    attn = mha_on * (4 * h * heads * d + 3 * heads * d + h)  # q,k,v,o weights + biases
    ffn = ffn_on * (2 * h * f + f + h)  # up, down weights + biases
    norms = 4 * h  # attention and FFN LayerNorms stay even when their sub-layer is removed
    return attn + ffn + norms


def _layer_flops(h: Any, heads: Any, d: int, f: Any, mha_on: Any, ffn_on: Any, seq_len: int) -> Any:
    attn = mha_on * (2 * seq_len * h * 4 * heads * d + 4 * seq_len * seq_len * heads * d)
    ffn = ffn_on * (4 * seq_len * h * f)
    return attn + ffn


def _embedding_params(shape: EncoderShape, h: Any) -> Any:
    rows = shape.vocab_size + shape.max_position_embeddings + shape.type_vocab_size
    return rows * h + 2 * h


def _head_params(shape: EncoderShape, h: Any) -> Any:
    if shape.num_labels == 0:
        return h * shape.pooler_size + shape.pooler_size
    dense = (h * h + h) if shape.head_dense else 0
    return dense + h * shape.num_labels + shape.num_labels


def _head_flops(shape: EncoderShape, h: Any, seq_len: int) -> Any:
    if shape.num_labels == 0:
        return 2 * h * shape.pooler_size
    tokens = seq_len if shape.per_token_head else 1
    dense = 2 * h * h if shape.head_dense else 0
    return tokens * (dense + 2 * h * shape.num_labels)


def layer_params(shape: EncoderShape) -> int:
    """Parameters of the transformer layers alone (the quantity ``target_sparsity`` refers to)."""
    if isinstance(shape, DecoderShape):
        return shape.layer_params()
    h, d = shape.hidden_size, shape.head_dim
    return sum(
        _layer_params(h, n, d, f, int(n > 0), int(f > 0)) for n, f in zip(shape.num_heads, shape.intermediate_sizes)
    )


def count_params(shape: EncoderShape) -> dict[str, int]:
    """Exact parameter counts: embeddings, layers, head and total."""
    if isinstance(shape, DecoderShape):
        return shape.count_params()
    h = shape.hidden_size
    counts = {"embeddings": _embedding_params(shape, h), "layers": layer_params(shape), "head": _head_params(shape, h)}
    counts["total"] = sum(counts.values())
    return counts


def count_flops(shape: EncoderShape, seq_len: int = 128) -> int:
    """Matmul FLOPs of one forward pass over one sequence of ``seq_len`` tokens."""
    if isinstance(shape, DecoderShape):
        return shape.count_flops(seq_len)
    h, d = shape.hidden_size, shape.head_dim
    layers = sum(
        _layer_flops(h, n, d, f, int(n > 0), int(f > 0), seq_len)
        for n, f in zip(shape.num_heads, shape.intermediate_sizes)
    )
    return layers + _head_flops(shape, h, seq_len)


METRICS = ("layer_params", "total_params", "flops")


def measure(shape: EncoderShape | DecoderShape, metric: str, seq_len: int = 128) -> int:
    if metric == "layer_params":
        return layer_params(shape)
    if metric == "total_params":
        return count_params(shape)["total"]
    if metric == "flops":
        return count_flops(shape, seq_len)
    raise ValueError(f"Unknown budget metric {metric!r}; choose from {METRICS}.")


def smallest_shape(shape: EncoderShape, min_hidden: int = 1) -> EncoderShape:
    """The smallest model a spec can express: every sub-layer removed, ``min_hidden`` hidden dims."""
    if isinstance(shape, DecoderShape):
        return shape.smallest(min_hidden)
    n = shape.num_layers
    return replace(shape, hidden_size=min_hidden, num_heads=[0] * n, intermediate_sizes=[0] * n)


@dataclass
class Budget:
    """A size target in one metric, resolved against the dense model."""

    metric: str
    target: float
    dense: float
    seq_len: int = 128
    description: str = ""

    @property
    def target_fraction(self) -> float:
        return self.target / self.dense

    def summary(self, shape: EncoderShape) -> dict[str, float]:
        value = measure(shape, self.metric, self.seq_len)
        return {"metric": self.metric, "target": self.target, "realised": value, "dense": self.dense}


def resolve_budget(
    dense_shape: EncoderShape,
    target_sparsity: float | None = None,
    target_params: int | None = None,
    target_flops: float | None = None,
    seq_len: int = 128,
    min_hidden: int = 1,
) -> Budget:
    """Turn the user's single target into a :class:`Budget`; impossible targets raise with both figures."""
    given = {
        k: v
        for k, v in {"target_sparsity": target_sparsity, "target_params": target_params, "target_flops": target_flops}.items()
        if v is not None
    }
    if len(given) != 1:
        raise ValueError(
            f"State exactly one budget: target_sparsity (fraction of transformer-layer parameters removed), "
            f"target_params (total parameters) or target_flops (FLOPs per sequence); got {sorted(given) or 'none'}."
        )
    if target_sparsity is not None:
        metric, dense = "layer_params", layer_params(dense_shape)
        if not 0.0 < target_sparsity < 1.0:
            raise ValueError(f"target_sparsity must lie strictly between 0 and 1, got {target_sparsity}.")
        target = (1.0 - target_sparsity) * dense
        description = f"{target_sparsity:.0%} of the transformer-layer parameters removed"
    elif target_params is not None:
        metric, dense, target = "total_params", count_params(dense_shape)["total"], float(target_params)
        description = f"{int(target_params):,} parameters in total"
    else:
        metric, dense, target = "flops", count_flops(dense_shape, seq_len), float(target_flops)
        description = f"{target_flops:.3g} FLOPs per sequence of {seq_len} tokens"
    smallest = measure(smallest_shape(dense_shape, min_hidden), metric, seq_len)
    if target >= dense:
        raise ValueError(
            f"The budget ({description}: {target:,.0f}) is not below the dense model's {dense:,.0f} "
            f"({metric}); there is nothing to prune. Choose a smaller target."
        )
    if target < smallest:
        raise ValueError(
            f"The budget ({description}: {target:,.0f} {metric}) is below the smallest model this architecture "
            f"can express ({smallest:,.0f}: every sub-layer removed, hidden size {min_hidden}). "
            f"Choose a larger target."
        )
    return Budget(metric=metric, target=target, dense=float(dense), seq_len=seq_len, description=description)


def expected_size(dense_shape: EncoderShape, gates, metric: str, seq_len: int = 128) -> torch.Tensor:
    """Differentiable expected size from the gates' keep probabilities (same formulas as the exact count)."""
    if isinstance(dense_shape, DecoderShape):
        return dense_shape.expected(gates, metric, seq_len)
    ek = {name: gates.expected_keep(name) for name in ("hidden", "heads", "ffn", "mha", "ffn_layer")}
    n = dense_shape.num_layers
    h = ek["hidden"].sum() if ek["hidden"] is not None else dense_shape.hidden_size
    heads = ek["heads"].sum(-1) if ek["heads"] is not None else [dense_shape.num_heads[i] for i in range(n)]
    ffn = ek["ffn"].sum(-1) if ek["ffn"] is not None else [dense_shape.intermediate_sizes[i] for i in range(n)]
    mha_on = ek["mha"] if ek["mha"] is not None else [1.0] * n
    ffn_on = ek["ffn_layer"] if ek["ffn_layer"] is not None else [1.0] * n
    d = dense_shape.head_dim
    if metric == "flops":
        total = sum(_layer_flops(h, heads[i], d, ffn[i], mha_on[i], ffn_on[i], seq_len) for i in range(n))
        return total + _head_flops(dense_shape, h, seq_len)
    layers = sum(_layer_params(h, heads[i], d, ffn[i], mha_on[i], ffn_on[i]) for i in range(n))
    if metric == "layer_params":
        return layers
    return layers + _embedding_params(dense_shape, h) + _head_params(dense_shape, h)


@dataclass
class LagrangianTerm:
    """``lambda_1 (s - t) + lambda_2 (s - t)^2`` on sizes relative to dense, with a linear target warm-up."""

    budget: Budget
    warmup_steps: int = 0

    def target_at(self, step: int) -> float:
        """Relative target at a step: from 1.0 (dense) down to the budget over the warm-up."""
        final = self.budget.target_fraction
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return final
        return 1.0 + (final - 1.0) * step / self.warmup_steps

    def __call__(self, expected: torch.Tensor, lambda_1: torch.Tensor, lambda_2: torch.Tensor, step: int):
        relative = expected / self.budget.dense
        gap = relative - self.target_at(step)
        return lambda_1 * gap + lambda_2 * gap * gap, relative
