"""Gates -> physically smaller model: equivalence, exact sizes, budgets, save/load, errors, Taylor baseline."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import (
    FAMILIES,
    TASKS,
    model_output,
    num_parameters,
    pruned_shape,
    randomize_biases_and_norms_,
    tiny_batch,
    tiny_model,
)
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForSequenceClassification,
)

import hf_compress  # noqa: F401  (registers the Auto classes)
from hf_compress.vtrans import (
    PrunedEncoderConfig,
    PrunedEncoderForSequenceClassification,
    PrunedEncoderForTokenClassification,
    PrunedEncoderModel,
    UnsupportedModelError,
    attach_gates,
    count_flops,
    count_params,
    dense_shape,
    detach_gates,
    get_gates,
    materialize,
    resolve_budget,
    supported_model_types,
)
from hf_compress.vtrans.baselines import taylor_importance, taylor_prune
from hf_compress.vtrans.budget import measure
from hf_compress.vtrans.modeling_pruned_encoder import PrunedCheckpointError

CASES = [pytest.param(f, t, id=f"{f}-{t}") for f in FAMILIES for t in TASKS]
AUTO_CLASS = {"seq-cls": AutoModelForSequenceClassification, "token-cls": AutoModelForTokenClassification, "base": AutoModel}
PRUNED_CLASS = {
    "seq-cls": PrunedEncoderForSequenceClassification,
    "token-cls": PrunedEncoderForTokenClassification,
    "base": PrunedEncoderModel,
}
# Larger than BERT's 0.02 so logits are O(1) and an absolute 1e-5 tolerance means something.
INIT_RANGE = 0.2
SEQ_LEN = 16


def _model(family: str, task: str, init_range: float = INIT_RANGE, bias_std: float = 0.1):
    """A tiny model with random biases and LayerNorms too (transformers zero-initialises them)."""
    return randomize_biases_and_norms_(tiny_model(family, task, initializer_range=init_range), std=bias_std)


def _random_mu(gates, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gates.groups.values():
            gate.mu.copy_(0.5 + torch.rand(gate.mu.shape, generator=gen))  # in [0.5, 1.5]


# scenario -> (what to prune, expected heads per layer, expected FFN widths per layer)
SCENARIOS = {
    # layer 0: 1 head, whole FFN via its sub-layer gate; layer 1: 2 heads, every FFN neuron (sub-layer goes
    # through its units); layer 2: whole attention via its sub-layer gate, 15 neurons
    "A": (
        [("heads", (0, 1)), ("ffn_layer", 0), ("heads", (1, [0, 2])), ("ffn", (1, slice(None))),
         ("mha", 2), ("ffn", (2, slice(5, 20)))],
        [3, 2, 0],
        [0, 0, 49],
    ),
    # layer 0: every head (attention goes through its units), 10 neurons; layer 1: whole attention and whole
    # FFN via sub-layer gates; layer 2: 3 heads, 1 neuron
    "B": (
        [("heads", (0, slice(None))), ("ffn", (0, slice(0, 10))), ("mha", 1), ("ffn_layer", 1),
         ("heads", (2, [0, 1, 3])), ("ffn", (2, 63))],
        [0, 0, 1],
        [54, 0, 63],
    ),
}


def _prune(gates, spec, hidden=()) -> None:
    with torch.no_grad():
        for group, index in spec:
            gates.groups[group].log_sigma2[index] = 30.0
        if len(hidden):
            gates.groups["hidden"].log_sigma2[list(hidden)] = 30.0


def _inputs(family: str, pad_last: int) -> dict:
    batch = tiny_batch(family, batch_size=2, seq_len=12, pad_last=pad_last, seed=3)
    if family == "bert":  # exercise token-type embeddings too
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        batch["token_type_ids"][:, 6:] = 1
    return batch


# ------------------------------------------------------------------------------------------------
# masked model == materialized model
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("family, task", CASES)
def test_materialized_equals_masked_model(family, task, scenario):
    spec, heads, widths = SCENARIOS[scenario]
    model = _model(family, task)
    gates = attach_gates(model)
    _random_mu(gates)
    _prune(gates, spec)
    model.eval()
    pruned = materialize(model).eval()
    assert isinstance(pruned, PRUNED_CLASS[task])
    assert pruned.config.hidden_size == 32
    assert pruned.config.num_attention_heads_per_layer == heads
    assert pruned.config.intermediate_size_per_layer == widths

    for pad_last in (0, 5):
        inputs = _inputs(family, pad_last)
        with torch.no_grad():
            masked = model_output(model, **inputs)
            physical = model_output(pruned, **inputs)
        assert physical.shape == masked.shape
        assert masked.abs().max() > 0.1  # outputs are O(1), so the tolerance below is meaningful
        torch.testing.assert_close(physical, masked, atol=1e-5, rtol=1e-5)

    # the gates really changed the function (the comparison above is not dense-vs-dense)
    inputs = _inputs(family, 0)
    with torch.no_grad():
        gated = model_output(model, **inputs)
        detach_gates(model)
        dense = model_output(model, **inputs)
    assert (gated - dense).abs().max() > 1e-3

    # exact size of what was built
    shape = pruned_shape(pruned, dense_shape(model))
    assert num_parameters(pruned) == count_params(shape)["total"]
    assert pruned.config.pruning_report["params_pruned"]["total"] == num_parameters(pruned)


@pytest.mark.parametrize("family, task", [("bert", "seq-cls"), ("distilbert", "token-cls")])
def test_materialized_equals_masked_model_with_a_subset_of_gate_groups(family, task):
    """Only head and neuron gates: a sub-layer whose units are all pruned is still removed in both models."""
    model = _model(family, task)
    gates = attach_gates(model, groups=("heads", "ffn"))
    assert set(gates.groups) == {"heads", "ffn"}
    _random_mu(gates)
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[1] = 30.0
        gates.groups["ffn"].log_sigma2[0] = 30.0
        gates.groups["ffn"].log_sigma2[2, :30] = 30.0
    model.eval()
    pruned = materialize(model).eval()
    assert pruned.config.num_attention_heads_per_layer == [4, 0, 4]
    assert pruned.config.intermediate_size_per_layer == [0, 64, 34]
    inputs = _inputs(family, pad_last=3)
    with torch.no_grad():
        torch.testing.assert_close(model_output(pruned, **inputs), model_output(model, **inputs), atol=1e-5, rtol=1e-5)


def test_pruned_config_validates_per_layer_sizes():
    with pytest.raises(ValueError, match="one entry per layer"):
        PrunedEncoderConfig(num_hidden_layers=3, num_attention_heads_per_layer=[4, 4], intermediate_size_per_layer=[8] * 3)
    with pytest.raises(ValueError, match="hidden_size=0"):
        PrunedEncoderConfig(hidden_size=0, num_hidden_layers=1, num_attention_heads_per_layer=[1],
                            intermediate_size_per_layer=[1])
    with pytest.raises(ValueError, match="non-negative"):
        PrunedEncoderConfig(num_hidden_layers=1, num_attention_heads_per_layer=[-1], intermediate_size_per_layer=[1])
    with pytest.raises(ValueError, match="position_style"):
        PrunedEncoderConfig(position_style="rotary")
    config = PrunedEncoderConfig(num_hidden_layers=2, num_attention_heads_per_layer=[0, 3], intermediate_size_per_layer=[5, 0])
    assert config.num_attention_heads == 3


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_materialized_base_model_keeps_pooler_output(family):
    model = _model(family, "base")
    attach_gates(model)
    pruned = materialize(model.eval()).eval()
    inputs = _inputs(family, pad_last=0)
    with torch.no_grad():
        torch.testing.assert_close(pruned(**inputs).pooler_output, model(**inputs).pooler_output)
    assert num_parameters(pruned) == count_params(dense_shape(model))["total"]


@pytest.mark.parametrize("family, task", CASES)
def test_padded_positions_do_not_leak(family, task):
    """Changing the ids under attention_mask=0 leaves the materialized model's unpadded outputs unchanged."""
    model = _model(family, task)
    gates = attach_gates(model)
    _random_mu(gates)
    _prune(gates, SCENARIOS["A"][0])
    pruned = materialize(model.eval()).eval()
    inputs = _inputs(family, pad_last=5)
    other = {k: v.clone() for k, v in inputs.items()}
    other["input_ids"][-1, -5:] = 50  # attended to by nobody
    with torch.no_grad():
        a, b = model_output(pruned, **inputs), model_output(pruned, **other)
    if a.dim() == 3:
        a, b = a[:, :7], b[:, :7]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family, task", CASES)
