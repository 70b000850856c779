"""The big-model path of Faster-VTrans: the memory plan (LLaMA-2-7B on the meta device, checked by hand), the
saved-activation formulas (checked against what autograd saves), gate gradients under gradient checkpointing,
the shared-weights teacher, the accelerate configs, the measurement tools, and (slow) real bf16 SmolLM2 steps."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from hf_compress.vtrans import attach_gates, get_gates
from hf_compress.vtrans.memory import (
    GB,
    GPU_CAPACITIES,
    MemoryMonitor,
    SharedWeightsTeacher,
    _architecture,
    estimate_memory,
    fits,
    format_memory_plan,
    gates_disabled,
    layer_saved_bytes_per_token,
    measure_peak_memory,
    resident_tensor_bytes,
    saved_tensor_bytes,
    top_saved_bytes,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "accelerate"
ALL_GROUPS = ("hidden", "heads", "kv_groups", "ffn", "mha", "ffn_layer")
GPU_80, GPU_24 = list(GPU_CAPACITIES)


def llama2_7b() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, tie_word_embeddings=False,
    )


def tiny_llama_config(**overrides) -> LlamaConfig:
    """Distinct sizes (hidden 48, q 40, kv 20, FFN 112, vocab 500) so every saved tensor's role is identifiable."""
    kwargs = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
                  intermediate_size=112, vocab_size=500, tie_word_embeddings=False)
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ LLaMA-2-7B plan


@pytest.fixture(scope="module")
def plans_7b():
    config = llama2_7b()
    return {
        "gc": estimate_memory(config, gradient_checkpointing=True),
        "no_gc": estimate_memory(config, gradient_checkpointing=False),
        "copy": estimate_memory(config, teacher="copy"),
    }


def test_llama2_7b_parameters_and_bf16_weights_match_hand_arithmetic(plans_7b):
    h, i, L, V = 4096, 11008, 32, 32000
    per_layer = 4 * h * h + 3 * h * i + 2 * h  # q/k/v/o, gate/up/down, two RMSNorms
    params = L * per_layer + 2 * V * h + h  # untied embeddings and LM head, final norm
    assert params == 6_738_415_616
    plan = plans_7b["gc"]
    assert plan["model"]["params"] == params
    assert plan["model"]["params_by_part"] == {"embeddings": V * h, "layers": L * per_layer, "lm_head": V * h, "other": h}
    weights = plan["phases"]["load"]["items"][0]
    assert weights["name"] == "weights" and weights["bytes"] == 2 * params  # 13.48 GB in bf16
    assert 13.4 * GB < weights["bytes"] < 13.5 * GB


def test_llama2_7b_gates_are_tiny_and_counted_exactly(plans_7b):
    h, i, L, heads = 4096, 11008, 32, 32
    gates = plans_7b["gc"]["model"]["gates"]
    assert gates["groups"] == ["hidden", "heads", "ffn", "mha", "ffn_layer"]  # no GQA in LLaMA-2-7B: no kv_groups
    total = 2 * (h + L * heads + L * i + L + L) + 2  # mu + log_sigma2 per unit, the two Lagrange multipliers
    assert gates["params"] == total == 714_882
    assert gates["trainable_params"] == total - h  # the hidden dims' mu stays fixed at 1 on decoders
    items = {it["name"]: it["bytes"] for it in plans_7b["gc"]["phases"]["prune_step"]["items"]}
    assert items["gates"] == 4 * total and items["gate_grads"] == 4 * (total - h)
    assert items["optimizer_states"] == 2 * 4 * (total - h)  # AdamW: two fp32 states per trainable gate


