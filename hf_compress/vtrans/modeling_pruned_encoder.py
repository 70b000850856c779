"""Encoder pruned by VTrans: per-layer head counts and FFN widths, a shared (smaller) hidden size.

One readable implementation covers the post-LayerNorm BERT family (BERT, RoBERTa, DistilBERT): the
adapters map each family's weights onto these module names when a model is materialized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .checkpoint import PrunedCheckpointError, StrictLoadingMixin  # noqa: F401  (re-exported)
from .configuration_pruned_encoder import PrunedEncoderConfig


class PrunedEncoderEmbeddings(nn.Module):
    def __init__(self, config: PrunedEncoderConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size > 0 else None
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_style = config.position_style
        self.padding_idx = config.pad_token_id

    def position_ids_for(self, input_ids: torch.Tensor | None, batch_size: int, seq_len: int, device) -> torch.Tensor:
        if self.position_style == "roberta":
            if input_ids is not None:  # positions count non-padding tokens, starting after padding_idx
                not_pad = input_ids.ne(self.padding_idx).int()
                return torch.cumsum(not_pad, dim=1) * not_pad + self.padding_idx
            return torch.arange(self.padding_idx + 1, seq_len + self.padding_idx + 1, device=device).expand(batch_size, -1)
        return torch.arange(seq_len, device=device).expand(batch_size, -1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeds = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        batch_size, seq_len = embeds.shape[:2]
        if position_ids is None:
            position_ids = self.position_ids_for(input_ids, batch_size, seq_len, embeds.device)
        embeds = embeds + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros((batch_size, seq_len), dtype=torch.long, device=embeds.device)
            embeds = embeds + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(embeds))


class PrunedEncoderAttention(nn.Module):
    """Self-attention with ``num_heads`` heads of ``head_dim`` each, reading and writing ``hidden_size``."""

    def __init__(self, config: PrunedEncoderConfig, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = config.head_dim
        inner_size = num_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner_size)
        self.k_proj = nn.Linear(config.hidden_size, inner_size)
        self.v_proj = nn.Linear(config.hidden_size, inner_size)
        self.o_proj = nn.Linear(inner_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None) -> torch.Tensor:
        batch_size, seq_len, _ = hidden_states.shape
        shape_bhsd = (batch_size, seq_len, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape_bhsd).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape_bhsd).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape_bhsd).transpose(1, 2)
        context_bhsd = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_bias, dropout_p=self.dropout_p if self.training else 0.0
        )
        context = context_bhsd.transpose(1, 2).reshape(batch_size, seq_len, self.num_heads * self.head_dim)
        return self.o_proj(context)


class PrunedEncoderMLP(nn.Module):
    def __init__(self, config: PrunedEncoderConfig, intermediate_size: int) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(hidden_states)))


class PrunedEncoderLayer(nn.Module):
    """Post-LN layer; a removed sub-layer contributes nothing but its LayerNorm still applies."""

    def __init__(self, config: PrunedEncoderConfig, layer_idx: int) -> None:
        super().__init__()
        num_heads = config.num_attention_heads_per_layer[layer_idx]
        intermediate_size = config.intermediate_size_per_layer[layer_idx]
        self.attention = PrunedEncoderAttention(config, num_heads) if num_heads > 0 else None
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = PrunedEncoderMLP(config, intermediate_size) if intermediate_size > 0 else None
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None) -> torch.Tensor:
        if self.attention is not None:
            hidden_states = hidden_states + self.dropout(self.attention(hidden_states, attention_bias))
        hidden_states = self.attention_norm(hidden_states)
        if self.mlp is not None:
            hidden_states = hidden_states + self.dropout(self.mlp(hidden_states))
        return self.mlp_norm(hidden_states)


class PrunedEncoderPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config_class = PrunedEncoderConfig
    config: PrunedEncoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["PrunedEncoderLayer"]
    _optional_missing_prefixes = ("classifier.",)  # a new task head on a pruned base model


class PrunedEncoderModel(PrunedEncoderPreTrainedModel):
    def __init__(self, config: PrunedEncoderConfig) -> None:
        super().__init__(config)
        self.embeddings = PrunedEncoderEmbeddings(config)
        self.layers = nn.ModuleList([PrunedEncoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.pooler = nn.Linear(config.hidden_size, config.pooler_size) if config.pooler_size else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        attention_bias = None
        if attention_mask is not None:  # [batch, seq] 1/0 -> additive [batch, 1, 1, seq]
            keep = attention_mask[:, None, None, :].to(torch.bool)
            attention_bias = torch.zeros(keep.shape, dtype=hidden_states.dtype, device=hidden_states.device)
            attention_bias = attention_bias.masked_fill(~keep, torch.finfo(hidden_states.dtype).min)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_bias)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        pooled = torch.tanh(self.pooler(hidden_states[:, 0])) if self.pooler is not None else None
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states
        )


class PrunedEncoderClassificationHead(nn.Module):
    """Optional hidden->hidden projection + activation (BERT pooler / RoBERTa head / DistilBERT pre-classifier),
    then the label projection."""

    def __init__(self, config: PrunedEncoderConfig) -> None:
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size) if config.classifier_dense else None
        self.activation = ACT2FN[config.classifier_activation] if config.classifier_activation else nn.Identity()
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            features = self.activation(self.dense(features))
        return self.out_proj(self.dropout(features))


def _classification_loss(config: PrunedEncoderConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).squeeze(-1))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class PrunedEncoderForSequenceClassification(PrunedEncoderPreTrainedModel):
    def __init__(self, config: PrunedEncoderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = PrunedEncoderModel(config)
        self.classifier = PrunedEncoderClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.model(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states=output_hidden_states
        )
        logits = self.classifier(outputs.last_hidden_state[:, 0])
        loss = _classification_loss(self.config, logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class PrunedEncoderForTokenClassification(PrunedEncoderPreTrainedModel):
    def __init__(self, config: PrunedEncoderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = PrunedEncoderModel(config)
        self.classifier = PrunedEncoderClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        outputs = self.model(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, output_hidden_states=output_hidden_states
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