def test_hidden_pruning_gap_is_bounded(family, task):
    """With hidden dims pruned, a LayerNorm over the kept dims normalises with their own statistics, so the
    materialized model only approximates the masked one (documented in materialize.py). 3 of 32 dims pruned,
    BERT's default initialisation: the gap is finite and below 15% of the output scale."""
    model = _model(family, task, init_range=0.02, bias_std=0.02)  # scales like real checkpoints
    gates = attach_gates(model)
    _random_mu(gates)
    _prune(gates, SCENARIOS["A"][0], hidden=(3, 7, 20))
    model.eval()
    pruned = materialize(model).eval()
    kept = pruned.config.pruning_report["hidden_index"]
    assert pruned.config.hidden_size == 29 and len(kept) == 29
    assert not {3, 7, 20} & set(kept) and kept == sorted(kept)
    inputs = _inputs(family, pad_last=4)
    with torch.no_grad():
        masked = model_output(model, **inputs)
        physical = model_output(pruned, **inputs)
    if task == "base":  # the base model's output lives in the (pruned) hidden space
        assert physical.shape[-1] == 29
        masked = masked[..., kept]
    assert physical.shape == masked.shape
    gap = (physical - masked).abs().max().item()
    scale = masked.abs().max().item()
    print(f"hidden-pruning gap {family}/{task}: max |diff| = {gap:.3g}, max |masked| = {scale:.3g}, "
          f"relative = {gap / scale:.3g}")
    assert np.isfinite(gap) and torch.isfinite(physical).all()
    assert gap / scale < 0.15
    assert num_parameters(pruned) == count_params(pruned_shape(pruned, dense_shape(model)))["total"]


