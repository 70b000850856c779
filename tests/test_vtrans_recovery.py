"""Post-pruning LoRA recovery on tiny random decoders: target modules found through the structure, a recovery
run that lowers the LM loss, a merged model with the pruned model's exact class and shapes, the adapter alone
reloading onto the pruned base from disk, and the merged model reloading with AutoModelForCausalLM.

Tiny random models: these check mechanics (and that the loss goes down on a learnable pattern), not quality.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import AutoModelForCausalLM, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

import hf_compress  # noqa: F401
from hf_compress.vtrans import (
    PrunedDecoderForCausalLM,
    UnsupportedModelError,
    attach_gates,
    dense_shape,
    get_gates,
    materialize,
    resolve_budget,
)
from hf_compress.vtrans.recovery import default_lora_config, lora_target_modules, recover_with_lora
from trainers import LoRARecoveryArguments, VTransTrainingArguments

from helpers import tiny_model
from test_vtrans_decoder_trainer import lm_dataset
from test_vtrans_decoders import set_gates, tiny_decoder

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
FFN = ("gate_proj", "up_proj", "down_proj")


def nonuniform_pruned_llama() -> PrunedDecoderForCausalLM:
    """Heads, FFN neurons and hidden dims pruned per layer; layer 0 loses its whole attention sub-layer."""
    model = tiny_decoder("llama")
    attach_gates(model)
    for group in ("heads", "ffn", "hidden"):
        set_gates(model, group)
    with torch.no_grad():
        get_gates(model).groups["mha"].log_sigma2[0] = 5.0
    return materialize(model)


def uniform_pruned_llama() -> LlamaForCausalLM:
    model = tiny_decoder("llama")
    attach_gates(model)
    for group in get_gates(model).groups:
        set_gates(model, group)
    return materialize(model, budget=resolve_budget(dense_shape(model), target_sparsity=0.4), uniform=True)


def recovery_args(output_dir, **overrides) -> LoRARecoveryArguments:
    base = dict(
        output_dir=str(output_dir), per_device_train_batch_size=8, num_train_epochs=6, learning_rate=1e-2,
        save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True, logging_steps=4,
    )
    base.update(overrides)
    return LoRARecoveryArguments(**base)


def lm_loss(model, data) -> float:
    """Mean causal-LM loss on the training blocks (all the same length, one batch)."""
    model.eval()
    ids = torch.tensor(data["input_ids"])
    with torch.no_grad():
        return float(model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss)


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


# -- target modules ------------------------------------------------------------------------------------
def test_targets_of_nonuniform_pruned_llama_skip_removed_attention():
    pruned = nonuniform_pruned_llama()
    assert pruned.model.layers[0].self_attn is None and pruned.model.layers[0].mlp is not None
    expected = []
    for i, layer in enumerate(pruned.model.layers):
        if layer.self_attn is not None:
            expected += [f"model.layers.{i}.self_attn.{p}" for p in ATTENTION]
        if layer.mlp is not None:
            expected += [f"model.layers.{i}.mlp.{p}" for p in FFN]
    targets = lora_target_modules(pruned)
    assert targets == expected
    assert not any(t.startswith("model.layers.0.self_attn") for t in targets)
    assert all(isinstance(pruned.get_submodule(t), nn.Linear) for t in targets)


def test_targets_of_uniform_native_llama():
    pruned = uniform_pruned_llama()
    assert type(pruned) is LlamaForCausalLM
    assert lora_target_modules(pruned) == [
        f"model.layers.{i}.{sub}.{p}"
        for i in range(3)
        for sub, names in (("self_attn", ATTENTION), ("mlp", FFN))
        for p in names
    ]


def test_targets_of_dense_gpt2_are_conv1d_and_unambiguous():
    model = tiny_decoder("gpt2")
    targets = lora_target_modules(model)
    per_layer = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # two c_proj: full names keep them apart
    assert targets == [f"transformer.h.{i}.{p}" for i in range(3) for p in per_layer]
    assert all(isinstance(model.get_submodule(t), Conv1D) for t in targets)
    assert default_lora_config(model).fan_in_fan_out  # Conv1D stores [in, out]


def test_model_without_decoder_projections_is_refused_with_the_fix():
    with pytest.raises(UnsupportedModelError, match=r"encoder.*LoraConfig\(target_modules"):
        lora_target_modules(tiny_model("bert"))


def test_recovery_needs_its_arguments(tmp_path):
    args = VTransTrainingArguments(output_dir=str(tmp_path), target_sparsity=0.3, report_to=[], use_cpu=True)
    with pytest.raises(TypeError, match="LoRARecoveryArguments"):
        recover_with_lora(nonuniform_pruned_llama(), None, lm_dataset(), args)


def test_teacher_of_another_width_is_refused_with_the_fix(tmp_path):
    pruned = nonuniform_pruned_llama()
    narrow_teacher = tiny_decoder("llama", hidden_size=24, num_attention_heads=3, num_key_value_heads=1)
    with pytest.raises(ValueError, match="dense model this one was pruned from"):
        recover_with_lora(pruned, narrow_teacher, lm_dataset(), recovery_args(tmp_path))


# -- one recovery run, checked several ways ----------------------------------------------------------------
@pytest.fixture(scope="module")
def recovered(tmp_path_factory):
    """Recover the non-uniform pruned llama (dense teacher, default distillation weights) once for the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: extra threads only add contention
    try:
        root = tmp_path_factory.mktemp("recovery")
        pruned = nonuniform_pruned_llama()
        pruned.save_pretrained(root / "pruned")  # the base the adapter must reload onto
        shapes = {name: tuple(p.shape) for name, p in pruned.named_parameters()}
        data = lm_dataset()
        before = lm_loss(pruned, data)
        teacher = tiny_decoder("llama")  # the dense model the gates were attached to (same seed)
        args = recovery_args(root / "out")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            merged, trainer = recover_with_lora(pruned, teacher, data, args)
        yield dict(root=root, pruned=pruned, merged=merged, trainer=trainer, shapes=shapes, data=data,
                   before=before, args=args)
    finally:
        torch.set_num_threads(threads)


