"""NASWOT scores and the derivation that re-ranks alpha's most probable NAS-Bench-201 cells by them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hf_compress.nas.constraint import CostModel
from hf_compress.nas.modeling_dcanas import DCANASForImageClassification
from hf_compress.nas.configuration_dcanas import DCANASConfig
from hf_compress.nas.proxy import _agreement_kernel, naswot_rerank, naswot_score, nb201_top_cells, synflow_score
from hf_compress.nas.search import load_digits_dataset
from hf_compress.nas.spaces import NB201Genotype, get_space
from trainers.dcanas_trainer import DCANASTrainer
from test_nas_search import tiny_args

SMALL_NET = dict(init_channels=8, cells_per_stage=1)


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset(image_size=16, limit=256, seed=0)


def random_probs(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"normal": torch.softmax(torch.randn(6, 5, generator=generator) * 2, dim=-1)}


def test_top_cells_are_the_most_probable_cells_within_the_budget():
    cost_model = CostModel.for_space("nb201", "params")
    space = get_space("nb201")
    probs = random_probs(0)
    budget = cost_model.budget_from_ratio(0.5)
    top = nb201_top_cells(cost_model, probs, budget, k=25)
    # brute force over every cell without `none`
    log_probs = torch.log(probs["normal"]).double()
    ranked = []
    for ops in itertools.product([o for o in space.ops if o != "none"], repeat=6):
        genotype = NB201Genotype.from_ops(ops)
        if cost_model.derived(genotype) <= budget:
            ranked.append((float(sum(log_probs[e, space.op_index(op)] for e, op in enumerate(ops))), str(genotype)))
    ranked.sort(key=lambda item: -item[0])
    assert [str(g) for g in top] == [name for _, name in ranked[:25]]
    assert all(cost_model.derived(g) <= budget for g in top)
    assert len(nb201_top_cells(cost_model, probs, None, k=10)) == 10
    assert nb201_top_cells(cost_model, probs, cost_model.skeleton - 1, k=5) == []
    with pytest.raises(ValueError, match="NAS-Bench-201"):
        nb201_top_cells(CostModel.for_space("darts", "params"), probs, budget, k=5)


def test_naswot_score_separates_images_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = DCANASForImageClassification(DCANASConfig(search_space="nb201", image_size=16, num_classes=10, **SMALL_NET))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(16, 3, 16, 16)
    distinct = naswot_score(model, images)
    near_copies = naswot_score(model, images[:1].repeat(16, 1, 1, 1) + 1e-3 * torch.randn(16, 3, 16, 16))
    assert np.isfinite(distinct) and distinct > near_copies  # images the ReLUs cannot tell apart score lower
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN running stats untouched
    with pytest.raises(ValueError, match="at least 2 images"):
        naswot_score(model, images[:1])


def test_synflow_grows_with_the_cell_and_leaves_the_model_as_it_was():
    def net(ops, channels=8):
        torch.manual_seed(0)
        config = DCANASConfig(search_space="nb201", genotype=str(NB201Genotype.from_ops(ops)), image_size=16,
                              num_classes=10, init_channels=channels, cells_per_stage=1)
        return DCANASForImageClassification(config)

    convs = net(["nor_conv_3x3"] * 6)
    state = {k: v.clone() for k, v in convs.state_dict().items()}
    score = synflow_score(convs, (3, 16, 16))
    assert all(torch.equal(v, convs.state_dict()[k]) for k, v in state.items()) and convs.training
    assert synflow_score(convs, (3, 16, 16)) == score  # no data, no randomness
    # more weights on the paths from input to logits: a higher score
    assert score > synflow_score(net(["nor_conv_1x1"] * 6), (3, 16, 16))
    assert score > synflow_score(net(["skip_connect"] * 6), (3, 16, 16))
    assert synflow_score(net(["nor_conv_3x3"] * 6, channels=16), (3, 16, 16)) > score


def test_agreement_kernel_counts_units_on_which_two_codes_agree():
    on = torch.rand(12, 5000, generator=torch.Generator().manual_seed(0)) > 0.4
    kernel = _agreement_kernel(on)
    agree = (on[:, None, :] == on[None, :, :]).sum(-1).double()  # direct count, pair by pair
    assert kernel.dtype == torch.float64 and torch.equal(kernel, agree)
    assert torch.equal(torch.diagonal(kernel), torch.full((12,), 5000.0, dtype=torch.float64))


def test_naswot_ranks_real_cells_like_the_nb201_table():
    """Quality on real data: over 30 random cells within the 50% budget, NASWOT of small untrained networks on 32
    CIFAR-10 images agrees with the table's accuracy after training (alpha of the CPU searches: tau -0.25..0.00)."""
    from scipy.stats import kendalltau

    from hf_compress.nas.nb201_table import load_nb201_table
    from hf_compress.nas.search import load_cifar10

    try:
        table = load_nb201_table()
        images = load_cifar10("test", limit=32, seed=0).pixel_values
    except FileNotFoundError as err:
        pytest.skip(f"NAS-Bench-201 table or CIFAR-10 not available: {err}")
    cost_model = CostModel.for_space("nb201", "params")
    budget = cost_model.budget_from_ratio(0.5)
    fits = [e for e in table.entries if "none" not in e.genotype.ops and cost_model.derived(e.genotype) <= budget]
    sample = [fits[i] for i in np.random.default_rng(0).choice(len(fits), size=30, replace=False)]
    chosen, trace = naswot_rerank([e.genotype for e in sample], SMALL_NET, images)
    accuracy = [e.accuracies["cifar10_test_acc_12ep"] for e in sample]
    tau = kendalltau(accuracy, trace["scores"])[0]
    assert tau > 0.4, tau
    assert chosen == sample[int(np.argmax(trace["scores"]))].genotype and trace["images"] == 32


def test_trainer_naswot_derivation(tmp_path, digits):
    args = tiny_args(tmp_path, max_steps=2, derivation="naswot", naswot_top_k=4, naswot_images=16, budget_ratio=0.5,
                     final_init_channels=8, final_cells_per_stage=1)
    trainer = DCANASTrainer(args=args, train_dataset=digits)
    trainer.train()
    result = trainer.search_result()
    info = result.extra["derivation"]
    candidates = nb201_top_cells(trainer.cost_model, trainer.supernet.probabilities(), trainer.device_budget, k=4)
    assert info["method"] == "naswot" and info["candidates"] == [str(g) for g in candidates]
    assert info["images"] == 16 and len(info["scores"]) == 4
    assert result.genotype == info["candidates"][int(np.argmax(info["scores"]))]
    assert result.budget_met and result.wall_time_s >= info["seconds"] > 0
    assert info["alpha_genotype"] == result.raw_genotype == str(trainer.supernet.genotype())
    with pytest.raises(ValueError, match="DARTS"):
        tiny_args(tmp_path, search_space="darts", derivation="naswot")
    with pytest.raises(ValueError, match="latency_fit"):
        tiny_args(tmp_path, derivation="naswot", budget_type="latency", latency_table="t.json", latency_fit=True)