# ------------------------------------------------------------------------------------------------
# budgets
# ------------------------------------------------------------------------------------------------
def _budget_kwargs(metric: str, dense) -> dict:
    if metric == "sparsity":
        return dict(target_sparsity=0.5)
    if metric == "params":
        return dict(target_params=int(0.6 * count_params(dense)["total"]))
    return dict(target_flops=0.45 * count_flops(dense, SEQ_LEN))


@pytest.mark.parametrize("round_to", [None, 8])
@pytest.mark.parametrize("metric", ["sparsity", "params", "flops"])
@pytest.mark.parametrize("family, task", [("bert", "seq-cls"), ("roberta", "base"), ("distilbert", "token-cls")])
def test_materialize_meets_budget(family, task, metric, round_to):
    model = tiny_model(family, task)
    gates = attach_gates(model)
    _random_mu(gates)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # every unit kept by the gates, with distinct scores
        for gate in gates.groups.values():
            gate.log_sigma2.copy_(torch.empty(gate.shape).uniform_(-12.0, -4.0, generator=gen))
    dense = dense_shape(model)
    budget = resolve_budget(dense, seq_len=SEQ_LEN, **_budget_kwargs(metric, dense))
    with pytest.warns(UserWarning, match="above the budget"):
        pruned = materialize(model, budget=budget, round_to=round_to, fill_to_budget=True)
    shape = pruned_shape(pruned, dense)
    realised = measure(shape, budget.metric, SEQ_LEN)
    report = pruned.config.pruning_report["budget"]
    print(f"{family}/{task} {metric} round_to={round_to}: target {budget.target:.0f} realised {realised} "
          f"hidden {shape.hidden_size} heads {shape.num_heads} ffn {shape.intermediate_sizes}")
    assert report["realised"] == realised and report["target"] == budget.target
    assert realised <= budget.target
    assert realised >= 0.9 * budget.target
    assert num_parameters(pruned) == count_params(shape)["total"]
    if budget.metric == "total_params":
        assert num_parameters(pruned) <= budget.target
    if round_to:
        assert shape.hidden_size % round_to == 0 and shape.hidden_size > 0
        assert all(w % round_to == 0 for w in shape.intermediate_sizes)
    assert shape.hidden_size < 32 or any(w < 64 for w in shape.intermediate_sizes) or any(n < 4 for n in shape.num_heads)
    with torch.no_grad():
        out = model_output(pruned, **tiny_batch(family))
    assert torch.isfinite(out).all()