def test_recovery_lowers_the_lm_loss(recovered):
    after = lm_loss(recovered["merged"], recovered["data"])
    print(f"LM loss on the training blocks: {recovered['before']:.3f} -> {after:.3f}")
    assert after < recovered["before"] - 0.1


def test_recovery_distils_through_the_peft_wrapper(recovered):
    trainer, pruned = recovered["trainer"], recovered["pruned"]
    # PrunedModelTrainer read the pruned config through the PeftModel: every layer keeps a sub-layer
    assert trainer.alive == [0, 1, 2]
    assert trainer.hidden_index.tolist() == pruned.config.pruning_report["hidden_index"]
    assert trainer.teacher_model is not None
    report = recovered["merged"].config.pruning_report["recovery"]
    assert report["r"] == 8 and report["distill_hidden_weight"] == 0.9 and report["distill_logits_weight"] == 0.01
    assert report["adapted_modules"] == len(lora_target_modules(pruned))


def test_merged_model_is_the_plain_pruned_model(recovered):
    merged = recovered["merged"]
    assert type(merged) is PrunedDecoderForCausalLM
    assert {name: tuple(p.shape) for name, p in merged.named_parameters()} == recovered["shapes"]
    assert not any(isinstance(m, (LoraLayer, PeftModel)) for m in merged.modules())
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_saved_adapter_reloads_onto_the_pruned_base(recovered):
    adapter_dir = recovered["args"].output_dir + "/adapter"
    base = AutoModelForCausalLM.from_pretrained(recovered["root"] / "pruned")
    assert type(base) is PrunedDecoderForCausalLM
    ids = torch.tensor(recovered["data"]["input_ids"][:4])
    base_logits = logits(base, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_adapter = PeftModel.from_pretrained(base, adapter_dir)
    merged_logits = logits(recovered["merged"], ids)
    assert (base_logits - merged_logits).abs().max() > 1e-2  # the adapter changed something
    assert torch.allclose(logits(with_adapter, ids), merged_logits, atol=1e-5)


def test_merged_model_reloads_with_auto_class(recovered, tmp_path):
    merged = recovered["merged"]
    merged.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is PrunedDecoderForCausalLM
    ids = torch.tensor(recovered["data"]["input_ids"][:4])
    assert torch.allclose(logits(loaded, ids), logits(merged, ids), atol=1e-5)
    assert loaded.config.pruning_report["recovery"]["method"] == "lora"


# -- other structures: a short run keeps the class and the shapes -------------------------------------------
@pytest.mark.parametrize("kind", ["uniform-llama", "dense-gpt2"])
def test_short_recovery_keeps_class_and_shapes(kind, tmp_path):
    model = uniform_pruned_llama() if kind == "uniform-llama" else tiny_decoder("gpt2")
    teacher = tiny_decoder("llama" if kind == "uniform-llama" else "gpt2")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    cls = type(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged, trainer = recover_with_lora(model, teacher, lm_dataset(16), recovery_args(tmp_path, max_steps=2))
    assert type(merged) is cls and trainer.state.global_step == 2
    assert {name: tuple(p.shape) for name, p in merged.named_parameters()} == shapes
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
