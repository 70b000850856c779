"""Client side of tests/test_hub.py, run in a subprocess so HF_ENDPOINT / HF_HOME are set before import.

    python hub_client_script.py push REPO OUT_DIR SEED   -> prints the commit sha
    python hub_client_script.py pull REPO OUT_DIR [REVISION]
"""

import json
import sys

import torch

import hf_compress  # noqa: F401
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from hf_compress.vtrans import attach_gates, materialize

command, repo, out = sys.argv[1], sys.argv[2], sys.argv[3]
if command == "push":
    torch.manual_seed(int(sys.argv[4]))
    dense = BertForSequenceClassification(
        BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ).eval()
    gates = attach_gates(dense)
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[0, :2] = 5.0  # prune two heads so the layers differ in shape
    pruned = materialize(dense)
    commit = pruned.push_to_hub(repo, commit_message=f"pruned, seed {sys.argv[4]}")
    save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, out)
    print(json.dumps({"commit": commit.oid}))
elif command == "pull":
    revision = sys.argv[4] if len(sys.argv) > 4 else None
    model = AutoModelForSequenceClassification.from_pretrained(repo, revision=revision)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    print(json.dumps({"class": type(model).__name__, "heads": model.config.num_attention_heads_per_layer}))
