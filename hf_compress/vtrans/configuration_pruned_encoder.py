"""Config of an encoder pruned by VTrans: the base architecture plus per-layer kept sizes."""

from __future__ import annotations

from transformers import PretrainedConfig


class PrunedEncoderConfig(PretrainedConfig):
    """A post-LayerNorm encoder (BERT / RoBERTa / DistilBERT family) whose layers may differ in shape.

    Per layer it records the number of attention heads kept (0: the attention sub-layer was removed) and
    the FFN width kept (0: the FFN sub-layer was removed); ``hidden_size`` is the shared hidden dimension
    kept in the embeddings, every layer and the task head. ``head_dim`` is the original one.
    """

    model_type = "vtrans_encoder"

    def __init__(
        self,
        base_model_type: str = "bert",
        vocab_size: int = 30522,
        hidden_size: int = 768,
        head_dim: int = 64,
        num_hidden_layers: int = 12,
        num_attention_heads_per_layer: list[int] | None = None,
        intermediate_size_per_layer: list[int] | None = None,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        position_style: str = "absolute",
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-12,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        classifier_dropout: float | None = None,
        classifier_dense: bool = True,
        classifier_activation: str | None = "tanh",
        initializer_range: float = 0.02,
        pooler_size: int = 0,
        pad_token_id: int | None = 0,
        original_sizes: dict | None = None,
        **kwargs,
    ) -> None:
        heads = list(num_attention_heads_per_layer if num_attention_heads_per_layer is not None else [12] * num_hidden_layers)
        widths = list(intermediate_size_per_layer if intermediate_size_per_layer is not None else [3072] * num_hidden_layers)
        if len(heads) != num_hidden_layers or len(widths) != num_hidden_layers:
            raise ValueError(
                f"PrunedEncoderConfig: num_hidden_layers={num_hidden_layers} but {len(heads)} head counts and "
                f"{len(widths)} FFN widths were given; the per-layer lists must have one entry per layer."
            )
        if hidden_size < 1 or head_dim < 1 or any(n < 0 for n in heads) or any(f < 0 for f in widths):
            raise ValueError(
                "PrunedEncoderConfig: hidden_size and head_dim must be positive and per-layer sizes non-negative "
                f"(got hidden_size={hidden_size}, head_dim={head_dim}, heads={heads}, widths={widths})."
            )
        if position_style not in ("absolute", "roberta"):
            raise ValueError(f"position_style must be 'absolute' or 'roberta', got {position_style!r}.")
        self.base_model_type = base_model_type
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads_per_layer = heads
        self.intermediate_size_per_layer = widths
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.position_style = position_style
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.classifier_dropout = classifier_dropout
        self.classifier_dense = classifier_dense
        self.classifier_activation = classifier_activation
        self.initializer_range = initializer_range
        self.pooler_size = pooler_size
        self.original_sizes = dict(original_sizes or {})
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def num_attention_heads(self) -> int:
        """Largest per-layer head count (what generic tools reading ``num_attention_heads`` expect)."""
        return max(self.num_attention_heads_per_layer, default=0)
