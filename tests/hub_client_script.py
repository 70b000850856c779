"""Client side of tests/test_hub.py, run in a subprocess so HF_ENDPOINT / HF_HOME are set before import.

    python hub_client_script.py push REPO OUT_FILE SEED [KIND]      -> prints the commit sha
    python hub_client_script.py pull REPO OUT_FILE [REVISION] [KIND]
    python hub_client_script.py pull-without-plugin REPO OUT_FILE KIND

KIND: encoder (pruned BERT, default), decoder (non-uniform pruned LLaMA), decoder-uniform (native LlamaConfig).
``pull-without-plugin`` makes ``import hf_compress`` fail and loads with ``trust_remote_code=True``: the
modeling code pushed with the weights must be enough.
"""

import json
import sys

command, repo, out = sys.argv[1], sys.argv[2], sys.argv[3]
if command == "pull-without-plugin":
    for name in ("hf_compress", "trainers", "model_cards"):
        sys.modules[name] = None  # any import of hf-compress now raises ImportError

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

AUTO = {"encoder": AutoModelForSequenceClassification, "decoder": AutoModelForCausalLM, "decoder-uniform": AutoModelForCausalLM}


def build(kind: str, seed: int):
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
    config = model.config
    return {
        "class": type(model).__name__,
        "module": type(model).__module__,
        "heads": getattr(config, "num_attention_heads_per_layer", None) or config.num_attention_heads,
        "model_type": config.model_type,
    }


if command == "push":
    kind = sys.argv[5] if len(sys.argv) > 5 else "encoder"
    pruned = build(kind, int(sys.argv[4]))
    commit = pruned.push_to_hub(repo, commit_message=f"pruned {kind}, seed {sys.argv[4]}")
    save_file({k: v.detach().clone().contiguous() for k, v in pruned.state_dict().items()}, out)
    print(json.dumps({"commit": commit.oid, **describe(pruned)}))
else:
    if command == "pull":
        import hf_compress  # noqa: F401

        revision = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
        kind = sys.argv[5] if len(sys.argv) > 5 else "encoder"
        model = AUTO[kind].from_pretrained(repo, revision=revision)
    else:
        kind = sys.argv[4]
        model = AUTO[kind].from_pretrained(repo, trust_remote_code=True)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, out)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        logits = model(x).logits
    print(json.dumps({**describe(model), "logits_sum": float(logits.double().sum())}))
