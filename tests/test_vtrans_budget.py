"""Exact parameter / FLOPs counts, the differentiable expected size, and budget resolution."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from helpers import MODEL_CLASSES, FAMILIES, TASKS, num_parameters, pruned_shape, tiny_batch, tiny_config, tiny_model

from hf_compress.vtrans import (
    attach_gates,
    count_flops,
    count_params,
    dense_shape,
    expected_size,
    layer_params,
    materialize,
    resolve_budget,
)
from hf_compress.vtrans.budget import measure, smallest_shape

SEQ_LEN = 16

def _cases():
    for family in FAMILIES:
        for task in TASKS:
            yield pytest.param(family, task, id=f"{family}-{task}")


# ------------------------------------------------------------------------------------------------
# exact parameter counts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, task", list(_cases()))
def test_count_params_of_dense_shape_equals_native_model(family, task):
    model = tiny_model(family, task)
    assert count_params(dense_shape(model))["total"] == num_parameters(model)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_count_params_matches_base_model_without_pooler(family):
    """The layer / embedding formulas themselves are exact once the pooler is out of the picture."""
    torch.manual_seed(0)
    model = MODEL_CLASSES[family]["base"](tiny_config(family), add_pooling_layer=False)
    counts = count_params(dense_shape(model))
    assert counts["total"] == num_parameters(model)
    assert counts["head"] == 0
    assert counts["embeddings"] == num_parameters(model.embeddings)
    assert counts["layers"] == num_parameters(model.encoder)


@pytest.mark.parametrize("family", FAMILIES)
def test_count_params_breakdown_of_seq_cls(family):
    model = tiny_model(family, "seq-cls")
    counts = count_params(dense_shape(model))
    base = getattr(model, family)
    assert counts["embeddings"] == num_parameters(base.embeddings)
    layers = base.transformer if family == "distilbert" else base.encoder
    assert counts["layers"] == num_parameters(layers) == layer_params(dense_shape(model))
    assert counts["embeddings"] + counts["layers"] + counts["head"] == counts["total"]


# ------------------------------------------------------------------------------------------------
# FLOPs against torch's FLOP counter
# ------------------------------------------------------------------------------------------------
def _attention_flops(shape, seq_len: int) -> int:
    """Scores (Q K^T) and context (P V) matmuls: 2 * 2 * L^2 * heads * head_dim per layer."""
    return sum(4 * seq_len * seq_len * n * shape.head_dim for n in shape.num_heads)


def _cpu_sdpa_is_counted() -> bool:
    from torch.utils.flop_counter import flop_registry

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return op is not None and (op in flop_registry or getattr(op, "default", None) in flop_registry)


def _measure_flops(model, input_ids, math_backend: bool) -> tuple[int, dict]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if math_backend:
            with sdpa_kernel(SDPBackend.MATH):
                model(input_ids=input_ids)
        else:
            model(input_ids=input_ids)
    per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), per_op


def _pruned_model(family: str, task: str):
    model = tiny_model(family, task)
    gates = attach_gates(model)
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[0, 1] = 30.0  # one head of layer 0
        gates.groups["heads"].log_sigma2[1, :2] = 30.0  # two heads of layer 1
        gates.groups["ffn"].log_sigma2[0, :24] = 30.0  # 24 neurons of layer 0
        gates.groups["ffn_layer"].log_sigma2[1] = 30.0  # the whole FFN of layer 1
        gates.groups["mha"].log_sigma2[2] = 30.0  # the whole attention of layer 2
        gates.groups["hidden"].log_sigma2[:8] = 30.0  # 8 hidden dims
    pruned = materialize(model).eval()
    shape = pruned_shape(pruned, dense_shape(model))
    assert shape.hidden_size == 24
    assert shape.num_heads == [3, 2, 0] and shape.intermediate_sizes == [40, 0, 64]
    return pruned, shape


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_count_flops_matches_flop_counter_on_materialized_model(family, task):
    pruned, shape = _pruned_model(family, task)
    input_ids = tiny_batch(family, batch_size=1, seq_len=SEQ_LEN)["input_ids"]
    expected = count_flops(shape, SEQ_LEN)

    # Math SDPA backend: attention runs as two bmm's, so every matmul is visible and the count is exact.
    total, per_op = _measure_flops(pruned, input_ids, math_backend=True)
    print(f"{family}/{task}: count_flops={expected}, FlopCounterMode(math)={total} {per_op}")
    assert total == expected
    assert per_op.get("aten.bmm", 0) == _attention_flops(shape, SEQ_LEN)

    # Default CPU backend: SDPA dispatches to aten._scaled_dot_product_flash_attention_for_cpu, which
    # torch's FlopCounterMode has no formula for (it registers only the CUDA flash / efficient / cudnn
    # kernels), so it reports exactly the projection + FFN + head matmuls, i.e. count_flops minus attention.
    total_default, per_op_default = _measure_flops(pruned, input_ids, math_backend=False)
    if _cpu_sdpa_is_counted():
        assert total_default == expected
    else:
        assert total_default == expected - _attention_flops(shape, SEQ_LEN)
        assert "aten.bmm" not in per_op_default


@pytest.mark.parametrize("family, task", list(_cases()))
def test_count_flops_of_dense_shape_matches_native_model(family, task):
    model = tiny_model(family, task)
    input_ids = tiny_batch(family, batch_size=1, seq_len=SEQ_LEN)["input_ids"]
    total, _ = _measure_flops(model, input_ids, math_backend=True)
    assert total == count_flops(dense_shape(model), SEQ_LEN)


def test_count_flops_by_hand():
    model = tiny_model("bert", "seq-cls")
    shape = dense_shape(model)
    L, h, f, labels = 8, 32, 64, 2
    per_layer = 2 * L * h * (4 * h) + 4 * L * L * h + 2 * 2 * L * h * f
    head = 2 * h * h + 2 * h * labels  # pooler + classifier on the first token
    assert count_flops(shape, L) == 3 * per_layer + head
    removed = replace(shape, num_heads=[4, 0, 4], intermediate_sizes=[64, 64, 0])
    assert count_flops(removed, L) == 3 * per_layer + head - (2 * L * h * 4 * h + 4 * L * L * h) - 4 * L * h * f


# ------------------------------------------------------------------------------------------------
# expected size
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["layer_params", "total_params", "flops"])
@pytest.mark.parametrize("family, task", [("bert", "seq-cls"), ("roberta", "token-cls"), ("distilbert", "base")])
def test_expected_size_saturated_gates_equal_exact_dense(family, task, metric):
    model = tiny_model(family, task)
    gates = attach_gates(model, init_log_sigma2=-30.0)
    dense = dense_shape(model)
    value = expected_size(dense, gates, metric, seq_len=SEQ_LEN)
    assert torch.is_tensor(value)
    exact = measure(dense, metric, SEQ_LEN)
    assert float(value.detach()) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("metric", ["layer_params", "total_params", "flops"])
def test_expected_size_saturated_pruned_gates_equal_exact_pruned(metric):
    model = tiny_model("bert", "seq-cls")
    gates = attach_gates(model, init_log_sigma2=-30.0)
    with torch.no_grad():
        gates.groups["hidden"].log_sigma2[:8] = 30.0
        gates.groups["heads"].log_sigma2[0, :2] = 30.0
        gates.groups["ffn"].log_sigma2[1, :16] = 30.0
        gates.groups["mha"].log_sigma2[2] = 30.0
        gates.groups["ffn_layer"].log_sigma2[0] = 30.0
    dense = dense_shape(model)
    pruned = replace(dense, hidden_size=24, num_heads=[2, 4, 0], intermediate_sizes=[0, 48, 64])
    value = expected_size(dense, gates, metric, seq_len=SEQ_LEN)
    assert float(value.detach()) == pytest.approx(measure(pruned, metric, SEQ_LEN), rel=1e-6)


def test_expected_size_is_differentiable_and_decreases_with_log_sigma2():
    model = tiny_model("bert", "seq-cls")
    gates = attach_gates(model, init_log_sigma2=0.0)  # log_alpha = 0: keep probability 0.5, steep gradient
    dense = dense_shape(model)
    value = expected_size(dense, gates, "total_params")
    assert 0 < float(value.detach()) < count_params(dense)["total"]
    value.backward()
    for name, gate in gates.groups.items():
        assert gate.log_sigma2.grad is not None, name
        assert torch.all(gate.log_sigma2.grad < 0), name


# ------------------------------------------------------------------------------------------------
# budget resolution
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def dense():
    return dense_shape(tiny_model("bert", "seq-cls"))


def test_resolve_budget_targets(dense):
    b = resolve_budget(dense, target_sparsity=0.25)
    assert b.metric == "layer_params" and b.dense == layer_params(dense)
    assert b.target == pytest.approx(0.75 * layer_params(dense))
    assert b.target_fraction == pytest.approx(0.75)
    b = resolve_budget(dense, target_params=20_000)
    assert (b.metric, b.target, b.dense) == ("total_params", 20_000.0, count_params(dense)["total"])
    b = resolve_budget(dense, target_flops=100_000, seq_len=SEQ_LEN)
    assert (b.metric, b.target, b.dense, b.seq_len) == ("flops", 100_000.0, count_flops(dense, SEQ_LEN), SEQ_LEN)


def test_resolve_budget_no_target(dense):
    with pytest.raises(ValueError, match="exactly one budget") as err:
        resolve_budget(dense)
    assert "none" in str(err.value)


def test_resolve_budget_two_targets(dense):
    with pytest.raises(ValueError, match="exactly one budget") as err:
        resolve_budget(dense, target_sparsity=0.5, target_params=20_000)
    assert "target_params" in str(err.value) and "target_sparsity" in str(err.value)


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.2, 1.5])
def test_resolve_budget_sparsity_outside_open_interval(dense, sparsity):
    with pytest.raises(ValueError, match="strictly between 0 and 1") as err:
        resolve_budget(dense, target_sparsity=sparsity)
    assert str(sparsity) in str(err.value)


@pytest.mark.parametrize("excess", [0, 1, 10_000])
def test_resolve_budget_params_not_below_dense(dense, excess):
    total = count_params(dense)["total"]
    target = total + excess
    with pytest.raises(ValueError, match="not below the dense") as err:
        resolve_budget(dense, target_params=target)
    message = str(err.value)
    assert f"{target:,}" in message and f"{total:,}" in message


def test_resolve_budget_flops_above_dense(dense):
    flops = count_flops(dense, SEQ_LEN)
    with pytest.raises(ValueError, match="not below the dense") as err:
        resolve_budget(dense, target_flops=2 * flops, seq_len=SEQ_LEN)
    assert f"{2 * flops:,}" in str(err.value) and f"{flops:,}" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, metric",
    [
        (dict(target_params=150), "total_params"),
        (dict(target_flops=3), "flops"),
        (dict(target_sparsity=0.9999), "layer_params"),
    ],
)
def test_resolve_budget_below_smallest_expressible(dense, kwargs, metric):
    smallest = measure(smallest_shape(dense, 1), metric, SEQ_LEN)
    with pytest.raises(ValueError, match="below the smallest model") as err:
        resolve_budget(dense, seq_len=SEQ_LEN, **kwargs)
    message = str(err.value)
    assert f"{smallest:,}" in message
    assert metric in message
    if "target_params" in kwargs:
        assert "150" in message
    # just above the smallest model is accepted
    if metric != "layer_params":
        key = next(iter(kwargs))
        assert resolve_budget(dense, seq_len=SEQ_LEN, **{key: smallest + 1}).target == smallest + 1


def test_smallest_shape_figures(dense):
    """The 'smallest expressible model': no sub-layers, hidden size 1, embeddings and norms remain."""
    small = smallest_shape(dense, 1)
    assert small.num_heads == [0, 0, 0] and small.intermediate_sizes == [0, 0, 0] and small.hidden_size == 1
    assert layer_params(small) == 3 * 4  # two LayerNorms (weight + bias) per layer, hidden 1
    rows = dense.vocab_size + dense.max_position_embeddings + dense.type_vocab_size
    assert count_params(small)["total"] == rows + 2 + 12 + (1 + 1) + (2 + 2)
