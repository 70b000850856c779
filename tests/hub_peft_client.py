"""Client side of tests/test_hub_peft.py, run in a subprocess so HF_ENDPOINT / HF_HOME are set before import.

    python hub_peft_client.py push KIND BASE_REPO ADAPTER_REPO OUT_DIR
    python hub_peft_client.py load peft|auto KIND BASE_REPO ADAPTER_REPO OUT_DIR BASE_REVISION ADAPTER_REVISION

``push``: pushes a pruned base (KIND: encoder / decoder, see hub_models.py) to BASE_REPO (commit a1), loads it
back from there, adds LoRA to its projections (the adapter config pins the base at a1), tunes it a few steps
and pushes the adapter to ADAPTER_REPO (b1); tunes more and pushes again (b2); finally pushes a different base
to BASE_REPO (a2, now its main). Saves each adapter's weights and logits to OUT_DIR/pushed-b1|b2.safetensors.

``load``: with ``peft``, the base from BASE_REPO at BASE_REVISION plus ``PeftModel.from_pretrained(base,
ADAPTER_REPO)``; with ``auto``, ``AutoPeftModelFor*.from_pretrained(ADAPTER_REPO)`` (the base is resolved from
the adapter config). Both once at the adapter's main and once at ADAPTER_REVISION; saves OUT_DIR/MODE-main
and OUT_DIR/MODE-pinned .safetensors and prints what was loaded.
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
from peft import (
    AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, LoraConfig, PeftModel, get_peft_model,
    get_peft_model_state_dict,
)
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

import hf_compress  # noqa: F401  (registers the pruned classes with the Auto classes)
from hub_models import build

AUTO = {"encoder": AutoModelForSequenceClassification, "decoder": AutoModelForCausalLM}
AUTO_PEFT = {"encoder": AutoPeftModelForSequenceClassification, "decoder": AutoPeftModelForCausalLM}
TASK = {"encoder": "SEQ_CLS", "decoder": "CAUSAL_LM"}
TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]  # module names of both pruned classes
INPUTS = {"input_ids": torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]),
          "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])}


def save(model, path: Path) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(**INPUTS).logits
    tensors = {f"adapter.{k}": v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file({**tensors, "logits": logits.contiguous()}, path)


def tune(model, kind: str, steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        ids = torch.randint(4, 100, (4, 8))
        labels = torch.randint(0, 2, (4,)) if kind == "encoder" else ids
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def fingerprint(model) -> str:
    """Which base weights these are (peft leaves the input embeddings alone)."""
    return hashlib.sha256(model.get_input_embeddings().weight.detach().numpy().tobytes()).hexdigest()


def loaded(model) -> dict:
    base = model.get_base_model()
    config = model.peft_config["default"]
    return {"peft_class": type(model).__name__, "base_class": type(base).__name__, "base": fingerprint(base),
            "base_model_name_or_path": config.base_model_name_or_path, "base_revision": config.revision,
            "target_modules": sorted(config.target_modules)}


command = sys.argv[1]
if command == "push":
    kind, base_repo, adapter_repo, out = sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5])
    a1 = build(kind, 0).push_to_hub(base_repo, commit_message="pruned base").oid
    base = AUTO[kind].from_pretrained(base_repo)  # adapters are built on the base as published
    config = LoraConfig(task_type=TASK[kind], r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, revision=a1)
    model = get_peft_model(base, config)
    commits = {}
    for tag, seed in (("b1", 1), ("b2", 2)):
        tune(model, kind, steps=3, seed=seed)
        commits[tag] = model.push_to_hub(adapter_repo, commit_message=f"LoRA {tag}").oid
        save(model, out / f"pushed-{tag}.safetensors")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    other = build(kind, 1)
    a2 = other.push_to_hub(base_repo, commit_message="another base").oid
    print(json.dumps({"a1": a1, "a2": a2, **commits, **loaded(model), "a2_base": fingerprint(other),
                      "lora_modules": len(lora_b),
                      "lora_b_nonzero": all(bool(p.abs().sum() > 0) for p in lora_b)}))
else:
    mode, kind, base_repo, adapter_repo, out, base_revision, adapter_revision = sys.argv[2:9]
    out = Path(out)
    report = {}
    for tag, revision in (("main", None), ("pinned", adapter_revision)):
        if mode == "peft":
            base = AUTO[kind].from_pretrained(base_repo, revision=base_revision)
            model = PeftModel.from_pretrained(base, adapter_repo, revision=revision)
        else:
            model = AUTO_PEFT[kind].from_pretrained(adapter_repo, revision=revision)
        save(model, out / f"{mode}-{tag}.safetensors")
        report[tag] = loaded(model)
    print(json.dumps(report))