def test_llama2_7b_activations_with_and_without_checkpointing(plans_7b):
    h, i, L, heads, t = 4096, 11008, 32, 32, 512
    # per token and layer, bf16: MLP 4 x FFN, attention q/out/k/v + fp32 LSE, fp32 norm inputs + rsqrt, 4 gated outputs
    per_token = 2 * (4 * i + 4 * h + 4 * h) + 4 * heads + 2 * (4 * h + 4)
    assert per_token == 186_504
    gc = {it["name"]: it["bytes"] for it in plans_7b["gc"]["phases"]["prune_step"]["items"]}
    no_gc = {it["name"]: it["bytes"] for it in plans_7b["no_gc"]["phases"]["prune_step"]["items"]}
    assert gc["saved_layers"] == L * t * 2 * h  # one bf16 hidden state per layer boundary
    assert no_gc["saved_layers"] == L * t * per_token  # 3.06 GB
    def hidden_distill_bytes(plan):  # teacher hidden states + the layer-pair differences kept for backward
        return {it["name"]: it["bytes"] for it in plan["phases"]["finetune"]["items"]}["distill_hidden"]

    teacher_hidden = (L + 1) * t * 2 * h
    # the trainer's hidden MSE keeps the chosen pair per teacher layer: 0.13 GB
    assert hidden_distill_bytes(plans_7b["gc"]) == teacher_hidden + L * t * 2 * h
    pairwise = estimate_memory(llama2_7b(), gradient_checkpointing=True, hidden_distill="pairwise")
    assert hidden_distill_bytes(pairwise) == teacher_hidden + L * L * t * 2 * h  # every pair kept: 4.29 GB more
    assert pairwise["phases"]["prune_step"]["bytes"] > plans_7b["gc"]["phases"]["prune_step"]["bytes"]


def test_llama2_7b_fits_80gb_and_24gb_with_the_shared_teacher_only(plans_7b):
    for key in ("gc", "no_gc"):
        plan = plans_7b[key]
        assert plan["fits"][GPU_80]["prune_step"] and plan["fits"][GPU_24]["prune_step"]
        assert not plan["fits"][GPU_24]["finetune"]  # full-weight fine-tune of the pruned model: 80 GB only
        assert plan["fits"][GPU_80]["finetune"]
    assert plans_7b["gc"]["phases"]["prune_step"]["bytes"] < plans_7b["no_gc"]["phases"]["prune_step"]["bytes"]
    copy = plans_7b["copy"]
    assert copy["phases"]["prune_step"]["bytes"] - plans_7b["gc"]["phases"]["prune_step"]["bytes"] == 2 * 6_738_415_616
    assert not copy["fits"][GPU_24]["prune_step"] and copy["fits"][GPU_80]["prune_step"]
    assert fits(copy, 10**12) and not fits(copy, 10 * GB)
    table = format_memory_plan(plans_7b["gc"])
    assert "[prune_step]" in table and "13.48 GB" in table and "fits 24GB" in table


def test_estimate_rejects_bad_settings():
    config = tiny_llama_config()
    with pytest.raises(ValueError, match="teacher"):
        estimate_memory(config, teacher="twin")
    with pytest.raises(ValueError, match="optimizer"):
        estimate_memory(config, optimizer="lion")
    with pytest.raises(ValueError, match="gate groups"):
        estimate_memory(config, gate_groups=("heads", "layers"))


# ------------------------------------------------------------------------------------------------ formulas vs autograd


CASES = [
    # dtype, checkpointing, gate groups (None: no gates, weights trainable), attention
    (torch.bfloat16, False, ALL_GROUPS, "sdpa"),
    (torch.bfloat16, True, ALL_GROUPS, "sdpa"),
    (torch.bfloat16, False, ("heads", "ffn"), "sdpa"),
    (torch.bfloat16, False, ALL_GROUPS, "eager"),
    (torch.bfloat16, False, None, "sdpa"),
    (torch.float32, False, ALL_GROUPS, "sdpa"),
    (torch.float32, True, ALL_GROUPS, "sdpa"),
    (torch.float32, False, None, "sdpa"),
]