def test_round_to_rounds_the_gates_own_decisions():
    """Without a budget, the gates' kept counts are rounded to the nearest multiple of round_to, keeping
    the highest-scoring units."""
    model = _model("bert", "seq-cls")
    gates = attach_gates(model)
    _random_mu(gates)
    with torch.no_grad():
        gates.groups["hidden"].log_sigma2[:5] = 30.0  # 27 kept -> 24
        gates.groups["hidden"].log_sigma2[5:8] = -5.0  # the weakest of the kept dims
        gates.groups["hidden"].log_sigma2[8:] = -20.0
        gates.groups["ffn"].log_sigma2[0, :13] = 30.0  # 51 kept -> 48
        gates.groups["ffn"].log_sigma2[1, :3] = 30.0  # 61 kept -> 64 (pruned neurons re-admitted)
        gates.groups["ffn"].log_sigma2[2, :59] = 30.0  # 5 kept -> 8
    pruned = materialize(model.eval(), round_to=8)
    shape = pruned_shape(pruned, dense_shape(model))
    assert shape.hidden_size == 24
    assert shape.intermediate_sizes == [48, 64, 8]
    assert pruned.config.pruning_report["hidden_index"] == list(range(8, 32))
    assert num_parameters(pruned) == count_params(shape)["total"]
    with torch.no_grad():
        assert torch.isfinite(model_output(pruned, **tiny_batch("bert"))).all()


def _over_pruned_gates(model):
    """Gates that pruned far more than a 30%-sparsity budget asks: 3 of 4 heads and 3/4 of every FFN."""
    gates = attach_gates(model)
    _random_mu(gates)
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[:, 1:] = 30.0
        gates.groups["ffn"].log_sigma2[:, 16:] = 30.0
    return gates


def test_fill_to_budget_readmits_pruned_units():
    model = tiny_model("bert", "seq-cls")
    _over_pruned_gates(model)
    dense = dense_shape(model)
    budget = resolve_budget(dense, target_sparsity=0.3)
    with pytest.warns(UserWarning, match="re-admitted"):
        filled = materialize(model, budget=budget, fill_to_budget=True)
    realised = measure(pruned_shape(filled, dense), budget.metric)
    assert 0.9 * budget.target <= realised <= budget.target

    with pytest.warns(UserWarning, match="smaller than asked"):
        small = materialize(model, budget=budget, fill_to_budget=False)
    shape = pruned_shape(small, dense)
    assert shape.num_heads == [1, 1, 1] and shape.intermediate_sizes == [16, 16, 16]
    assert measure(shape, budget.metric) < 0.9 * budget.target


