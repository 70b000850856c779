"""Per-architecture structure maps.

An adapter is the only place that knows an architecture's module names: where the embeddings, the
attention projections, the FFN and the norms of each layer live, and which head a task model puts on top.
Everything else (gates, budget, materialization) works on the canonical names an adapter exposes.
Adding a family means registering one more adapter::

    register_adapter(EncoderAdapter(model_types=("my_bert",), base_prefix="my_bert", ...))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class UnsupportedModelError(ValueError):
    """Raised for a model that no registered adapter covers."""


@dataclass(frozen=True)
class EncoderDims:
    """The dense sizes of an encoder, read from its config."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    hidden_act: str
    layer_norm_eps: float
    hidden_dropout_prob: float
    attention_dropout_prob: float
    pad_token_id: int | None


@dataclass(frozen=True)
class TaskHead:
    """Where a task model keeps its output head (paths from the task model's root).

    ``dense`` is an optional hidden->hidden projection followed by ``activation`` (BERT's pooler, RoBERTa's
    classification head, DistilBERT's pre-classifier); ``out_proj`` maps hidden -> labels. ``per_token``
    heads (token classification) read every position instead of the first one.
    """

    out_proj: str | None
    dense: str | None = None
    activation: str | None = None
    per_token: bool = False
    dropout_attr: str | None = None  # config attribute holding the classifier dropout


@dataclass(frozen=True)
class EncoderAdapter:
    """Structure map of a post-LayerNorm encoder (BERT family)."""

    model_types: tuple[str, ...]
    base_prefix: str
    layers: str
    word_embeddings: str
    position_embeddings: str
    token_type_embeddings: str | None
    embeddings_norm: str
    q_proj: str
    k_proj: str
    v_proj: str
    o_proj: str
    attention_norm: str
    up_proj: str
    down_proj: str
    mlp_norm: str
    read_dims: Callable[[PretrainedConfig], EncoderDims]
    heads: dict[str, TaskHead] = field(default_factory=dict)
    kind: str = "encoder"
    pooler: str | None = None  # base model's pooler projection (its output keeps the original width)
    position_style: str = "absolute"  # "roberta": positions start after padding_idx
    # What VTransTrainer gates when the user names no groups. While the weights train (VTrans, Fast-VTrans), not
    # the scalar gates over whole MHA / FFN sub-layers: on MiniLM + SST-2 they removed whole attention sub-layers
    # and cost 2 points at 70%, 3.6 at 90% (a sub-layer still goes when all its heads or neurons do). With frozen
    # weights (Faster-VTrans) the sub-layer gates help (without them Faster lost 0.2-2.9 points at 50-70% and 10-13
    # at 90%; the frozen weights cope worse with every sub-layer thinned than with a few removed), but the hidden
    # dimension is not gated: cutting it shifts every LayerNorm's statistics under weights that cannot adapt, and
    # without it Faster gained 0.8 points at 50% (three seeds), 0.6 at 70% (two) and 1.2 at 90% (seed 0).
    # attach_gates() defaults to every group.
    default_gate_groups: tuple[str, ...] = ("hidden", "heads", "ffn")
    frozen_weights_gate_groups: tuple[str, ...] = ("heads", "ffn", "mha", "ffn_layer")

    # -- module lookup -----------------------------------------------------------------------------
    def base_model(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.base_prefix) if hasattr(model, self.base_prefix) else model

    def is_task_model(self, model: nn.Module) -> bool:
        return hasattr(model, self.base_prefix)

    def layer(self, model: nn.Module, index: int) -> nn.Module:
        return self.base_model(model).get_submodule(self.layers)[index]

    def layer_module(self, model: nn.Module, index: int, name: str) -> nn.Module:
        return self.layer(model, index).get_submodule(getattr(self, name))

    def embedding_module(self, model: nn.Module, name: str) -> nn.Module | None:
        path = getattr(self, name)
        return None if path is None else self.base_model(model).get_submodule(path)

    def pooler_module(self, model: nn.Module) -> nn.Module | None:
        """The base model's pooler projection when this is a base model that has one."""
        if self.pooler is None or self.is_task_model(model):
            return None
        try:
            return model.get_submodule(self.pooler)
        except AttributeError:  # e.g. add_pooling_layer=False
            return None

    def task_head(self, model: nn.Module) -> tuple[str, TaskHead]:
        """The task this model solves and where its head lives."""
        if not self.is_task_model(model):
            return "base", TaskHead(out_proj=None)
        class_name = type(model).__name__
        for task, head in self.heads.items():
            if class_name.endswith(task):
                return task, head
        raise UnsupportedModelError(
            f"{class_name}: hf-compress prunes {self.model_types[0]} base models and the heads "
            f"{sorted(self.heads)}; this head is not mapped. Prune the base model "
            f"(AutoModel) or add a TaskHead to the adapter in hf_compress/vtrans/adapters.py."
        )


def _bert_dims(config: PretrainedConfig) -> EncoderDims:
    return EncoderDims(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_dropout_prob=config.attention_probs_dropout_prob,
        pad_token_id=config.pad_token_id,
    )


