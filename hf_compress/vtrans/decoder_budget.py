"""Exact and expected size of decoder LMs (the decoder counterpart of :mod:`hf_compress.vtrans.budget`).

Parameters are counted exactly: embeddings (plus learned positions for GPT-2), each kept sub-layer with its
norm (a removed sub-layer takes its norm with it), the final norm, and the LM head when it is not tied.
FLOPs are matmul FLOPs (2 per multiply-add) over one sequence of ``seq_len`` tokens, including the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass
class DecoderShape:
    """Sizes of a (possibly pruned) decoder LM: enough to count its parameters and FLOPs exactly."""

    vocab_size: int
    hidden_size: int
    head_dim: int
    num_heads: list[int]  # query heads per layer; 0 = attention sub-layer removed
    num_kv_heads: list[int]  # key/value heads per layer
    intermediate_sizes: list[int]  # per layer; 0 = FFN sub-layer removed
    gated_mlp: bool = True  # gate/up/down (LLaMA) vs up/down (GPT-2)
    attention_bias: bool = False  # q/k/v biases
    o_proj_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False  # LayerNorm (GPT-2) vs RMSNorm
    learned_positions: int = 0  # GPT-2: rows of the position embedding
    tie_word_embeddings: bool = True
    lm_head: bool = True  # False for a base model

    @property
    def num_layers(self) -> int:
        return len(self.num_heads)

    # -- exact and expected per-layer figures (the same formulas serve both) --------------------------
    def _norm(self, h: Any) -> Any:
        return 2 * h if self.norm_bias else h

    def _layer_params(self, h: Any, q: Any, kv: Any, f: Any, mha_on: Any, ffn_on: Any) -> Any:
        d = self.head_dim
        attn = h * q * d + 2 * h * kv * d + q * d * h + self._norm(h)
        if self.attention_bias:
            attn = attn + q * d + 2 * kv * d
        if self.o_proj_bias:
            attn = attn + h
        mats = 3 if self.gated_mlp else 2
        ffn = mats * h * f + self._norm(h)
        if self.mlp_bias:
            ffn = ffn + (mats - 1) * f + h
        return mha_on * attn + ffn_on * ffn

    def _layer_flops(self, h: Any, q: Any, kv: Any, f: Any, mha_on: Any, ffn_on: Any, seq_len: int) -> Any:
        d = self.head_dim
        attn = 2 * seq_len * h * d * (2 * q + 2 * kv) + 4 * seq_len * seq_len * q * d
        ffn = 2 * seq_len * h * f * (3 if self.gated_mlp else 2)
        return mha_on * attn + ffn_on * ffn

    def _embedding_params(self, h: Any) -> Any:
        return (self.vocab_size + self.learned_positions) * h

    def _head_params(self, h: Any) -> Any:
        head = self.vocab_size * h if self.lm_head and not self.tie_word_embeddings else 0
        return head + self._norm(h)  # the final norm

    def _head_flops(self, h: Any, seq_len: int) -> Any:
        return 2 * seq_len * h * self.vocab_size if self.lm_head else 0

    # -- the interface budget.py dispatches to ---------------------------------------------------------
    def _layers(self):
        for q, kv, f in zip(self.num_heads, self.num_kv_heads, self.intermediate_sizes):
            yield q, kv, f, int(q > 0), int(f > 0)

    def layer_params(self) -> int:
        h = self.hidden_size
        return sum(self._layer_params(h, q, kv, f, a, b) for q, kv, f, a, b in self._layers())

    def count_params(self) -> dict[str, int]:
        h = self.hidden_size
        counts = {"embeddings": self._embedding_params(h), "layers": self.layer_params(), "head": self._head_params(h)}
        counts["total"] = sum(counts.values())
        return counts

    def count_flops(self, seq_len: int = 128) -> int:
        h = self.hidden_size
        layers = sum(self._layer_flops(h, q, kv, f, a, b, seq_len) for q, kv, f, a, b in self._layers())
        return layers + self._head_flops(h, seq_len)

    def smallest(self, min_hidden: int = 1) -> "DecoderShape":
        n = self.num_layers
        return replace(self, hidden_size=min_hidden, num_heads=[0] * n, num_kv_heads=[0] * n, intermediate_sizes=[0] * n)

    def expected(self, gates, metric: str, seq_len: int = 128):
        """Differentiable expected size from the gates' keep probabilities."""
        ek = {name: gates.expected_keep(name) for name in ("hidden", "heads", "kv_groups", "ffn", "mha", "ffn_layer")}
        n = self.num_layers
        h = ek["hidden"].sum() if ek["hidden"] is not None else self.hidden_size
        if ek["heads"] is not None and ek["kv_groups"] is not None:  # a query head needs its group
            group = self.num_heads[0] // self.num_kv_heads[0]
            q = (ek["heads"] * ek["kv_groups"].repeat_interleave(group, dim=-1)).sum(-1)
            kv = ek["kv_groups"].sum(-1)
        elif ek["heads"] is not None:
            q = ek["heads"].sum(-1)
            kv = q * (self.num_kv_heads[0] / self.num_heads[0])
        else:
            q, kv = list(self.num_heads), list(self.num_kv_heads)
        f = ek["ffn"].sum(-1) if ek["ffn"] is not None else list(self.intermediate_sizes)
        mha_on = ek["mha"] if ek["mha"] is not None else [1.0] * n
        ffn_on = ek["ffn_layer"] if ek["ffn_layer"] is not None else [1.0] * n
        if metric == "flops":
            total = sum(self._layer_flops(h, q[i], kv[i], f[i], mha_on[i], ffn_on[i], seq_len) for i in range(n))
            return total + self._head_flops(h, seq_len)
        layers = sum(self._layer_params(h, q[i], kv[i], f[i], mha_on[i], ffn_on[i]) for i in range(n))
        if metric == "layer_params":
            return layers
        return layers + self._embedding_params(h) + self._head_params(h)