# ------------------------------------------------------------------------------------------------
# save_pretrained -> Auto*.from_pretrained
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, task", CASES)
def test_save_and_auto_load_round_trip(family, task, tmp_path):
    model = _model(family, task)
    if task != "base":
        labels = ["neg", "pos"] if task == "seq-cls" else ["O", "B", "I"]
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {label: i for i, label in enumerate(labels)}
    gates = attach_gates(model)
    _random_mu(gates)
    _prune(gates, SCENARIOS["B"][0], hidden=(0, 9))
    budget = resolve_budget(dense_shape(model), target_sparsity=0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned = materialize(model, budget=budget).eval()
    pruned.save_pretrained(tmp_path)

    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith(".bin")]
    with open(tmp_path / "config.json") as handle:
        saved = json.load(handle)
    assert saved["model_type"] == "vtrans_encoder"
    assert saved["architectures"] == [PRUNED_CLASS[task].__name__]

    assert isinstance(AutoConfig.from_pretrained(tmp_path), PrunedEncoderConfig)
    loaded = AUTO_CLASS[task].from_pretrained(tmp_path)
    assert type(loaded) is PRUNED_CLASS[task]
    assert not loaded.training
    assert loaded.config.num_attention_heads_per_layer == pruned.config.num_attention_heads_per_layer
    assert loaded.config.intermediate_size_per_layer == pruned.config.intermediate_size_per_layer
    assert loaded.config.hidden_size == pruned.config.hidden_size == 30
    assert loaded.config.pruning_report["budget"] == pruned.config.pruning_report["budget"]
    if task != "base":
        assert loaded.config.id2label == pruned.config.id2label == model.config.id2label
    for a, b in zip(pruned.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    inputs = _inputs(family, pad_last=3)
    with torch.no_grad():
        assert torch.equal(model_output(pruned, **inputs), model_output(loaded, **inputs))


def test_base_model_loads_from_task_checkpoint(tmp_path):
    model = _model("roberta", "seq-cls")
    gates = attach_gates(model)
    _random_mu(gates)
    _prune(gates, SCENARIOS["A"][0])
    pruned = materialize(model.eval()).eval()
    pruned.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is PrunedEncoderModel
    inputs = _inputs("roberta", pad_last=2)
    with torch.no_grad():
        torch.testing.assert_close(base(**inputs).last_hidden_state, pruned.model(**inputs).last_hidden_state)


# ------------------------------------------------------------------------------------------------
# corrupt checkpoints
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def saved_pruned(tmp_path):
    model = tiny_model("bert", "token-cls")
    gates = attach_gates(model)
    _prune(gates, SCENARIOS["A"][0], hidden=(5,))
    pruned = materialize(model.eval())
    path = tmp_path / "pruned"
    pruned.save_pretrained(path)
    return path


def _rewrite(path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("loader", [AutoModelForTokenClassification, PrunedEncoderForTokenClassification])
def test_missing_encoder_tensor_raises(saved_pruned, loader):
    _rewrite(saved_pruned, lambda t: t.pop("model.layers.0.attention.q_proj.weight"))
    with pytest.raises(PrunedCheckpointError, match=r"model\.layers\.0\.attention\.q_proj\.weight"):
        loader.from_pretrained(saved_pruned)


def test_misshaped_tensor_raises(saved_pruned):
    def edit(tensors):
        tensors["model.layers.2.mlp.up_proj.weight"] = torch.zeros(8, 31)

    _rewrite(saved_pruned, edit)
    with pytest.raises(PrunedCheckpointError, match="shape"):
        AutoModelForTokenClassification.from_pretrained(saved_pruned)


def test_misshaped_tensor_raises_even_when_mismatches_are_ignored(saved_pruned):
    def edit(tensors):
        tensors["model.layers.2.mlp.up_proj.weight"] = torch.zeros(8, 31)

    _rewrite(saved_pruned, edit)
    with pytest.raises(PrunedCheckpointError, match="up_proj"):
        AutoModelForTokenClassification.from_pretrained(saved_pruned, ignore_mismatched_sizes=True)


def test_config_of_another_model_raises(saved_pruned):
    with open(saved_pruned / "config.json") as handle:
        config = json.load(handle)
    config["intermediate_size_per_layer"] = [w + 8 if w else 0 for w in config["intermediate_size_per_layer"]]
    with open(saved_pruned / "config.json", "w") as handle:
        json.dump(config, handle)
    with pytest.raises(PrunedCheckpointError):
        AutoModelForTokenClassification.from_pretrained(saved_pruned)


def test_truncated_safetensors_raises(saved_pruned):
    target = saved_pruned / "model.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(PrunedCheckpointError, match="model.safetensors cannot be read"):
        AutoModelForTokenClassification.from_pretrained(saved_pruned)


# ------------------------------------------------------------------------------------------------
# unsupported / already pruned / misuse
# ------------------------------------------------------------------------------------------------
def test_unsupported_model_gets_list_of_supported_types():
    from transformers import OPTConfig, OPTModel

    torch.manual_seed(0)
    opt = OPTModel(OPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                             word_embed_proj_dim=32, max_position_embeddings=32))
    for call in (attach_gates, dense_shape, materialize):
        with pytest.raises(UnsupportedModelError) as err:
            call(opt)
        message = str(err.value)
        assert "'opt'" in message
        for model_type in supported_model_types():
            assert model_type in message
        assert "config.rms_norm_eps" in message and "<base>.layers" in message  # what the layout detection looked for
        assert {"bert", "roberta", "distilbert", "gpt2", "llama"} <= set(supported_model_types())
    assert get_gates(opt) is None
    assert isinstance(err.value, ValueError)


def test_unmapped_task_head_is_unsupported():
    from transformers import BertForMaskedLM

    from helpers import tiny_config

    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny_config("bert"))
    with pytest.raises(UnsupportedModelError, match="ForSequenceClassification"):
        attach_gates(mlm)


def test_pruning_an_already_pruned_model_raises():
    model = tiny_model("distilbert", "seq-cls")
    _prune(attach_gates(model), SCENARIOS["A"][0])
    pruned = materialize(model.eval())
    for call in (attach_gates, materialize, dense_shape):
        with pytest.raises(UnsupportedModelError, match="already pruned"):
            call(pruned)


def test_attach_twice_and_materialize_without_gates_raise():
    model = tiny_model("bert", "base")
    attach_gates(model)
    with pytest.raises(ValueError, match="already has VTrans gates"):
        attach_gates(model)
    detach_gates(model)
    assert get_gates(model) is None
    with pytest.raises(ValueError, match="needs a model with VTrans gates"):
        materialize(model)