@pytest.mark.parametrize("dtype,checkpointing,groups,attn", CASES)
def test_saved_activation_formula_equals_what_autograd_saves(dtype, checkpointing, groups, attn):
    """Every token-sized tensor autograd keeps for backward, traced, equals the formula to the byte."""
    batch, seq = 2, 37  # 37: no model dimension is a multiple of it, so token-sized tensors are identifiable
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(attn_implementation=attn), dtype=dtype)
    trainable = groups is None
    if not trainable:
        attach_gates(model, groups=groups)
    for name, param in model.named_parameters():
        if not (trainable or name.startswith("vtrans_gates.")):
            param.requires_grad_(False)  # Faster-VTrans freezes the weights; the gates keep their own flags
    model.train()
    if checkpointing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gradient_checkpointing_enable is a deprecated alias in transformers 5
            model.gradient_checkpointing_enable()
    elif not trainable:
        model.enable_input_require_grads()
    ids = torch.randint(0, 500, (batch, seq))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, report = saved_tensor_bytes(lambda: model(input_ids=ids, labels=ids, use_cache=False), exclude=model)
    traced = sum(nbytes for nbytes, shape, _ in report["entries"] if seq in shape or batch * seq in shape)

    arch, _ = _architecture(model)
    e = torch.empty((), dtype=dtype).element_size()
    gate_groups = tuple(get_gates(model).groups) if not trainable else ()
    per_token = sum(layer_saved_bytes_per_token(arch, e, gate_groups, weights_trainable=trainable,
                                                attn_implementation=attn, seq_len=seq).values())
    layers = arch.num_layers * batch * seq * (e * arch.hidden_size if checkpointing else per_token)
    outside = sum(top_saved_bytes(arch, e, gate_groups, batch, seq, checkpointing, trainable).values())
    assert traced == layers + outside
    out.loss.backward()  # the trace left the graph intact


# ------------------------------------------------------------------------------------------------ checkpointing


def _gate_grads(groups, checkpointing: bool, use_reentrant: bool = False) -> dict[str, torch.Tensor | None]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(), dtype=torch.float32)
    gates = attach_gates(model, groups=groups, init_log_sigma2=-4.0)
    for name, param in model.named_parameters():
        if not name.startswith("vtrans_gates."):
            param.requires_grad_(False)  # Faster-VTrans (the hidden gates' mu stays frozen, as attach_gates set it)
    model.train()
    if checkpointing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gradient_checkpointing_enable is a deprecated alias in transformers 5
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)  # the same gate noise in both runs
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    return {name: None if p.grad is None else p.grad.clone() for name, p in gates.named_parameters()}


@pytest.mark.parametrize("groups", [ALL_GROUPS, ("heads", "ffn")], ids=["all-groups", "no-hidden-gate"])
def test_gate_gradients_under_checkpointing_equal_those_without(groups):
    """The gate hooks run again in the recompute and read the same samples: identical gate gradients.
    Without the hidden gate nothing before layer 0 needs a gradient; transformers' enable_input_require_grads
    (called by gradient_checkpointing_enable) keeps the gradient flowing into the layers anyway."""
    plain = _gate_grads(groups, checkpointing=False)
    checkpointed = _gate_grads(groups, checkpointing=True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        if name in ("groups.hidden.mu",):  # fixed at 1 on decoders
            assert grad is None and checkpointed[name] is None
            continue
        if name.startswith("lambda_"):  # the multipliers get gradients from the Lagrangian, not the LM loss
            continue
        assert grad is not None and checkpointed[name] is not None, name
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5)


def test_reentrant_checkpointing_cannot_train_gates():
    """Pins a limitation: reentrant checkpointing backpropagates each layer separately into the gate samples,
    which live outside the checkpoint, and the second layer finds their graph freed. transformers 5 defaults to
    use_reentrant=False; gradient_checkpointing_kwargs={'use_reentrant': True} must not be used with gates."""
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        _gate_grads(ALL_GROUPS, checkpointing=True, use_reentrant=True)


# ------------------------------------------------------------------------------------------------ shared teacher