def _distilbert_dims(config: PretrainedConfig) -> EncoderDims:
    return EncoderDims(
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        num_layers=config.n_layers,
        num_heads=config.n_heads,
        head_dim=config.dim // config.n_heads,
        intermediate_size=config.hidden_dim,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=0,
        hidden_act=config.activation,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=config.dropout,
        attention_dropout_prob=config.attention_dropout,
        pad_token_id=config.pad_token_id,
    )


_BERT_LAYOUT = dict(
    layers="encoder.layer",
    word_embeddings="embeddings.word_embeddings",
    position_embeddings="embeddings.position_embeddings",
    token_type_embeddings="embeddings.token_type_embeddings",
    embeddings_norm="embeddings.LayerNorm",
    q_proj="attention.self.query",
    k_proj="attention.self.key",
    v_proj="attention.self.value",
    o_proj="attention.output.dense",
    attention_norm="attention.output.LayerNorm",
    up_proj="intermediate.dense",
    down_proj="output.dense",
    mlp_norm="output.LayerNorm",
    read_dims=_bert_dims,
    pooler="pooler.dense",
)

_ADAPTERS: dict[str, EncoderAdapter] = {}


def register_adapter(adapter) -> None:
    """Make an architecture prunable (keyed by each of its ``model_type`` values)."""
    for model_type in adapter.model_types:
        _ADAPTERS[model_type] = adapter


register_adapter(
    EncoderAdapter(
        model_types=("bert",),
        base_prefix="bert",
        heads={
            "ForSequenceClassification": TaskHead(
                dense="bert.pooler.dense", activation="tanh", out_proj="classifier", dropout_attr="classifier_dropout"
            ),
            "ForTokenClassification": TaskHead(out_proj="classifier", per_token=True, dropout_attr="classifier_dropout"),
        },
        **_BERT_LAYOUT,
    )
)
register_adapter(
    EncoderAdapter(
        model_types=("roberta", "xlm-roberta", "camembert"),
        base_prefix="roberta",
        position_style="roberta",
        heads={
            "ForSequenceClassification": TaskHead(
                dense="classifier.dense", activation="tanh", out_proj="classifier.out_proj",
                dropout_attr="classifier_dropout",
            ),
            "ForTokenClassification": TaskHead(out_proj="classifier", per_token=True, dropout_attr="classifier_dropout"),
        },
        **_BERT_LAYOUT,
    )
)
register_adapter(
    EncoderAdapter(
        model_types=("distilbert",),
        base_prefix="distilbert",
        layers="transformer.layer",
        word_embeddings="embeddings.word_embeddings",
        position_embeddings="embeddings.position_embeddings",
        token_type_embeddings=None,
        embeddings_norm="embeddings.LayerNorm",
        q_proj="attention.q_lin",
        k_proj="attention.k_lin",
        v_proj="attention.v_lin",
        o_proj="attention.out_lin",
        attention_norm="sa_layer_norm",
        up_proj="ffn.lin1",
        down_proj="ffn.lin2",
        mlp_norm="output_layer_norm",
        read_dims=_distilbert_dims,
        heads={
            "ForSequenceClassification": TaskHead(
                dense="pre_classifier", activation="relu", out_proj="classifier", dropout_attr="seq_classif_dropout"
            ),
            "ForTokenClassification": TaskHead(out_proj="classifier", per_token=True, dropout_attr="dropout"),
        },
    )
)


from .decoder_adapters import GPT2, LLAMA_LAYOUT, DecoderAdapter, llama_layout_problems  # noqa: E402

register_adapter(LLAMA_LAYOUT)
register_adapter(GPT2)

_ALREADY_PRUNED = ("vtrans_encoder", "vtrans_decoder")


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def get_adapter(model_or_config: PreTrainedModel | PretrainedConfig) -> EncoderAdapter | DecoderAdapter:
    """The adapter for a model (or config); a clear error when there is none.

    Decoders that are not registered by name but have the LLaMA layout (q/k/v/o_proj, gate/up/down_proj,
    input / post-attention norms, GQA from the config) are recognised from their modules.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type in _ALREADY_PRUNED:
        raise UnsupportedModelError(
            f"This model was already pruned by hf-compress (model_type {model_type!r}). Prune the original "
            "dense model again at the smaller budget instead of pruning a pruned model."
        )
    if model_type in _ADAPTERS:
        return _ADAPTERS[model_type]
    problems = ["a model (not only a config) to inspect"]
    if isinstance(model_or_config, nn.Module):
        problems = llama_layout_problems(model_or_config)
        if not problems:
            return LLAMA_LAYOUT
    raise UnsupportedModelError(
        f"hf-compress has no VTrans adapter for model_type {model_type!r}. Supported by name: "
        f"{', '.join(supported_model_types())}; decoders with the LLaMA layout are recognised from their modules, "
        f"but this model lacks {', '.join(problems[:6])}. To add a family, register an EncoderAdapter or "
        f"DecoderAdapter naming its embedding, attention (q/k/v/o), FFN and norm modules "
        f"(hf_compress.vtrans.adapters.register_adapter)."
    )