def test_detach_gates_restores_dense_function():
    model = _model("roberta", "token-cls")
    inputs = _inputs("roberta", pad_last=2)
    with torch.no_grad():
        before = model_output(model, **inputs)
        gates = attach_gates(model)
        _prune(gates, SCENARIOS["A"][0])
        during = model_output(model, **inputs)
        assert detach_gates(model) is gates
        after = model_output(model, **inputs)
    assert (during - before).abs().max() > 1e-3
    assert torch.equal(before, after)
    assert "vtrans_gates" not in dict(model.named_modules())


# ------------------------------------------------------------------------------------------------
# Taylor baseline
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, task", [("bert", "seq-cls"), ("distilbert", "token-cls")])
def test_taylor_importance_and_prune_meet_budget(family, task):
    model = tiny_model(family, task, train=True)
    batches = [tiny_batch(family, batch_size=4, seq_len=10, pad_last=2, seed=s, task=task) for s in range(3)]
    model.eval()
    with torch.no_grad():
        before = model_output(model, **batches[0])
    model.train()
    importance = taylor_importance(model, batches)
    assert model.training  # mode restored
    assert get_gates(model) is None  # gates and hooks removed
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model_output(model, **batches[0]), before)

    expected_shapes = {"hidden": (32,), "heads": (3, 4), "ffn": (3, 64), "mha": (3,), "ffn_layer": (3,)}
    assert {g: s.shape for g, s in importance.items()} == expected_shapes
    for group, scores in importance.items():
        assert np.all(np.isfinite(scores)) and np.all(scores >= 0), group
        assert scores.sum() > 0, group

    dense = dense_shape(model)
    budget = resolve_budget(dense, target_params=int(0.7 * count_params(dense)["total"]))
    pruned = taylor_prune(model, importance, budget, round_to=8)
    shape = pruned_shape(pruned, dense)
    realised = count_params(shape)["total"]
    assert num_parameters(pruned) == realised
    assert 0.9 * budget.target <= realised <= budget.target
    assert shape.hidden_size % 8 == 0 and all(w % 8 == 0 for w in shape.intermediate_sizes)
    report = pruned.config.pruning_report
    assert report["method"] == "taylor" and report["budget"]["realised"] == realised
    with torch.no_grad():
        assert torch.isfinite(model_output(pruned.eval(), **batches[0])).all()


def test_taylor_prune_keeps_the_most_important_units():
    model = tiny_model("bert", "seq-cls")
    dense = dense_shape(model)

    def scores(**low):
        importance = {
            "hidden": np.ones(32), "heads": np.ones((3, 4)), "ffn": np.ones((3, 64)),
            "mha": np.full(3, 100.0), "ffn_layer": np.full(3, 100.0),
        }
        for group, index in low.items():
            importance[group][index] = 1e-6
        return importance

    # the least important head and 8 least important neurons go, nothing else
    target = count_params(replace(dense, num_heads=[4, 3, 4], intermediate_sizes=[56, 64, 64]))["total"]
    budget = resolve_budget(dense, target_params=target)
    pruned = taylor_prune(model, scores(heads=(1, 2), ffn=(0, slice(8, 16))), budget)
    shape = pruned_shape(pruned, dense)
    assert (shape.hidden_size, shape.num_heads, shape.intermediate_sizes) == (32, [4, 3, 4], [56, 64, 64])
    with torch.no_grad():  # and the slices are the right ones: layer 0's FFN without neurons 8..15
        up = model.bert.encoder.layer[0].intermediate.dense.weight
        keep = [i for i in range(64) if not 8 <= i < 16]
        assert torch.equal(pruned.model.layers[0].mlp.up_proj.weight, up[keep])

    # the two least important hidden dims go
    budget = resolve_budget(dense, target_params=count_params(replace(dense, hidden_size=30))["total"])
    pruned = taylor_prune(model, scores(hidden=[5, 17]), budget)
    assert pruned.config.pruning_report["hidden_index"] == [i for i in range(32) if i not in (5, 17)]


def test_report_records_kept_head_indices():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=64)).eval()
    gates = attach_gates(model)
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[0, [0, 2]] = 5.0
    report = materialize(model).config.pruning_report
    assert report["head_index"] == [[1, 3], [0, 1, 2, 3]]
    assert [len(h) for h in report["head_index"]] == report["num_heads"]