def test_shared_weights_teacher_is_the_dense_model_and_leaves_the_student_alone():
    torch.manual_seed(0)
    dense = AutoModelForCausalLM.from_config(tiny_llama_config()).eval()
    student = AutoModelForCausalLM.from_config(tiny_llama_config())
    student.load_state_dict(dense.state_dict())
    gates = attach_gates(student, init_log_sigma2=-4.0)
    student.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student.gradient_checkpointing_enable()
    teacher = SharedWeightsTeacher(student)
    teacher.eval().requires_grad_(False)  # what VTransTrainer does to a teacher
    assert student.training and gates.groups["ffn"].mu.requires_grad
    assert list(teacher.parameters()) == [] and teacher.config is student.config

    ids = torch.randint(0, 500, (2, 16))
    out = student(input_ids=ids, labels=ids, use_cache=False)
    samples = {k: v.detach().clone() for k, v in gates._current.items()}
    backbone = student.model.layers[0].mlp
    backbone.training = False  # mixed modes, as under Faster-VTrans (backbone without dropout, gates sampling)
    with torch.no_grad():
        taught = teacher(input_ids=ids, use_cache=False, output_hidden_states=True)
        reference = dense(input_ids=ids, use_cache=False)
    torch.testing.assert_close(taught.logits, reference.logits)
    assert not torch.allclose(out.logits, reference.logits)  # the student itself is gated
    assert all(torch.equal(samples[k], gates._current[k]) for k in samples)  # the recompute will see the same z
    assert student.training and "refresh" not in vars(gates)  # mode and methods restored
    assert not backbone.training and gates.training  # each module's own mode, not one for all
    out.loss.backward()  # checkpointed recompute after the teacher pass
    assert gates.groups["ffn"].mu.grad.abs().sum() > 0
    with gates_disabled(dense):  # no gates: a no-op
        dense(input_ids=ids)


# ------------------------------------------------------------------------------------------------ accelerate configs


