"""DCA-NAS search: supernet and its speed-ups, expected vs exact cost, the budget constraint, latency table,
look-up graph, the trainer and the ``hf-compress nas`` CLI. Tiny: NB201 C<=8, N=1, 16x16 digits."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import hf_compress.nas  # noqa: F401  (registers the Auto classes)
from hf_compress.nas.constraint import BudgetConstraint, CostModel, LookUpGraph, final_network_config
from hf_compress.nas.cost import count_params, network_cost
from hf_compress.nas.latency import (
    LatencyTable,
    LatencyTableDeviceWarning,
    estimate_latency,
    measure_latency_table,
)
from hf_compress.nas.modeling_dcanas import DCANASForImageClassification
from hf_compress.nas.search import load_digits_dataset
from hf_compress.nas.spaces import DARTS_V2, NB201_LARGEST, DartsGenotype, NB201Genotype, get_space
from hf_compress.nas.supernet import (
    DCANASSupernet,
    alphas_for_genotype,
    count_supernet_params,
    genotype_from_probs,
    supernet_macs,
)
from trainers.dcanas_config import DCANASTrainingArguments
from trainers.dcanas_trainer import DCANASTrainer
from nas_tiny import NB201_EXAMPLE

TINY = {
    "nb201": dict(search_space="nb201", init_channels=8, cells_per_stage=1, image_size=16, num_classes=10),
    "darts": dict(search_space="darts", init_channels=4, num_layers=3, image_size=16, num_classes=10),
}


def tiny_supernet(space: str, **kwargs) -> DCANASSupernet:
    torch.manual_seed(0)
    return DCANASSupernet(**{**TINY[space], **kwargs})


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset(image_size=16, limit=384, seed=0)


def tiny_args(tmp_path, **overrides) -> DCANASTrainingArguments:
    kwargs = dict(
        output_dir=str(tmp_path / "search"), search_space="nb201", search_init_channels=8, search_cells_per_stage=1,
        image_size=16, final_image_size=32, budget_ratio=0.3, max_steps=6, per_device_train_batch_size=32,
        learning_rate=0.05, optim="sgd", optim_args="momentum=0.9", lr_scheduler_type="constant",
        logging_steps=3, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
        dataloader_pin_memory=False, seed=0, arch_learning_rate=0.05, channel_bottleneck=2,
    )
    kwargs.update(overrides)
    return DCANASTrainingArguments(**kwargs)


def same_darts_cells(a: DartsGenotype, b: DartsGenotype) -> bool:
    def nodes(pairs):
        return [sorted(pairs[k:k + 2], key=lambda p: (p[1], p[0])) for k in range(0, len(pairs), 2)]

    return nodes(a.normal) == nodes(b.normal) and nodes(a.reduce) == nodes(b.reduce)


# ---------------------------------------------------------------------------------------------------------
# supernet
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("bottleneck,sharing,derived", [(1, False, False), (2, False, False), (1, True, False),
                                                        (1, False, True), (2, True, True)])
def test_supernet_forward_shapes_and_gradients(space, bottleneck, sharing, derived):
    model = tiny_supernet(space, channel_bottleneck=bottleneck, weight_sharing=sharing, derived_cells=derived)
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 3, 9])
    out = model(x, labels=y)
    assert out.logits.shape == (3, 10)
    out.loss.backward()
    for alpha in model.arch_parameters():
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    assert {id(p) for p in model.arch_parameters()}.isdisjoint({id(p) for p in model.weight_parameters()})
    expected_types = ("normal",) if space == "nb201" else ("normal", "reduce")
    assert tuple(model.alphas) == expected_types
    assert model.alphas["normal"].shape == (6, 5) if space == "nb201" else (14, 8)
    # alpha detached for the weight step
    model.zero_grad(set_to_none=True)
    model(x, labels=y, arch_grad=False).loss.backward()
    assert all(alpha.grad is None for alpha in model.arch_parameters())


def test_supernet_rejects_wrong_image_size():
    model = tiny_supernet("nb201")
    with pytest.raises(ValueError, match=r"built for \[batch, 3, 16, 16\]"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="channel_bottleneck"):
        DCANASSupernet(search_space="nb201", init_channels=4, channel_bottleneck=4)


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_weight_sharing_shares_modules(space):
    shared = tiny_supernet(space, weight_sharing=True)
    separate = tiny_supernet(space, weight_sharing=False)
    cell = next(c for c, kind in zip(shared.cells, shared.cell_kinds) if kind == "normal")
    edges = cell.space.edges
    by_source: dict[int, list[int]] = {}
    for e, (i, _) in enumerate(edges):
        by_source.setdefault(i, []).append(e)
    multi = [es for es in by_source.values() if len(es) > 1]
    assert multi
    conv = cell.space.ops.index("nor_conv_3x3" if space == "nb201" else "sep_conv_3x3")
    for es in multi:
        assert all(cell._op(e, conv) is cell._op(es[0], conv) for e in es)
    other = next(c for c, kind in zip(separate.cells, separate.cell_kinds) if kind == "normal")
    assert other._op(multi[0][0], conv) is not other._op(multi[0][1], conv)
    assert count_supernet_params(shared) < count_supernet_params(separate)
    # the state dict has no aliased tensors (safetensors refuses shared storage)
    ptrs = [t.data_ptr() for t in shared.state_dict().values() if t.numel()]
    assert len(ptrs) == len(set(ptrs))


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_channel_bottleneck_and_derived_cells_cut_params_and_macs(space):
    plain = tiny_supernet(space)
    narrow = tiny_supernet(space, channel_bottleneck=2)
    assert count_supernet_params(narrow) < count_supernet_params(plain)
    assert supernet_macs(narrow) < supernet_macs(plain)
    derived = tiny_supernet(space, derived_cells=True)
    assert count_supernet_params(derived) == count_supernet_params(plain)  # same modules, fewer of them run
    assert supernet_macs(derived) < supernet_macs(plain)
    assert sum(derived.cell_mixed) == len(derived.cell_types)


@pytest.mark.parametrize("derived", [False, True])
def test_op_scope_bottleneck_keeps_skip_an_identity_path(derived):
    """bottleneck_scope='ops' shrinks only the convolutions: a cell whose one path is the input-to-output skip
    returns its input unchanged, as in the derived network. With the cell-wide bottleneck that skip passes two
    1x1 convs."""
    space = get_space("nb201")
    none, skip, conv = space.op_index("none"), space.op_index("skip_connect"), space.op_index("nor_conv_3x3")
    chosen = [none] * space.num_edges
    chosen[space.edges.index((0, 3))] = skip
    x = torch.randn(2, 8, 16, 16)
    for scope, identity in (("ops", True), ("cell", False)):
        model = tiny_supernet("nb201", channel_bottleneck=2, bottleneck_scope=scope, derived_cells=derived)
        cell = model.cells[0]
        assert torch.equal(cell((x,), torch.softmax(model.alphas["normal"], -1), chosen), x) is identity
    narrow = tiny_supernet("nb201", channel_bottleneck=2, bottleneck_scope="ops", derived_cells=derived,
                           weight_sharing=True)
    cell = narrow.cells[0]
    assert cell._op(0, conv).conv.in_channels == 4 and torch.equal(cell._op(0, skip)(x), x)  # skip runs full width
    assert [cell.full_width[space.op_index(name)] for name in ("skip_connect", "avg_pool_3x3", "nor_conv_1x1")] == [
        True, True, False]
    # cost between the cell-wide bottleneck and none: three shrinks and three expands per cell instead of one each
    wide = tiny_supernet("nb201", derived_cells=derived, weight_sharing=True)
    cell_scope = tiny_supernet("nb201", channel_bottleneck=2, derived_cells=derived, weight_sharing=True)
    assert supernet_macs(cell_scope) < supernet_macs(narrow) < supernet_macs(wide)
    out = narrow(torch.randn(3, 3, 16, 16), labels=torch.tensor([0, 3, 9]))
    out.loss.backward()
    assert narrow.alphas["normal"].grad.abs().sum() > 0
    assert all(p.grad is not None for p in cell.source_shrinks.parameters())
    with pytest.raises(ValueError, match="bottleneck_scope='ops' is implemented for the NAS-Bench-201"):
        tiny_supernet("darts", channel_bottleneck=2, bottleneck_scope="ops")
    with pytest.raises(ValueError, match="bottleneck_scope must be one of"):
        tiny_supernet("nb201", bottleneck_scope="edge")


def test_search_with_op_scope_bottleneck_meets_the_budget(tmp_path, digits):
    args = tiny_args(tmp_path, bottleneck_scope="ops", max_steps=8)
    assert args.supernet_kwargs()["bottleneck_scope"] == "ops"
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    assert trainer.supernet.settings.bottleneck_scope == "ops"
    trainer.train()
    result = trainer.search_result()
    assert result.budget_met and result.derived_cost == network_cost(result.config).params
    with pytest.raises(ValueError, match="bottleneck_scope must be one of"):
        tiny_args(tmp_path, bottleneck_scope="edges")


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_derived_cells_sample_their_genotype_while_training(space):
    """At the nearly uniform alpha of the warm-up, derived cells draw different ops step to step, so the
    weights of ops other than the initial argmax get trained; in eval mode they run the argmax, and once
    alpha is sharp the draw is the argmax."""
    deeper = {"num_layers": 5} if space == "darts" else {}  # DARTS: 3 cells have no derived normal cell
    model = tiny_supernet(space, derived_cells=True, **deeper)
    draws = [model.current_choice(sample=True)["normal"] for _ in range(40)]
    per_edge = [{d[e] for d in draws} - {None} for e in range(len(draws[0]))]
    assert max(len(ops) for ops in per_edge) >= 3
    derived_cell = next(c for c, kind, mixed in zip(model.cells, model.cell_kinds, model.cell_mixed)
                        if kind == "normal" and not mixed)
    argmax = model.current_choice()["normal"]
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([0, 3, 9])
    model.train()
    for _ in range(10):
        model(x, labels=y).loss.backward()
    trained = {(e, o) for e in range(len(argmax)) for o in range(derived_cell.space.num_ops)
               if any(p.grad is not None and p.grad.abs().sum() > 0 for p in derived_cell._op(e, o).parameters())}
    assert any(o != argmax[e] for e, o in trained)  # not only the initial genotype's ops
    model.eval()
    with torch.no_grad():
        a, b = model(x).logits, model(x).logits
    assert torch.equal(a, b)  # eval: the argmax, deterministic
    genotype = DARTS_V2 if space == "darts" else NB201_EXAMPLE
    model.set_genotype(genotype)
    assert all(model.current_choice(sample=True) == model.current_choice() for _ in range(5))
    fixed = tiny_supernet(space, derived_cells=True, derived_sampling=False, **deeper)
    assert all(fixed.current_choice() == fixed.current_choice() for _ in range(3))
    fixed.train()
    for _ in range(3):
        fixed(x, labels=y).loss.backward()
    cell = next(c for c, kind, mixed in zip(fixed.cells, fixed.cell_kinds, fixed.cell_mixed)
                if kind == "normal" and not mixed)
    chosen = fixed.current_choice()["normal"]
    for e in range(len(chosen)):
        for o in range(cell.space.num_ops):
            grads = [p.grad for p in cell._op(e, o).parameters()]
            if o != chosen[e] and grads and not (cell.weight_sharing):
                assert all(g is None for g in grads)


def test_genotype_derivation_rules():
    probs = torch.full((6, 5), 0.1)
    probs[torch.arange(6), torch.tensor([3, 0, 1, 2, 4, 3])] = 0.6
    argmax = genotype_from_probs("nb201", {"normal": probs}, exclude_none=False)
    assert argmax.ops == ("nor_conv_3x3", "none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3")
    probs[1, 3] = 0.2  # DCA-NAS: the top-weighted non-`none` op
    genotype = genotype_from_probs("nb201", {"normal": probs})
    assert genotype.ops == ("nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3")
    # DARTS: 2 strongest incoming edges per node, never `none`
    darts = {kind: torch.softmax(a, -1) for kind, a in alphas_for_genotype("darts", DARTS_V2).items()}
    darts["normal"][:, 0] += 0.5  # `none` dominant everywhere must not be chosen
    derived = genotype_from_probs("darts", darts)
    assert same_darts_cells(derived, DARTS_V2)
    assert all(op != "none" for op, _ in derived.normal + derived.reduce)
    model = tiny_supernet("nb201")
    model.set_genotype(NB201_EXAMPLE)
    assert str(model.genotype()) == NB201_EXAMPLE


# ---------------------------------------------------------------------------------------------------------
# cost model
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space,genotype", [("nb201", NB201_EXAMPLE), ("nb201", NB201_LARGEST), ("darts", DARTS_V2)])
@pytest.mark.parametrize("metric", ["params", "macs"])
def test_expected_cost_equals_exact_cost_when_one_hot(space, genotype, metric):
    model = CostModel.for_space(space, metric)
    probs = {k: torch.softmax(a.double(), -1) for k, a in alphas_for_genotype(space, genotype, scale=60.0).items()}
    config = final_network_config(space, genotype=genotype)
    exact = network_cost(config).get(metric)
    assert model.derived(genotype) == exact
    assert float(model.expected(probs)) == pytest.approx(exact, rel=1e-9)


def test_exact_cost_matches_built_network():
    config = final_network_config("nb201", genotype=NB201_EXAMPLE, init_channels=4, cells_per_stage=1, image_size=16)
    model = CostModel(config, "params")
    assert model.derived(NB201_EXAMPLE) == count_params(DCANASForImageClassification(config))
    lo, hi = model.feasible_range()
    assert lo == model.derived(NB201Genotype.from_ops(["none"] * 6))
    assert hi == model.derived(NB201_LARGEST)


def test_budget_outside_feasible_range_is_a_clear_error(tmp_path, digits):
    model = CostModel.for_space("nb201", "params")
    lo, hi = model.feasible_range()
    for bad in (lo - 1, hi * 1.01):
        with pytest.raises(ValueError, match=r"outside the feasible range.*\[73306, 1\.53155e\+06\]"):
            model.check_budget(bad)
    assert model.check_budget((lo + hi) / 2) == (lo + hi) / 2
    with pytest.raises(ValueError, match="feasible range"):
        DCANASTrainer(args=tiny_args(tmp_path, budget=1000.0, budget_ratio=None), train_dataset=digits)
    with pytest.raises(ValueError, match="exactly one budget"):
        tiny_args(tmp_path, budget=1e5)
    with pytest.raises(ValueError, match="second-order"):
        tiny_args(tmp_path, unrolled=True)


def test_budget_constraint_term_and_clamp():
    model = CostModel.for_space("nb201", "params")
    probs = {k: torch.softmax(a, -1) for k, a in alphas_for_genotype("nb201", NB201_LARGEST).items()}
    constraint = BudgetConstraint(model, search_budget=model.feasible_range()[1] / 2, lambda_init=0.5)
    term, violation = constraint(probs)
    assert float(violation) == pytest.approx(1.0, rel=1e-6)  # twice the budget
    assert float(term.detach()) == pytest.approx(0.5, rel=1e-6)
    with torch.no_grad():
        constraint.lambda_.fill_(-1.0)
    constraint.clamp_()
    assert float(constraint.lambda_.detach()) == 0.0


# ---------------------------------------------------------------------------------------------------------
# trainer: bilevel search under a budget
# ---------------------------------------------------------------------------------------------------------


def test_lambda_increases_while_over_budget(tmp_path, digits):
    args = tiny_args(tmp_path, lambda_learning_rate=0.5, arch_learning_rate=1e-4)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.supernet.set_genotype(NB201_LARGEST, scale=5.0)  # far over a 30% budget
    lambdas = []
    for _ in range(4):
        logs = trainer.arch_step()
        assert logs["violation"] > 0
        lambdas.append(logs["lambda"])
    assert lambdas[0] > 0 and all(b > a for a, b in zip(lambdas, lambdas[1:]))


def test_short_search_meets_the_budget(tmp_path, digits):
    """Starting from the largest cell (over budget), a short search ends with a derived cell within it (raw
    argmax genotype, no repair)."""
    args = tiny_args(tmp_path, max_steps=12, lambda_learning_rate=2.0, arch_learning_rate=0.1, enforce_budget=False,
                     lambda_signal="derived")
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.supernet.set_genotype(NB201_LARGEST, scale=2.0)
    assert trainer.cost_model.derived(trainer.supernet.genotype()) > trainer.device_budget
    trainer.train()
    result = trainer.search_result()
    assert result.raw_budget_met and result.budget_met and not result.repaired
    assert result.derived_cost <= result.device_budget
    assert result.derived_cost == network_cost(result.config).params
    assert max(h.get("lambda", 0.0) for h in trainer.history) > 0
    logged = trainer.history[-1]
    for key in ("alpha_entropy", "expected_cost", "derived_cost", "search_budget", "device_budget", "lambda", "val_loss"):
        assert key in logged


def test_repair_brings_genotype_within_budget():
    model = CostModel.for_space("nb201", "params")
    budget = model.budget_from_ratio(0.4)
    probs = {"normal": torch.softmax(alphas_for_genotype("nb201", NB201_LARGEST, scale=2.0)["normal"], -1)}
    genotype, moves = model.repair(NB201_LARGEST, probs, budget)
    assert moves and model.derived(genotype) <= budget
    darts = CostModel.for_space("darts", "params")
    budget = darts.budget_from_ratio(0.5)
    probs = {k: torch.softmax(a, -1) for k, a in alphas_for_genotype("darts", DARTS_V2, 2.0).items()}
    big = DartsGenotype.parse(str(DARTS_V2).replace("sep_conv_3x3", "sep_conv_5x5").replace("max_pool_3x3", "dil_conv_5x5"))
    assert darts.derived(big) > budget
    fixed, moves = darts.repair(big, probs, budget)
    assert moves and darts.derived(fixed) <= budget


def test_fill_uses_the_budget_and_follows_alpha():
    """fill() moves edges to costlier ops while the network fits: it ends within the budget, no single further
    upgrade fits, and the edge alpha favours most is upgraded first."""
    model = CostModel.for_space("nb201", "params")
    space = get_space("nb201")
    small = NB201Genotype.from_ops(["avg_pool_3x3"] * 6)
    alpha = torch.zeros(6, 5)
    alpha[4, space.op_index("nor_conv_3x3")] = 3.0  # alpha wants a 3x3 conv on edge 4
    probs = {"normal": torch.softmax(alpha, -1)}
    budget = model.budget_from_ratio(0.5)
    filled, moves = model.fill(small, probs, budget)
    cost = model.derived(filled)
    assert moves and model.derived(small) < cost <= budget
    assert moves[0]["edge"] == list(space.edges[4]) and moves[0]["to"] == "nor_conv_3x3"
    for e, op in enumerate(filled.ops):
        for other in space.ops:
            added = model.tables["normal"][e, space.op_index(other)] - model.tables["normal"][e, space.op_index(op)]
            if other != "none" and added > 0:
                assert cost + added > budget  # maximal: no single upgrade still fits
    assert model.fill(filled, probs, budget)[1] == []  # idempotent
    darts = CostModel.for_space("darts", "params")
    cheap = DartsGenotype.parse(str(DARTS_V2).replace("sep_conv_3x3", "skip_connect"))
    probs = {k: torch.softmax(a, -1) for k, a in alphas_for_genotype("darts", DARTS_V2, 2.0).items()}
    budget = darts.derived(DARTS_V2)
    filled, moves = darts.fill(cheap, probs, budget)
    assert moves and darts.derived(cheap) < darts.derived(filled) <= budget


def test_trainer_fill_budget_reports_fill_moves(tmp_path, digits):
    args = tiny_args(tmp_path, max_steps=2, fill_budget=True, budget_ratio=0.6)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.train()
    result = trainer.search_result()
    assert result.budget_met and result.derived_cost <= result.device_budget
    assert result.fill_moves  # a 2-step search's cell is far below 60% of the largest
    # nothing more fits: filling the result again changes nothing
    assert trainer.cost_model.fill(result.genotype, trainer.supernet.probabilities(), result.device_budget)[1] == []
    assert json.loads(json.dumps(result.to_dict()))["fill_moves"] == result.fill_moves


def test_trainer_saves_derived_model_and_results(tmp_path, digits):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    args = tiny_args(tmp_path, max_steps=2, channel_bottleneck=1, weight_sharing=False, derived_cells=False)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.train()
    genotype, config = trainer.derive()
    assert config.genotype == str(genotype) and config.init_channels == 16 and config.cells_per_stage == 5
    out = tmp_path / "derived"
    trainer.save_model(str(out))
    loaded = AutoModelForImageClassification.from_pretrained(out)
    assert loaded.config.genotype == config.genotype
    assert AutoImageProcessor.from_pretrained(out) is not None
    results = json.loads((out / "search_results.json").read_text())
    assert results["genotype"] == config.genotype and results["metric"] == "params"
    assert results["params"] == count_params(loaded)
    assert results["supernet"]["channel_bottleneck"] == 1 and results["steps"] == 2


def test_a_resumed_search_continues_exactly(tmp_path, digits):
    """Checkpoint at step 4 of 8 and resume: alpha, lambda and the weights end as in the uninterrupted search
    (alpha's Adam moments and the validation stream are checkpointed along with the Trainer's own state)."""
    common = dict(max_steps=8, arch_warmup_ratio=0.25, save_strategy="steps", save_steps=4, derived_cells=True,
                  lambda_learning_rate=0.5, budget_ratio=0.2)
    straight = DCANASTrainer(args=tiny_args(tmp_path / "a", **common), train_dataset=digits)
    straight.train()
    checkpoint = tmp_path / "a" / "search" / "checkpoint-4"
    assert (checkpoint / "arch_optimizer.pt").is_file()
    resumed = DCANASTrainer(args=tiny_args(tmp_path / "b", **common), train_dataset=digits)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    a, b = straight.supernet, resumed.supernet
    for kind in a.alphas:
        torch.testing.assert_close(b.alphas[kind], a.alphas[kind], rtol=0, atol=1e-6)
    torch.testing.assert_close(b.constraint.lambda_, a.constraint.lambda_, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.classifier.weight, a.classifier.weight, rtol=0, atol=1e-5)
    # without the optimizer file the resume still works, with a warning, but alpha's moments restart
    (checkpoint / "arch_optimizer.pt").unlink()
    again = DCANASTrainer(args=tiny_args(tmp_path / "c", **common), train_dataset=digits)
    with pytest.warns(UserWarning, match="arch_optimizer.pt"):
        again.train(resume_from_checkpoint=str(checkpoint))
    assert not torch.allclose(again.supernet.alphas["normal"], a.alphas["normal"], rtol=0, atol=1e-6)


def test_unconstrained_search_is_plain_darts(tmp_path, digits):
    args = tiny_args(tmp_path, budget_ratio=None, constrained=False, max_steps=2)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    assert not hasattr(trainer.supernet, "constraint")
    trainer.train()
    result = trainer.search_result()
    assert result.budget_met is None and result.lambda_ is None and not result.repaired


def test_darts_space_search(tmp_path, digits):
    args = tiny_args(tmp_path, search_space="darts", search_init_channels=4, search_cells_per_stage=None,
                     search_num_layers=3, budget_type="flops", budget_ratio=0.6, max_steps=2)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.train()
    result = trainer.search_result()
    genotype = DartsGenotype.parse(result.genotype)
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)
    assert result.budget_met and result.macs == network_cost(result.config).macs
    assert result.config.num_layers == 20 and result.config.init_channels == 36


def test_wrong_image_size_is_a_clear_error(tmp_path):
    data = load_digits_dataset(image_size=8, limit=64)
    with pytest.raises(ValueError, match=r"Images are \[3, 8, 8\].*\[3, 16, 16\]"):
        DCANASTrainer(args=tiny_args(tmp_path), train_dataset=data)


# ---------------------------------------------------------------------------------------------------------
# latency table and look-up graph
# ---------------------------------------------------------------------------------------------------------


def test_latency_table_save_load_and_device_mismatch(tmp_path):
    config = final_network_config("nb201", init_channels=4, cells_per_stage=1, image_size=8)
    table = measure_latency_table(config, repeats=3, warmup=1)
    assert table.entries and all(v["onnxruntime"] >= 0 and v["torch"] >= 0 for v in table.entries.values())
    path = table.save(tmp_path / "latency.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatencyTableDeviceWarning)
        loaded = LatencyTable.load(path)
    model = CostModel(config, "latency", loaded)
    estimate = estimate_latency(loaded, final_network_config("nb201", genotype=NB201_EXAMPLE, init_channels=4,
                                                              cells_per_stage=1, image_size=8))
    assert estimate == pytest.approx(model.derived(NB201_EXAMPLE))
    lo, hi = model.feasible_range()
    assert lo >= loaded.skeleton_ms() and hi > lo  # the cheapest derivable cell has skips / pools, not `none`
    assert CostModel(config, "latency", loaded, exclude_none=False).feasible_range()[0] == pytest.approx(
        loaded.skeleton_ms())
    data = json.loads(open(path).read())
    data["fingerprint"]["cpu_model"] = "Imaginary CPU 9000"
    (tmp_path / "other.json").write_text(json.dumps(data))
    with pytest.warns(LatencyTableDeviceWarning, match="(?s)Imaginary CPU 9000.*this:"):
        LatencyTable.load(tmp_path / "other.json")
    with pytest.raises(ValueError, match="measured for the network"):
        CostModel(final_network_config("nb201", init_channels=8, cells_per_stage=1, image_size=8), "latency", loaded)
    with pytest.raises(ValueError, match="latency table"):
        CostModel(config, "latency", None)


def test_latency_calibration_stays_additive():
    from hf_compress.nas.latency import calibrate_latency_table

    config = final_network_config("nb201", init_channels=4, cells_per_stage=1, image_size=8)
    table = measure_latency_table(config, backends=("onnxruntime",), repeats=3, warmup=1)
    before = CostModel(config, "latency", table).derived(NB201_EXAMPLE)
    fit = calibrate_latency_table(table, config, [NB201_LARGEST, NB201_EXAMPLE, NB201Genotype.from_ops(["none"] * 6)],
                                  repeats=3, warmup=1)
    assert fit["scale"] > 0 and len(fit["rows"]) == 3 and "calibration" in table.meta
    after = CostModel(config, "latency", table).derived(NB201_EXAMPLE)
    if table.skeleton["onnxruntime"] > 0:  # (not clamped at 0): skeleton and ops rescaled, still additive
        assert after == pytest.approx(fit["scale"] * before + fit["offset_ms"], rel=1e-6)


def _alpha_probs(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"normal": torch.softmax(2.0 * torch.randn(6, 5, generator=generator), -1)}


@pytest.mark.parametrize("scale,offset", [(1.25, 0.0), (0.8, 2.0e4), (1.0, 1.5e5)])
def test_latency_fit_corrects_a_table_that_misjudges_the_device(scale, offset):
    """The device runs whole networks ``scale`` x the table's sum (+ ``offset``): repair + fill against the table
    alone lands outside [0.9, 1.0] x budget; measuring and rescaling the table budget lands inside, with the
    genotype derive() would give for the last table budget tried."""
    from hf_compress.nas.latency_fit import candidate_for, fit_measured_latency

    model = CostModel.for_space("nb201", "params")  # any additive table: the algorithm is metric-agnostic
    probs = _alpha_probs(0)
    raw = genotype_from_probs("nb201", probs, exclude_none=True)
    calls = []

    def device(genotype) -> float:
        calls.append(str(genotype))
        return scale * model.derived(genotype) + offset

    budget = model.budget_from_ratio(0.5)
    table_only = candidate_for(model, raw, probs, budget)
    assert not 0.9 * budget <= device(table_only) <= budget
    calls.clear()
    fit = fit_measured_latency(model, raw, probs, budget, device, tolerance=0.1, max_rounds=6)
    assert fit.within_tolerance and 0.9 * budget <= fit.measured_ms <= budget
    measured = [t["measured_ms"] for t in fit.trials if "measured_ms" in t]
    # it stops at the first candidate inside the window narrowed by the margin (0.02) for repeat measurements;
    # without one after max_rounds it keeps the one under the budget closest to the middle
    if 0.92 * budget <= fit.measured_ms <= 0.98 * budget:
        assert fit.measured_ms == measured[-1]
    else:
        assert fit.measured_ms == min(
            (m for m in measured if m <= budget), key=lambda m: abs(m - 0.95 * budget))
    assert fit.measured_ms == pytest.approx(device(fit.genotype))
    assert len(fit.trials) >= 2 and len(set(calls[:-1])) == len(calls[:-1])  # each candidate measured once
    chosen = next(t for t in fit.trials if t["genotype"] == str(fit.genotype) and "measured_ms" in t)
    if chosen["source"] == "derive":  # what derive() gives for the table budget of that round
        assert str(candidate_for(model, raw, probs, chosen["table_budget_ms"])) == str(fit.genotype)
    else:  # a cell an op change or two from a measured candidate, tried once the derivation repeated itself
        assert chosen["source"] == "edit" and any(t["source"] == "derive" for t in fit.trials[:fit.trials.index(chosen)])
    assert json.loads(json.dumps(fit.to_dict()))["trials"][0]["measured_over_budget"] > 1.0 or scale < 1


def test_latency_fit_overshoot_takes_a_close_network_over_the_budget_when_none_lands_under(tmp_path, caplog):
    """A device with no network between 0.85 and 1.02 of the budget: as a ceiling (the default) the fit keeps a
    network under the budget and says it is outside the window; with ``overshoot=0.1`` it returns the fastest
    network measured at most 8% over (10% less the margin) and warns with the figure."""
    from hf_compress.nas.latency_fit import fit_measured_latency

    model = CostModel.for_space("nb201", "params")
    probs = _alpha_probs(0)
    raw = genotype_from_probs("nb201", probs, exclude_none=True)
    budget = model.budget_from_ratio(0.5)

    def device(genotype) -> float:
        x = model.derived(genotype) / budget
        if 0.85 < x < 1.0:  # the gap: these networks run a little over the budget on this device
            x = 1.02 + 0.3 * (x - 0.85)
        elif x >= 1.0:
            x += 0.07
        return x * budget

    ceiling = fit_measured_latency(model, raw, probs, budget, device, max_rounds=8)
    assert ceiling.measured_ms <= 0.85 * budget and not ceiling.within_tolerance
    measured = [t["measured_ms"] for t in ceiling.trials if "measured_ms" in t]
    assert any(budget < m <= 1.08 * budget for m in measured)  # the fit saw close networks over the budget
    with caplog.at_level("WARNING"):
        target = fit_measured_latency(model, raw, probs, budget, device, max_rounds=8, overshoot=0.1)
    over = [t["measured_ms"] for t in target.trials if "measured_ms" in t and budget < t["measured_ms"] <= 1.08 * budget]
    assert target.within_tolerance and target.measured_ms == min(over)
    assert target.measured_ms == pytest.approx(device(target.genotype))
    assert "over it" in caplog.text and f"{target.measured_ms:.3f} ms" in caplog.text
    with pytest.raises(ValueError, match="overshoot"):
        fit_measured_latency(model, raw, probs, budget, device, overshoot=1.5)
    with pytest.raises(ValueError, match="latency_overshoot must be in"):
        tiny_args(tmp_path, latency_overshoot=-0.1)


def test_latency_fit_falls_back_when_the_device_is_too_slow(caplog):
    from hf_compress.nas.latency_fit import fit_measured_latency

    model = CostModel.for_space("nb201", "params")
    probs = _alpha_probs(1)
    raw = genotype_from_probs("nb201", probs, exclude_none=True)
    lo, _ = model.feasible_range()
    with caplog.at_level("WARNING"):
        fit = fit_measured_latency(model, raw, probs, 1.5 * lo, lambda g: 10.0 * model.derived(g), max_rounds=3)
    assert not fit.within_tolerance and "No candidate measured under" in caplog.text
    measured = [t["measured_ms"] for t in fit.trials if "measured_ms" in t]
    assert fit.measured_ms == min(measured) > 1.5 * lo
    with pytest.raises(ValueError, match="tolerance"):
        fit_measured_latency(model, raw, probs, lo, lambda g: 1.0, tolerance=1.5)


def test_trainer_latency_fit_measures_the_derived_network(tmp_path, digits):
    """A real latency search with latency_fit: candidates are measured with onnxruntime on this machine and
    budget_met follows the measurement."""
    final = dict(final_init_channels=4, final_cells_per_stage=1, final_image_size=8)
    config = final_network_config("nb201", init_channels=4, cells_per_stage=1, image_size=8)
    table = measure_latency_table(config, backends=("onnxruntime",), repeats=5, warmup=2)
    path = table.save(tmp_path / "latency.json")
    lo, hi = CostModel(config, "latency", table).feasible_range()
    args = tiny_args(tmp_path, max_steps=1, budget_type="latency", budget=lo + 0.7 * (hi - lo), budget_ratio=None,
                     latency_table=path, fill_budget=True, latency_fit=True, latency_fit_repeats=5,
                     latency_fit_rounds=3, latency_overshoot=0.1, **final)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.train()
    result = trainer.search_result()
    fit = result.extra["latency_fit"]
    measured = [t for t in fit["trials"] if "measured_ms" in t]
    assert 1 <= len(measured) <= 3 and all(t["measured_ms"] > 0 for t in measured)
    assert fit["genotype"] == result.genotype and result.extra["measured_latency_ms"] == fit["measured_ms"]
    # an answer over the budget (allowed by the overshoot) is reported as not meeting it
    assert result.budget_met == (fit["measured_ms"] <= result.device_budget) and fit["overshoot"] == 0.1
    assert fit["budget_ms"] == pytest.approx(result.device_budget)
    if fit["within_tolerance"]:
        assert 0.9 * result.device_budget <= fit["measured_ms"] <= 1.1 * result.device_budget
    with pytest.raises(ValueError, match="budget_type='latency'"):
        tiny_args(tmp_path, latency_fit=True)
    data = json.loads(open(path).read())
    data["fingerprint"]["cpu_model"] = "Imaginary CPU 9000"
    (tmp_path / "other.json").write_text(json.dumps(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyTableDeviceWarning)
        with pytest.raises(ValueError, match="(?s)other.json was measured on another device.*cpu_model"):
            DCANASTrainer(args=tiny_args(tmp_path, max_steps=1, budget_type="latency", budget=args.budget,
                                         budget_ratio=None, latency_table=str(tmp_path / "other.json"),
                                         latency_fit=True, **final), train_dataset=digits)


def test_perturbation_scores_leave_the_supernet_as_it_was(digits):
    from hf_compress.nas.perturbation import held_out_batches, perturbation_scores, scores_to_probabilities

    supernet = tiny_supernet("nb201", channel_bottleneck=2)
    supernet.train()
    with torch.no_grad():  # some BatchNorm statistics and a non-uniform alpha
        for i in range(3):
            supernet(torch.stack([digits[j]["pixel_values"] for j in range(i * 32, (i + 1) * 32)]))
        supernet.alphas["normal"].normal_(0, 0.5)
    alphas = supernet.alphas["normal"].detach().clone()
    buffers = {k: v.clone() for k, v in supernet.state_dict().items() if "running" in k}
    batches = held_out_batches(digits, 96, batch_size=48)
    assert [len(b[1]) for b in batches] == [48, 48]
    scores, trace = perturbation_scores(supernet, batches, seed=0)
    space = get_space("nb201")
    none = space.op_index("none")
    assert torch.equal(supernet.alphas["normal"], alphas) and supernet.training
    assert all(torch.equal(v, supernet.state_dict()[k]) for k, v in buffers.items())
    s = scores["normal"]
    assert torch.isinf(s[:, none]).all() and torch.isfinite(torch.cat([s[:, :none], s[:, none + 1:]], 1)).all()
    assert trace["evaluations"] == 6 * 4 and sorted(trace["order"]["normal"]) == list(range(6))
    assert all(-1.0 <= float(x) <= 1.0 for x in s[torch.isfinite(s)])
    probs = scores_to_probabilities(scores, 0.01)["normal"]
    assert torch.allclose(probs.sum(-1), torch.ones(6)) and (probs[:, none] == 0).all()
    assert genotype_from_probs("nb201", {"normal": probs}).ops == tuple(
        space.ops[int(i)] for i in s.argmax(-1))


def test_oneshot_accuracy_runs_only_the_given_cell(digits):
    from hf_compress.nas.perturbation import held_out_batches, oneshot_accuracy, running_cell

    supernet = tiny_supernet("nb201", channel_bottleneck=2, exclude_none=False)
    supernet.train()
    with torch.no_grad():
        supernet(torch.stack([digits[j]["pixel_values"] for j in range(64)]))
        supernet.alphas["normal"].normal_(0, 0.5)
    alphas = supernet.alphas["normal"].detach().clone()
    buffers = {k: v.clone() for k, v in supernet.state_dict().items() if "running" in k}
    batches = held_out_batches(digits, 96, batch_size=48)
    images = batches[0][0]
    with torch.no_grad():
        # an all-none cell cuts every image off: the logits no longer depend on the image
        with running_cell(supernet, NB201Genotype.from_ops(["none"] * 6)):
            assert supernet(images, arch_grad=False).logits.std(0).max() < 1e-6
        with running_cell(supernet, NB201_LARGEST):
            logits = supernet(images, arch_grad=False).logits
            assert logits.std(0).max() > 1e-3
        assert supernet.current_choice() == {"normal": [int(i) for i in alphas.argmax(-1)]}  # alpha restored
    conv = oneshot_accuracy(supernet, NB201_LARGEST, batches[:1])
    assert conv == pytest.approx(float((logits.argmax(-1) == batches[0][1]).double().mean()))
    assert torch.equal(supernet.alphas["normal"], alphas) and supernet.training
    assert all(torch.equal(v, supernet.state_dict()[k]) for k, v in buffers.items())
    with pytest.raises(ValueError, match="none"):  # derived cells of the default supernet never run `none`
        oneshot_accuracy(tiny_supernet("nb201"), NB201Genotype.from_ops(["none"] * 6), batches)


def test_build_search_trainer_keeps_the_supernet(tmp_path, digits):
    from hf_compress.nas.search import build_search_trainer

    with pytest.raises(ValueError, match="output_dir"):
        build_search_trainer(digits, None)
    trainer = build_search_trainer(digits, str(tmp_path / "s"), budget_ratio=0.5, max_steps=2, batch_size=32,
                                   search_init_channels=8, search_cells_per_stage=1, final_image_size=32)
    assert trainer.state.global_step == 0
    trainer.train()
    result = trainer.search_result()
    assert trainer.state.global_step == 2 and result.steps == 2
    assert result.raw_genotype == str(trainer.supernet.genotype())


def test_trainer_perturbation_derivation(tmp_path, digits):
    args = tiny_args(tmp_path, max_steps=2, derivation="perturbation", perturbation_images=64, fill_budget=True,
                     budget_ratio=0.5)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.train()
    alphas = trainer.supernet.alphas["normal"].detach().clone()
    result = trainer.search_result()
    info = result.extra["derivation"]
    assert info["method"] == "perturbation" and info["evaluations"] == 24 and info["seconds"] > 0
    assert torch.equal(trainer.supernet.alphas["normal"], alphas) and info["alpha_genotype"] == str(
        trainer.supernet.genotype())
    scores = torch.tensor([[float("-inf") if x is None else x for x in row] for row in info["scores"]["normal"]])
    assert result.raw_genotype == str(NB201Genotype.from_ops([get_space("nb201").ops[int(i)]
                                                             for i in scores.argmax(-1)]))
    assert result.budget_met and result.wall_time_s >= info["seconds"]
    with pytest.raises(ValueError, match="derivation"):
        tiny_args(tmp_path, derivation="magic")


def test_look_up_graph_is_monotone_and_round_trips(tmp_path):
    points = [  # derived cost is noisy and not monotone in the search budget
        {"search_budget": 1.0e5, "derived_cost": 0.9e5}, {"search_budget": 2.0e5, "derived_cost": 3.1e5},
        {"search_budget": 3.0e5, "derived_cost": 2.9e5}, {"search_budget": 5.0e5, "derived_cost": 7.0e5},
        {"search_budget": 8.0e5, "derived_cost": 1.2e6},
    ]
    lug = LookUpGraph("nb201", "params", points)
    grid = [1.0e5 + k * 1.0e4 for k in range(100)]
    mapped = [lug.search_budget_for(b) for b in grid]
    assert all(b >= a for a, b in zip(mapped, mapped[1:]))
    assert lug.search_budget_for(7.0e5) == pytest.approx(5.0e5)
    with pytest.warns(UserWarning, match="outside the look-up graph"):
        assert lug.search_budget_for(2.0e6) > 8.0e5
    path = lug.save(tmp_path / "lug.json")
    again = LookUpGraph.load(path)
    assert again.search_budget_for(4.0e5) == pytest.approx(lug.search_budget_for(4.0e5))
    with pytest.raises(ValueError, match="build one"):
        again.check_compatible("nb201", "macs")


def test_search_uses_the_look_up_graph(tmp_path, digits):
    model = CostModel.for_space("nb201", "params")
    lo, hi = model.feasible_range()
    lug = LookUpGraph("nb201", "params", [{"search_budget": 0.1 * hi, "derived_cost": 0.2 * hi},
                                           {"search_budget": 0.2 * hi, "derived_cost": 0.6 * hi}])
    args = tiny_args(tmp_path, lug=lug.save(tmp_path / "lug.json"), budget_ratio=0.4, max_steps=1)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    assert trainer.search_budget == pytest.approx(0.15 * hi)
    assert trainer.device_budget == pytest.approx(0.4 * hi)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def test_cli_help_and_errors(capsys, tmp_path):
    from hf_compress.nas.cli import run_nas

    assert run_nas(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("search", "derive", "train", "lut", "lug", "export"):
        assert name in out
    with pytest.raises(SystemExit) as exit_info:
        run_nas(["search", "--help"])
    assert exit_info.value.code == 0
    assert "--budget_type" in capsys.readouterr().out
    assert run_nas(["bogus"]) == 2
    assert run_nas(["search", "--dataset", "digits", "--image_size", "16", "--budget", "10",
                    "--output_dir", str(tmp_path / "x")]) == 2
    assert "feasible range" in capsys.readouterr().err
    assert run_nas(["derive", str(tmp_path / "missing")]) == 2


def test_cli_search_then_derive(tmp_path, capsys):
    from hf_compress.nas.cli import run_nas

    out = tmp_path / "search"
    rc = run_nas(["search", "--dataset", "digits", "--train_limit", "256", "--image_size", "16",
                  "--final_image_size", "32", "--search_init_channels", "8", "--search_cells_per_stage", "1",
                  "--budget_type", "flops", "--budget_ratio", "0.5", "--max_steps", "2", "--output_dir", str(out),
                  "--disable_tqdm", "true"])
    assert rc == 0
    results = json.loads((out / "search_results.json").read_text())
    assert results["metric"] == "macs" and results["budget_met"] is True
    rc = run_nas(["derive", str(out), "--output_dir", str(tmp_path / "derived"), "--init_channels", "8"])
    assert rc == 0
    model = DCANASForImageClassification.from_pretrained(tmp_path / "derived")
    assert model.config.init_channels == 8 and model.config.genotype == results["genotype"]
    # the search folder carries a card with the budget and the cost the run measured
    from huggingface_hub import ModelCard

    from model_cards import validate_card

    card = ModelCard.load(out / "README.md")
    validate_card(card, folder=out)
    assert results["genotype"].replace("|", "\\|") in card.text and "within budget" in card.text and "Not trained yet" in card.text
    # training the derived network adds its measured test accuracy as the card's model-index entry
    rc = run_nas(["train", str(out), "--output_dir", str(tmp_path / "trained"), "--dataset", "digits",
                  "--train_limit", "128", "--epochs", "1", "--batch_size", "64"])
    assert rc == 0
    trained = json.loads((tmp_path / "trained" / "train_results.json").read_text())
    card = ModelCard.load(tmp_path / "trained" / "README.md")
    (result,) = validate_card(card, folder=tmp_path / "trained")
    assert result.metric_type == "accuracy" and result.metric_value == pytest.approx(trained["eval_accuracy"])


def test_cli_derive_latency_fit_on_the_device(tmp_path, capsys):
    """Search anywhere, then fit on the device: `nas derive --latency_fit` measures candidates ranked by the saved
    alpha against a table measured here, saves that network and records the measurement."""
    from hf_compress.nas.cli import run_nas

    out = tmp_path / "search"
    assert run_nas(["search", "--dataset", "digits", "--train_limit", "256", "--image_size", "8",
                    "--final_init_channels", "4", "--final_cells_per_stage", "1", "--search_init_channels", "4",
                    "--search_cells_per_stage", "1", "--channel_bottleneck", "2", "--budget_ratio", "0.5", "--max_steps", "2",
                    "--output_dir", str(out), "--disable_tqdm", "true"]) == 0
    config = final_network_config("nb201", init_channels=4, cells_per_stage=1, image_size=8)
    table = measure_latency_table(config, backends=("onnxruntime",), repeats=5, warmup=2)
    path = table.save(tmp_path / "latency.json")
    lo, hi = CostModel(config, "latency", table).feasible_range()
    capsys.readouterr()
    assert run_nas(["derive", str(out), "--latency_fit", "--latency_table", path, "--budget_ms",
                    str(lo + 0.6 * (hi - lo)), "--latency_fit_rounds", "2", "--latency_fit_repeats", "5",
                    "--latency_overshoot", "0.05", "--output_dir", str(tmp_path / "fitted")]) == 0
    printed = capsys.readouterr().out
    assert "latency fit: measured" in printed
    saved = json.loads((tmp_path / "fitted" / "search_results.json").read_text())
    fit = saved["extra"]["latency_fit"]
    assert saved["genotype"] == fit["genotype"] and fit["trials"][0]["measured_ms"] > 0
    assert fit["overshoot"] == 0.05 and fit["tolerance"] == 0.1
    assert f"({fit['measured_ms'] / fit['budget_ms']:.3f} x; table estimate" in printed
    from hf_compress.nas.cli import _summary_lines
    from hf_compress.nas.search import SearchResult

    summary = "\n".join(_summary_lines(SearchResult.load(tmp_path / "fitted")))
    assert f"{fit['measured_ms'] / fit['budget_ms']:.3f} x the budget" in summary
    model = DCANASForImageClassification.from_pretrained(tmp_path / "fitted")
    assert model.config.genotype == fit["genotype"] and sum(p.numel() for p in model.parameters()) == saved["params"]
    # a params search has no latency budget of its own, and the table must come from somewhere
    assert run_nas(["derive", str(out), "--latency_fit", "--latency_table", path]) == 2
    assert "--budget_ms" in capsys.readouterr().err
    assert run_nas(["derive", str(out), "--latency_fit"]) == 2
    assert "--latency_table" in capsys.readouterr().err


def test_public_names():
    import trainers

    if not hasattr(trainers, "DCANASTrainer"):
        pytest.skip("trainers/__init__.py does not export the DCA-NAS trainer yet")
    from trainers import DCANASTrainer as exported, DCANASTrainingArguments as exported_args

    assert exported is DCANASTrainer and exported_args is DCANASTrainingArguments


def test_latency_fit_tries_nearby_cells_when_the_table_misorders_networks():
    """On a device whose per-op costs differ from the table's by a different factor per (edge, op), no table
    budget may yield a cell inside the window; trying the cells an op change or two from the closest too-fast
    and too-slow candidates lands inside far more often."""
    from hf_compress.nas.latency_fit import fit_measured_latency

    model = CostModel.for_space("nb201", "params")
    factor = np.random.default_rng(0).uniform(0.7, 1.4, size=(6, 5))

    def device(genotype) -> float:
        return 1.1 * model.skeleton + sum(model.tables[k][e, o] * factor[e, o] for k, e, o, _ in model._slots(genotype))

    inside = {True: 0, False: 0}
    cases = 0
    for seed in range(3):
        probs = _alpha_probs(seed)
        raw = genotype_from_probs("nb201", probs, exclude_none=True)
        for ratio in np.linspace(0.15, 0.85, 8):
            budget = model.budget_from_ratio(float(ratio))
            cases += 1
            for explore in (True, False):
                fit = fit_measured_latency(model, raw, probs, budget, device, max_rounds=6, explore_edits=explore)
                assert fit.within_tolerance == (0.9 * budget <= device(fit.genotype) <= budget)
                inside[explore] += fit.within_tolerance
                measured = [t for t in fit.trials if "measured_ms" in t]
                assert len(measured) <= 6 and len({t["genotype"] for t in measured}) == len(measured)
    assert inside[True] > inside[False] and inside[True] >= 0.75 * cases, (inside, cases)


def test_device_correction_learns_the_op_costs_of_the_device():
    """Where each op type runs at its own factor of the table, a fit to a few measured networks predicts other
    networks far better than the table rescaled by one ratio (what the parent-ratio prediction does)."""
    from hf_compress.nas.latency_fit import DeviceCorrection

    model = CostModel.for_space("nb201", "params")
    factor = np.array([1.0, 1.0, 0.6, 1.5, 1.0])  # none, skip, conv1x1, conv3x3, pool (params: only convs cost)
    ops = model.space.ops

    def device(genotype) -> float:
        return 1.1 * model.skeleton + sum(model.tables[k][e, o] * factor[o] for k, e, o, _ in model._slots(genotype))

    rng = np.random.default_rng(0)
    cells = [NB201Genotype.from_ops([ops[i] for i in rng.integers(0, len(ops), 6)]) for _ in range(40)]
    correction = DeviceCorrection(model)
    for cell in cells[:8]:
        correction.add(cell, device(cell))
    ratio = np.mean([device(c) / model.derived(c) for c in cells[:8]])
    learnt = np.mean([abs(correction.predict(c) / device(c) - 1) for c in cells[8:]])
    rescaled = np.mean([abs(ratio * model.derived(c) / device(c) - 1) for c in cells[8:]])
    assert learnt < 0.02 and learnt < 0.25 * rescaled, (learnt, rescaled)
    prior_only = DeviceCorrection(model)
    assert prior_only.weights == pytest.approx(np.ones(1 + len(ops)))  # nothing measured: the table itself


def test_latency_fit_edits_reach_three_op_changes_on_small_cells():
    """When no NB201 cell one or two op changes from the closest measured candidate is predicted inside the window,
    the next proposal is three changes away; DARTS genotypes (16 chosen ops) stop at two."""
    from hf_compress.nas.latency_fit import _edit_proposal

    model = CostModel.for_space("nb201", "params")
    probs = _alpha_probs(0)
    parent = NB201_LARGEST
    estimate = model.derived(parent)
    near = {round(cost) for _, cost, _ in model.edits(parent, probs, max_changes=2)}
    three = [(g, cost) for g, cost, _ in model.edits(parent, probs, max_changes=3)
             if all(abs(cost - c) > 2000 for c in near)]
    assert three, "expected NB201 cells that only three op changes reach"
    target_genotype, target_cost = three[0]
    # the device runs the parent at its table estimate: predictions are the table costs
    child, predicted = _edit_proposal(model, probs, [(parent, estimate, estimate)], {str(parent)},
                                      target_cost - 1000, target_cost + 1000, target_cost)
    assert predicted == pytest.approx(target_cost, abs=1000)
    assert sum(a != b for a, b in zip(child.ops, parent.ops)) == 3
    darts = CostModel.for_space("darts", "params", init_channels=8, num_layers=5)
    darts_probs = {kind: torch.softmax(a, -1) for kind, a in alphas_for_genotype("darts", DARTS_V2).items()}
    darts_estimate = darts.derived(DARTS_V2)
    darts_child, _ = _edit_proposal(darts, darts_probs, [(DARTS_V2, darts_estimate, darts_estimate)], {str(DARTS_V2)},
                                    1.0, 2.0, 1.5)  # nothing can be inside: the closest to aim among <= 2 changes
    changed = sum(a != b for a, b in zip(darts._slots(darts_child), darts._slots(DARTS_V2)))
    assert 1 <= changed <= 2


def test_cost_model_edits_are_the_cells_a_few_op_changes_away():
    model = CostModel.for_space("nb201", "params")
    probs = _alpha_probs(0)
    one = model.edits(NB201_EXAMPLE, probs, max_changes=1)
    assert len(one) == 6 * 3  # 6 edges x the 3 other non-`none` ops
    two = model.edits(NB201_EXAMPLE, probs, max_changes=2)
    assert len(two) == 18 + 15 * 9  # + every pair of edges x 3 x 3
    log_probs = probs["normal"].log()
    for genotype, cost, score in one + two[:20]:
        assert "none" not in str(genotype) and str(genotype) != str(NB201_EXAMPLE)
        assert cost == pytest.approx(model.derived(genotype))
        ops = [model.space.op_index(op) for op in genotype.ops]
        assert score == pytest.approx(float(sum(log_probs[e, o] for e, o in enumerate(ops))))
    darts = CostModel.for_space("darts", "params", init_channels=8, num_layers=5)
    darts_probs = {kind: torch.softmax(a, -1) for kind, a in alphas_for_genotype("darts", DARTS_V2).items()}
    darts_edits = darts.edits(DARTS_V2, darts_probs)
    assert len(darts_edits) == 2 * 8 * 6  # 2 cells x 8 chosen inputs x the 6 other non-`none` ops
    assert all(cost == pytest.approx(darts.derived(g)) for g, cost, _ in darts_edits[::7])
