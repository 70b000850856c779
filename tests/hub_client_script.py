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

from hub_models import build, describe  # noqa: E402

AUTO = {"encoder": AutoModelForSequenceClassification, "decoder": AutoModelForCausalLM, "decoder-uniform": AutoModelForCausalLM}


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
