"""PEFT (LoRA) adapters on pruned bases through the local Hub, with the real huggingface_hub / transformers /
peft clients: the base in one repo, the adapter in another naming it, loaded back with fresh caches both ways
(``PeftModel.from_pretrained(base, adapter_repo)`` and ``AutoPeftModelFor*.from_pretrained(adapter_repo)``),
at the adapter's main and at a pinned revision."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_client, tiny_model

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub_peft_client.py")


def assert_same(got_path, want_path) -> None:
    got, want = load_file(got_path), load_file(want_path)
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_lora_adapter_on_a_pruned_base_round_trips_through_the_hub(hub, tmp_path, kind):
    base_repo, adapter_repo = f"tester/{kind}-base", f"tester/{kind}-lora"
    pushed = run_client(hub, tmp_path / "h-push", "push", kind, base_repo, adapter_repo, tmp_path, script=CLIENT)
    expected_class = {"encoder": "PrunedEncoderForSequenceClassification", "decoder": "PrunedDecoderForCausalLM"}[kind]
    assert pushed["base_class"] == expected_class
    assert pushed["base_model_name_or_path"] == base_repo and pushed["base_revision"] == pushed["a1"]
    assert pushed["lora_modules"] >= 8 and pushed["lora_b_nonzero"]  # tuned: LoRA changes the outputs
    assert len({pushed["a1"], pushed["a2"], pushed["b1"], pushed["b2"]}) == 4
    files = hub.store.files("model", adapter_repo, pushed["b2"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files) and "model.safetensors" not in files

    v1, v2 = load_file(tmp_path / "pushed-b1.safetensors"), load_file(tmp_path / "pushed-b2.safetensors")
    assert not torch.equal(v1["logits"], v2["logits"])  # the two adapter versions are distinguishable

    # base from its repo (at the commit the adapter was tuned on) + PeftModel.from_pretrained(base, adapter repo)
    manual = run_client(hub, tmp_path / "h-peft", "load", "peft", kind, base_repo, adapter_repo, tmp_path,
                        pushed["a1"], pushed["b1"], script=CLIENT)
    # AutoPeftModelFor*: the base is found through the adapter config (repo and pinned revision) on the Hub
    auto = run_client(hub, tmp_path / "h-auto", "load", "auto", kind, base_repo, adapter_repo, tmp_path,
                      "-", pushed["b1"], script=CLIENT)
    for mode, report in (("peft", manual), ("auto", auto)):
        assert_same(tmp_path / f"{mode}-main.safetensors", tmp_path / "pushed-b2.safetensors")
        assert_same(tmp_path / f"{mode}-pinned.safetensors", tmp_path / "pushed-b1.safetensors")
        for tag in ("main", "pinned"):
            assert report[tag]["base_class"] == expected_class
            assert report[tag]["base"] == pushed["base"] != pushed["a2_base"]  # a1, not the base repo's newer main
            assert report[tag]["base_model_name_or_path"] == base_repo
            assert report[tag]["target_modules"] == sorted(["q_proj", "v_proj", "up_proj", "down_proj"])
    assert auto["main"]["peft_class"] == {"encoder": "PeftModelForSequenceClassification",
                                          "decoder": "PeftModelForCausalLM"}[kind]


def test_peft_default_targets_cover_the_pruned_model_types(hf_compress_registered):
    """``LoraConfig(task_type=...)`` without target_modules works on pruned models like on LLaMA (q_proj,
    v_proj) instead of peft's "Please specify `target_modules`"."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    from hf_compress.vtrans import attach_gates, materialize

    dense = tiny_model("bert")
    with torch.no_grad():
        attach_gates(dense).groups["heads"].log_sigma2[0, :2] = 5.0
    pruned = materialize(dense)
    assert pruned.config.model_type == "vtrans_encoder"
    model = get_peft_model(pruned, LoraConfig(task_type="SEQ_CLS", r=2))
    wrapped = sorted(name.split(".")[-1] for name, module in model.named_modules() if isinstance(module, LoraLayer))
    assert wrapped == sorted(["q_proj", "v_proj"] * pruned.config.num_hidden_layers)
