"""Tiny pruned models for the Hub client scripts (run as plain scripts in subprocesses, so this module must not
import hf_compress, or set anything offline, at import time)."""

import torch


def build(kind: str, seed: int):
    """A tiny pruned model: ``encoder`` (BERT, layers with different head counts), ``decoder`` (LLaMA, layers
    with different KV groups and FFN widths) or ``decoder-uniform`` (a native LlamaConfig export)."""
    import hf_compress  # noqa: F401
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from hf_compress.vtrans import attach_gates, dense_shape, materialize, resolve_budget

    torch.manual_seed(seed)
    if kind == "encoder":
        dense = BertForSequenceClassification(
            BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        ).eval()
        gates = attach_gates(dense)
        with torch.no_grad():
            gates.groups["heads"].log_sigma2[0, :2] = 5.0  # prune two heads so the layers differ in shape
        return materialize(dense)
    dense = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True)).eval()
    gates = attach_gates(dense)
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[0, :3] = 5.0  # layer 0 keeps one KV group
        gates.groups["ffn"].log_sigma2[1, :16] = 5.0
    if kind == "decoder":
        return materialize(dense)
    return materialize(dense, budget=resolve_budget(dense_shape(dense), target_sparsity=0.4), uniform=True)


def describe(model) -> dict:
    """Class, module, heads and model type of a loaded model, for the tests to compare."""
    config = model.config
    return {
        "class": type(model).__name__,
        "module": type(model).__module__,
        "heads": getattr(config, "num_attention_heads_per_layer", None) or config.num_attention_heads,
        "model_type": config.model_type,
    }