def test_accelerate_configs_load_and_name_known_options():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils.dataclasses import get_module_class_from_name

    launch_options = {action.dest for action in launch_command_parser()._actions}
    ddp = load_config_from_file(str(EXAMPLES / "ddp.yaml"))
    assert ddp.distributed_type == "MULTI_GPU" and ddp.mixed_precision == "no" and ddp.num_processes >= 2

    fsdp = load_config_from_file(str(EXAMPLES / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.mixed_precision == "no"
    options = fsdp.fsdp_config
    assert set(options) <= launch_options, sorted(set(options) - launch_options)  # accelerate launch reads each key
    assert options["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert options["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert options["fsdp_use_orig_params"] is True  # frozen weights and trainable gates share units
    model = AutoModelForCausalLM.from_config(tiny_llama_config())
    attach_gates(model)
    wrapped = [get_module_class_from_name(model, name) for name in options["fsdp_transformer_layer_cls_to_wrap"].split(",")]
    assert [cls.__name__ for cls in wrapped] == ["LlamaDecoderLayer", "VIBGates"]
    readme = (EXAMPLES / "README.md").read_text()
    assert "accelerate launch --config_file examples/accelerate/fsdp.yaml" in readme


# ------------------------------------------------------------------------------------------------ measurement


def test_measure_peak_memory_sees_a_known_allocation():
    def work():
        big = torch.ones(50_000_000)  # 200 MB
        small = torch.ones(1000)
        del big
        return small

    result, peaks = measure_peak_memory(work)
    assert result.shape == (1000,)
    assert 200e6 <= peaks["torch_cpu_peak_above_start"] < 201e6  # exact: the allocator's own events
    assert peaks["torch_cpu_net"] == 4000
    # RSS need not grow: after earlier tests the allocator can reuse pages the process already holds
    assert peaks["rss_peak_delta"] >= 0 and peaks["rss_peak"] > 200e6
    module = torch.nn.Linear(10, 10)
    assert resident_tensor_bytes(module, module.weight) == 4 * (100 + 10)  # a storage counts once


def test_monitor_phases_keep_their_own_peaks():
    with MemoryMonitor(torch_cpu=True) as monitor:
        monitor.mark("big")
        x = torch.ones(25_000_000)  # 100 MB
        del x
        monitor.mark("small")
        y = torch.ones(2_500_000)  # 10 MB
    peaks = monitor.peaks()
    assert 100e6 <= peaks["big"]["torch_cpu_peak_above_start"] < 101e6
    assert 10e6 <= peaks["small"]["torch_cpu_peak_above_start"] < 11e6
    del y


# ------------------------------------------------------------------------------------------------ real SmolLM2 (slow)


@contextlib.contextmanager
def _smollm2_cache():
    """The user's SmolLM2 cache when it is complete (no 20 s conversion), else a temporary one deleted after."""
    from hf_compress import lm

    if importlib.util.find_spec(lm.SMOLLM2_PACKAGE) is None:  # pragma: no cover - the CI installs it
        pytest.fail(f"real model missing: {lm.SMOLLM2_INSTALL}")
    folder = lm._cache_root() / lm.SMOLLM2_CACHE_NAME
    if lm._cache_is_complete(folder, lm._source_info(lm._smollm2_gguf())):
        yield
        return
    tmp = tempfile.mkdtemp(prefix="hf_compress_cache_")
    previous = os.environ.get(lm.CACHE_ENV)
    os.environ[lm.CACHE_ENV] = tmp
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(lm.CACHE_ENV, None)
        else:
            os.environ[lm.CACHE_ENV] = previous
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_smollm2_bf16_faster_steps_with_checkpointing(tmp_path, record_property):
    """Real SmolLM2-135M in bf16, fp32 gates, checkpointing, shared-weights teacher: two Faster-VTrans steps on
    WikiText-2 valid; the gates (only they) get gradients, and the measured peak matches the plan."""
    from transformers import Trainer, TrainerCallback

    from hf_compress.lm import lm_blocks, load_smollm2, load_wikitext2
    from trainers import VTransTrainer, VTransTrainingArguments

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # short sequences on a busy 2-core machine: per-op overhead (see conftest.py)
    try:
        with _smollm2_cache():
            model, tokenizer = load_smollm2(dtype=torch.bfloat16)
        batch, seq = 1, 64
        data = lm_blocks(tokenizer, load_wikitext2("valid"), block_size=seq, limit=2)
        args = VTransTrainingArguments(
            output_dir=str(tmp_path), variant="faster", target_sparsity=0.3, data_fraction=1.0, max_steps=2,
            per_device_train_batch_size=batch, activation_checkpointing=True, finetune_epochs=0, logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
        )
        seen: dict[str, list] = {"gates": [], "frozen": [], "resident": []}

        class Probe(TrainerCallback):
            def on_train_begin(self, *a, **k):
                seen["resident"].append(resident_tensor_bytes(model, trainer.optimizer))
                monitor.mark("prune_step")

            def on_pre_optimizer_step(self, *a, model=None, **k):
                named = list(model.named_parameters())
                seen["gates"].append(sum(1 for n, p in named if n.startswith("vtrans_gates.groups.")
                                         and p.grad is not None and bool(p.grad.abs().sum() > 0)))
                seen["frozen"].append(sum(1 for n, p in named if not n.startswith("vtrans_gates.") and p.grad is not None))

        trainer = VTransTrainer(model=model, teacher_model=SharedWeightsTeacher(model), args=args, train_dataset=data,
                                callbacks=[Probe()])
        assert next(model.parameters()).dtype == torch.bfloat16
        assert all(p.dtype == torch.float32 for p in get_gates(model).parameters())
        with warnings.catch_warnings(), MemoryMonitor(torch_cpu=True) as monitor:
            warnings.simplefilter("ignore")
            Trainer.train(trainer)  # the pruning phase only (VTransTrainer.train would materialize and save)
        assert model.model.layers[0].gradient_checkpointing  # the trainer enabled it
    finally:
        torch.set_num_threads(previous_threads)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert seen["frozen"] == [0, 0]  # no weight got a gradient
    assert min(seen["gates"]) >= 5  # mu and log_sigma2 of heads, kv_groups, ffn, mha, ffn_layer (+ hidden sigma)
    measured = seen["resident"][0] + monitor.peaks()["prune_step"]["torch_cpu_peak_above_start"]
    plan = estimate_memory(model.config, dtype=torch.bfloat16, batch_size=batch, seq_len=seq, teacher="shared",
                           finetune=False, device="cpu")
    estimate = plan["phases"]["prune_step"]["bytes"]
    record_property("prune_step_measured_bytes", measured)
    record_property("prune_step_estimated_bytes", estimate)
    print(f"SmolLM2 bf16 prune step (batch {batch} x {seq}): measured {measured / 1e6:.0f} MB of torch CPU tensors, "
          f"estimated {estimate / 1e6:.0f} MB")
    assert 0.8 <= measured / estimate <= 1.25
