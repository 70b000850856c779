"""Config of a decoder LM pruned by VTrans: the base architecture plus per-layer kept sizes."""

from __future__ import annotations

from transformers import PretrainedConfig


class PrunedDecoderConfig(PretrainedConfig):
    """A pre-norm decoder (LLaMA / Mistral / Qwen2 layout, or GPT-2) whose layers may differ in shape.

    Per layer it records the query heads kept (0: the attention sub-layer was removed), the key/value heads
    kept (grouped-query attention: each KV head serves ``num_attention_heads_per_layer[i] //
    num_key_value_heads_per_layer[i]`` query heads) and the FFN width kept (0: the FFN sub-layer was
    removed). Query heads are listed group by group; ``kv_head_map_per_layer[i]`` (optional) gives, per
    kept query head, the kept KV head it reads, for layers whose groups kept different numbers of query
    heads (without it, each KV head serves an equal consecutive run of query heads). ``hidden_size`` is the shared residual width kept in the embeddings, every layer, every norm
    and the LM head; ``head_dim`` is the original one.

    ``style`` selects the block: ``"llama"`` (RMSNorm, rotary positions, gated SiLU MLP) or ``"gpt2"``
    (LayerNorm, learned positions, plain MLP with biases).
    """

    model_type = "vtrans_decoder"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        base_model_type: str = "llama",
        style: str = "llama",
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        head_dim: int = 128,
        num_hidden_layers: int = 32,
        num_attention_heads_per_layer: list[int] | None = None,
        num_key_value_heads_per_layer: list[int] | None = None,
        intermediate_size_per_layer: list[int] | None = None,
        kv_head_map_per_layer: list[list[int] | None] | None = None,
        hidden_act: str = "silu",
        norm_eps: float = 1e-6,
        max_position_embeddings: int = 2048,
        rope_parameters: dict | None = None,
        attention_bias: bool = False,
        o_proj_bias: bool = False,
        mlp_bias: bool = False,
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        sliding_window: int | None = None,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        original_sizes: dict | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        use_cache: bool = True,
        **kwargs,
    ) -> None:
        n = num_hidden_layers
        heads = list(num_attention_heads_per_layer if num_attention_heads_per_layer is not None else [32] * n)
        kv_heads = list(num_key_value_heads_per_layer if num_key_value_heads_per_layer is not None else heads)
        widths = list(intermediate_size_per_layer if intermediate_size_per_layer is not None else [11008] * n)
        if not len(heads) == len(kv_heads) == len(widths) == n:
            raise ValueError(
                f"PrunedDecoderConfig: num_hidden_layers={n} but {len(heads)} query-head counts, {len(kv_heads)} "
                f"KV-head counts and {len(widths)} FFN widths were given; each list needs one entry per layer."
            )
        kv_maps = [list(m) if m is not None else None for m in (kv_head_map_per_layer or [None] * n)]
        if len(kv_maps) != n:
            raise ValueError(f"PrunedDecoderConfig: kv_head_map_per_layer needs one entry per layer ({n}), got {len(kv_maps)}.")
        for i, (q, kv, kv_map) in enumerate(zip(heads, kv_heads, kv_maps)):
            if kv_map is not None:
                if len(kv_map) != q or sorted(set(kv_map)) != list(range(kv)):
                    raise ValueError(
                        f"PrunedDecoderConfig: layer {i}: kv_head_map {kv_map} must name a KV head (0..{kv - 1}) for "
                        f"each of the {q} query heads and use every KV head."
                    )
                continue
            if q < 0 or kv < 0 or (q == 0) != (kv == 0) or (kv and q % kv):
                raise ValueError(
                    f"PrunedDecoderConfig: layer {i} has {q} query heads and {kv} KV heads; the query heads must be "
                    f"a whole multiple of the KV heads (both 0 when the attention sub-layer is removed)."
                )
        if hidden_size < 1 or head_dim < 1 or any(f < 0 for f in widths):
            raise ValueError(
                f"PrunedDecoderConfig: hidden_size and head_dim must be positive and FFN widths non-negative "
                f"(got hidden_size={hidden_size}, head_dim={head_dim}, widths={widths})."
            )
        if style not in ("llama", "gpt2"):
            raise ValueError(f"style must be 'llama' or 'gpt2', got {style!r}.")
        self.base_model_type = base_model_type
        self.style = style
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.num_hidden_layers = n
        self.num_attention_heads_per_layer = heads
        self.num_key_value_heads_per_layer = kv_heads
        self.intermediate_size_per_layer = widths
        self.kv_head_map_per_layer = kv_maps
        self.hidden_act = hidden_act
        self.norm_eps = norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.rope_parameters = dict(rope_parameters or {"rope_type": "default", "rope_theta": 10000.0})
        self.attention_bias = attention_bias
        self.o_proj_bias = o_proj_bias
        self.mlp_bias = mlp_bias
        self.attention_dropout = attention_dropout
        self.hidden_dropout = hidden_dropout
        self.sliding_window = sliding_window
        self.initializer_range = initializer_range
        self.original_sizes = dict(original_sizes or {})
        self.use_cache = use_cache
        super().__init__(
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings, **kwargs,
        )

    @property
    def num_attention_heads(self) -> int:
        """Largest per-layer query-head count (what generic tools reading ``num_attention_heads`` expect)."""
        return max(self.num_attention_heads_per_layer, default=0)

    @property
    def num_key_value_heads(self) -> int:
        return max(self.num_key_value_heads_per_layer, default=0)

    @property
    def intermediate_size(self) -> int:
        return max(self.intermediate_size_per_layer, default=0)
