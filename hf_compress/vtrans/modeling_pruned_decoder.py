"""Decoder LM pruned by VTrans: per-layer query / KV head counts and FFN widths, a shared (smaller) hidden size.

One readable implementation covers the pre-norm decoders the adapters map onto it: the LLaMA layout
(LLaMA, Mistral, Qwen2: RMSNorm, rotary positions, gated MLP, grouped-query attention) and GPT-2
(LayerNorm, learned positions, plain MLP). Only layers that kept attention own a KV-cache slot (numbered
in layer order), so the cache's first slot always holds real keys and its sequence length is right for
``generate()`` whichever layers were removed.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, LlamaConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from .checkpoint import StrictLoadingMixin
from .configuration_pruned_decoder import PrunedDecoderConfig


def resolve_cache_argument(past_key_values: Cache | None, kwargs: dict) -> Cache | None:
    """The KV cache of a forward call. transformers >= 5.24 passes it as ``cache`` (``generate`` included),
    earlier 5.x as ``past_key_values``; both are accepted so cached generation works on either."""
    cache = kwargs.pop("cache", None)
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the KV cache once, as cache or as past_key_values, not both.")
    return cache if cache is not None else past_key_values


# the output field that holds the KV cache: ``cache`` from transformers 5.24, ``past_key_values`` before (building an
# output with the other name still works there, but logs a deprecation warning on every first call)
CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class PrunedRMSNorm(nn.Module):
    """RMSNorm (computed in float32, like LLaMA's)."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(config: PrunedDecoderConfig) -> nn.Module:
    if config.style == "gpt2":
        return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
    return PrunedRMSNorm(config.hidden_size, config.norm_eps)


class PrunedDecoderAttention(nn.Module):
    """Causal self-attention with ``num_heads`` query heads sharing ``num_kv_heads`` key/value heads."""

    def __init__(self, config: PrunedDecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.cache_index = sum(1 for q in config.num_attention_heads_per_layer[:layer_idx] if q > 0)
        self.num_heads = config.num_attention_heads_per_layer[layer_idx]
        self.num_kv_heads = config.num_key_value_heads_per_layer[layer_idx]
        self.head_dim = config.head_dim
        self.rotary = config.style == "llama"
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=config.o_proj_bias)
        self.dropout_p = config.attention_dropout
        kv_map = config.kv_head_map_per_layer[layer_idx]
        # groups that kept unequal numbers of query heads: expand K/V per query head instead of GQA kernels
        # (a plain tuple, not a buffer: from_pretrained builds modules on the meta device)
        self.kv_index = None if kv_map is None else tuple(int(j) for j in kv_map)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        past_key_values: Cache | None,
    ) -> torch.Tensor:
        batch_size, seq_len, _ = hidden_states.shape
        query_bhsd = self.q_proj(hidden_states).view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_bhsd = self.k_proj(hidden_states).view(batch_size, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        value_bhsd = self.v_proj(hidden_states).view(batch_size, seq_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.rotary:
            cos, sin = position_embeddings
            query_bhsd, key_bhsd = apply_rotary_pos_emb(query_bhsd, key_bhsd, cos, sin)
        if past_key_values is not None:
            key_bhsd, value_bhsd = past_key_values.update(key_bhsd, value_bhsd, self.cache_index)
        if self.kv_index is not None:
            index = torch.tensor(self.kv_index, dtype=torch.long, device=key_bhsd.device)
            key_bhsd, value_bhsd = key_bhsd[:, index], value_bhsd[:, index]
        context_bhsd = F.scaled_dot_product_attention(
            query_bhsd, key_bhsd, value_bhsd, attn_mask=attention_bias,
            dropout_p=self.dropout_p if self.training else 0.0,
            is_causal=attention_bias is None and seq_len > 1,  # no mask: a first, unpadded causal chunk
            enable_gqa=self.kv_index is None and self.num_heads != self.num_kv_heads,
        )
        context = context_bhsd.transpose(1, 2).reshape(batch_size, seq_len, self.num_heads * self.head_dim)
        return self.o_proj(context)


class PrunedDecoderMLP(nn.Module):
    """Gated (``down(act(gate(x)) * up(x))``, LLaMA style) or plain (``down(act(up(x)))``, GPT-2) FFN."""

    def __init__(self, config: PrunedDecoderConfig, intermediate_size: int) -> None:
        super().__init__()
        gated = config.style == "llama"
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=config.mlp_bias) if gated else None
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))
        return self.down_proj(self.act_fn(self.up_proj(hidden_states)))


class PrunedDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm layer; a removed sub-layer (and its norm) is skipped."""

    def __init__(self, config: PrunedDecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        has_attention = config.num_attention_heads_per_layer[layer_idx] > 0
        width = config.intermediate_size_per_layer[layer_idx]
        self.attention_norm = _norm(config) if has_attention else None
        self.self_attn = PrunedDecoderAttention(config, layer_idx) if has_attention else None
        self.mlp_norm = _norm(config) if width > 0 else None
        self.mlp = PrunedDecoderMLP(config, width) if width > 0 else None
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
    ) -> torch.Tensor:
        if self.self_attn is not None:
            attn = self.self_attn(self.attention_norm(hidden_states), attention_bias, position_embeddings, past_key_values)
            hidden_states = hidden_states + self.dropout(attn)
        if self.mlp is not None:
            hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        return hidden_states


class PrunedDecoderPreTrainedModel(StrictLoadingMixin, PreTrainedModel):
    config_class = PrunedDecoderConfig
    config: PrunedDecoderConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["PrunedDecoderLayer"]
    _supports_sdpa = True
    _optional_missing_prefixes = ("lm_head.",)  # tied to the embeddings, or re-tied on load

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, (nn.LayerNorm, PrunedRMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        else:  # rotary embeddings: transformers recomputes their frequency buffers
            super()._init_weights(module)


def _rotary(config: PrunedDecoderConfig) -> LlamaRotaryEmbedding:
    """The original model's rotary embedding (depends only on head_dim and the rope parameters)."""
    rope_config = LlamaConfig(
        hidden_size=config.head_dim, num_attention_heads=1, head_dim=config.head_dim,
        rope_parameters=dict(config.rope_parameters), max_position_embeddings=config.max_position_embeddings,
    )
    return LlamaRotaryEmbedding(rope_config)


class PrunedDecoderModel(PrunedDecoderPreTrainedModel):
    def __init__(self, config: PrunedDecoderConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.embed_positions = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size) if config.style == "gpt2" else None
        )
        self.rotary_emb = _rotary(config) if config.style == "llama" else None
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([PrunedDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = _norm(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def _attention_bias(self, attention_mask, batch_size, query_len, past_len, dtype, device) -> torch.Tensor | None:
        """Additive [batch, 1, query, key] mask: causal, padding, and the sliding window when configured.

        None when nothing needs masking beyond plain causality (decoding one token, or a first unpadded
        chunk, which the attention then runs with ``is_causal``): SDPA's fast kernels take no explicit mask.
        """
        key_len = past_len + query_len
        no_padding = attention_mask is None or bool(attention_mask[:, -key_len:].all())
        window_irrelevant = not self.config.sliding_window or key_len <= self.config.sliding_window
        if no_padding and window_irrelevant and (query_len == 1 or past_len == 0):
            return None
        query_pos = torch.arange(past_len, key_len, device=device)[:, None]
        key_pos = torch.arange(key_len, device=device)[None, :]
        allowed = key_pos <= query_pos
        if self.config.sliding_window:
            allowed = allowed & (key_pos > query_pos - self.config.sliding_window)
        allowed = allowed[None, None].expand(batch_size, 1, query_len, key_len)
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -key_len:].to(torch.bool)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return bias.masked_fill(~allowed, torch.finfo(dtype).min)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        past_key_values = resolve_cache_argument(past_key_values, kwargs)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        hidden_states = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch_size, seq_len, _ = hidden_states.shape
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        if not any(self.config.num_attention_heads_per_layer) and attention_mask is not None:
            past_len = attention_mask.shape[-1] - seq_len  # no layer keeps a cache: the mask still counts
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + seq_len, device=hidden_states.device)[None].expand(batch_size, -1)
        position_embeddings = None
        if self.embed_positions is not None:
            hidden_states = hidden_states + self.embed_positions(position_ids)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
        hidden_states = self.dropout(hidden_states)
        attention_bias = self._attention_bias(
            attention_mask, batch_size, seq_len, past_len, hidden_states.dtype, hidden_states.device
        )
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_bias, position_embeddings, past_key_values)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:  # like transformers: the last entry is the normed output
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states,
            **{CACHE_FIELD: past_key_values if use_cache else None},
        )


class PrunedDecoderForCausalLM(PrunedDecoderPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: PrunedDecoderConfig) -> None:
        super().__init__(config)
        self.model = PrunedDecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        past_key_values = resolve_cache_argument(past_key_values, kwargs)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
            if num_items_in_batch is None:
                loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
            else:  # Trainer's gradient-accumulation-correct mean
                loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
                loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)}
        )
