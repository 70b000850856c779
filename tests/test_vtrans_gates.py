"""VIB gates: KL, hard decision, expected keep, sampling, deterministic multipliers, Lagrange multipliers."""

from __future__ import annotations

import math

import pytest
import torch

from hf_compress.vtrans import VIBGate, VIBGates


def _random_gate(shape=(5, 7), seed=0) -> VIBGate:
    gate = VIBGate(shape)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gate.mu.copy_(torch.randn(shape, generator=gen) * 2.0)
        gate.log_sigma2.copy_(torch.empty(shape).uniform_(-6.0, 4.0, generator=gen))
    return gate


def test_kl_matches_closed_form():
    gate = _random_gate()
    mu = gate.mu.detach().double()
    sigma2 = gate.log_sigma2.detach().double().exp()
    expected = (0.5 * torch.log(1.0 + mu**2 / sigma2)).sum()
    kl = gate.kl()
    assert kl.dim() == 0
    assert kl.item() == pytest.approx(expected.item(), rel=1e-5)
    # one unit by hand
    m, s2 = float(mu[2, 3]), float(sigma2[2, 3])
    single = VIBGate((1,), init_mu=m, init_log_sigma2=math.log(s2))
    assert single.kl().item() == pytest.approx(0.5 * math.log(1.0 + m * m / s2), rel=1e-5)


def test_kl_is_differentiable_and_pushes_towards_pruning():
    gate = VIBGate((4,), init_mu=1.0, init_log_sigma2=-2.0)
    gate.kl().backward()
    # more variance -> less information: dKL/dlog_sigma2 < 0; larger |mu| -> more information: dKL/dmu > 0
    assert torch.all(gate.log_sigma2.grad < 0)
    assert torch.all(gate.mu.grad > 0)


def test_keep_mask_is_log_alpha_below_zero():
    gate = _random_gate(seed=1)
    log_alpha = gate.log_sigma2.detach() - torch.log(gate.mu.detach() ** 2)
    mask = gate.keep_mask()
    assert mask.dtype == torch.bool
    assert torch.equal(mask, log_alpha < 0)
    assert 0 < int(mask.sum()) < mask.numel()  # the random draw has both kept and pruned units
    assert torch.allclose(gate.log_alpha(), log_alpha, atol=1e-5)
    assert torch.allclose(gate.keep_score(), -log_alpha, atol=1e-5)


def test_keep_mask_specific_units():
    gate = VIBGate((3,), init_mu=1.0)
    with torch.no_grad():
        gate.log_sigma2.copy_(torch.tensor([-1.0, 1.0, -20.0]))
    assert gate.keep_mask().tolist() == [True, False, True]


@pytest.mark.parametrize("temperature", [10.0, 1.0])
def test_expected_keep_in_open_interval_and_monotone(temperature):
    log_sigma2 = torch.linspace(-1.5, 1.5, 13)  # with mu = 1, log_alpha = log_sigma2
    gate = VIBGate((13,), init_mu=1.0, temperature=temperature)
    with torch.no_grad():
        gate.log_sigma2.copy_(log_sigma2)
    p = gate.expected_keep().detach()
    assert torch.all(p > 0) and torch.all(p < 1)
    # strictly decreasing in log_alpha
    assert torch.all(p[1:] < p[:-1])
    # 0.5 at the decision threshold, and the exact sigmoid
    assert p[6].item() == pytest.approx(0.5, abs=1e-6)
    assert torch.allclose(p, torch.sigmoid(-temperature * gate.log_alpha().detach()), atol=1e-7)


def test_expected_keep_consistent_with_keep_mask():
    gate = _random_gate(seed=2)
    p = gate.expected_keep().detach()
    mask = gate.keep_mask()
    assert torch.all(p[mask] > 0.5)
    assert torch.all(p[~mask] <= 0.5)


def test_sample_mean_and_std_match_mu_sigma():
    torch.manual_seed(1234)
    n_units, n_samples = 6, 20000
    gate = VIBGate((n_units,))
    mu = torch.tensor([-1.0, 0.0, 0.3, 1.0, 2.0, 5.0])
    log_sigma2 = torch.tensor([-4.0, -2.0, 0.0, 0.5, 1.0, 2.0])
    with torch.no_grad():
        gate.mu.copy_(mu)
        gate.log_sigma2.copy_(log_sigma2)
        samples = torch.stack([gate.sample() for _ in range(n_samples)])
    sigma = torch.exp(0.5 * log_sigma2)
    assert samples.shape == (n_samples, n_units)
    # standard error of the mean is sigma / sqrt(n) ~ 0.7% of sigma; allow 5 standard errors
    assert torch.all((samples.mean(0) - mu).abs() < 5 * sigma / math.sqrt(n_samples))
    assert torch.allclose(samples.std(0), sigma, rtol=0.03)
    # independent per unit and per draw
    assert not torch.equal(samples[0], samples[1])
    corr = torch.corrcoef(samples.T)
    assert (corr - torch.eye(n_units)).abs().max() < 0.05


def test_sample_is_reparameterised():
    gate = VIBGate((3,), init_mu=1.0, init_log_sigma2=0.0)
    torch.manual_seed(0)
    gate.sample().sum().backward()
    assert torch.allclose(gate.mu.grad, torch.ones(3))
    assert gate.log_sigma2.grad is not None and torch.any(gate.log_sigma2.grad != 0)


def test_deterministic_is_mu_on_kept_and_zero_on_pruned():
    gate = _random_gate(seed=3)
    z = gate.deterministic().detach()
    mask = gate.keep_mask()
    assert torch.all(z[~mask] == 0)
    assert torch.equal(z[mask], gate.mu.detach()[mask])


def _gates(**kwargs) -> VIBGates:
    return VIBGates(num_layers=3, hidden_size=8, num_heads=4, intermediate_size=6, **kwargs)


def test_vibgates_shapes_and_unknown_group():
    gates = _gates()
    shapes = {name: tuple(g.mu.shape) for name, g in gates.groups.items()}
    assert shapes == {"hidden": (8,), "heads": (3, 4), "ffn": (3, 6), "mha": (3,), "ffn_layer": (3,)}
    with pytest.raises(ValueError, match="bogus"):
        _gates(groups=("heads", "bogus"))


def test_vibgates_deterministic_switches_off_sublayer_with_all_units_pruned():
    gates = _gates()
    with torch.no_grad():
        gates.groups["mha"].mu.fill_(1.3)
        gates.groups["ffn_layer"].mu.fill_(0.7)
        gates.groups["heads"].log_sigma2[1].fill_(30.0)  # every head of layer 1 pruned
        gates.groups["heads"].log_sigma2[2, 0] = 30.0  # one head of layer 2 pruned
        gates.groups["ffn"].log_sigma2[0].fill_(30.0)  # every neuron of layer 0 pruned
    # the sub-layer gates themselves still say "keep"
    assert gates.groups["mha"].keep_mask().all() and gates.groups["ffn_layer"].keep_mask().all()
    det = gates.deterministic()
    assert det["mha"].tolist() == pytest.approx([1.3, 0.0, 1.3])
    assert det["ffn_layer"].tolist() == pytest.approx([0.0, 0.7, 0.7])
    assert torch.all(det["heads"][1] == 0) and det["heads"][2, 0] == 0 and torch.all(det["heads"][2, 1:] != 0)


def test_vibgates_deterministic_without_sublayer_groups_gives_alive_masks():
    gates = _gates(groups=("heads", "ffn"))
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[0].fill_(30.0)
        gates.groups["ffn"].log_sigma2[2].fill_(30.0)
    det = gates.deterministic()
    assert det["mha"].tolist() == [0.0, 1.0, 1.0]
    assert det["ffn_layer"].tolist() == [1.0, 1.0, 0.0]
    assert "hidden" not in det


def test_vibgates_refresh_samples_in_training_and_is_deterministic_in_eval():
    gates = _gates(init_log_sigma2=0.0)  # sigma = 1: samples clearly differ from mu
    with torch.no_grad():
        gates.groups["heads"].log_sigma2[0, 0] = 30.0
    gates.train()
    torch.manual_seed(0)
    gates.refresh()
    first = gates.multiplier("heads", 0).clone()
    gates.refresh()
    assert not torch.equal(first, gates.multiplier("heads", 0))
    gates.frozen = True  # frozen gates are deterministic even in training mode
    gates.refresh()
    assert torch.equal(gates.multiplier("heads"), gates.deterministic()["heads"])
    gates.frozen = False
    gates.eval()
    gates.refresh()
    assert torch.equal(gates.multiplier("heads"), gates.deterministic()["heads"])
    assert gates.multiplier("heads", 0)[0] == 0
    assert gates.multiplier("nonexistent") is None


def test_vibgates_kl_weights():
    gates = _gates()
    plain = gates.kl({})
    weighted = gates.kl({"heads": 3.0})
    assert set(plain) == set(VIBGates.GROUPS) - {"kv_groups"}  # an encoder has no grouped-query attention
    assert weighted["heads"].item() == pytest.approx(3.0 * plain["heads"].item(), rel=1e-6)
    assert weighted["ffn"].item() == pytest.approx(plain["ffn"].item(), rel=1e-6)


@pytest.mark.parametrize("name", ["lambda_1", "lambda_2"])
def test_lambda_gradients_are_negated_for_ascent(name):
    gates = _gates()
    lam = getattr(gates, name)
    (lam * 1.0).backward()
    assert lam.grad is not None
    assert lam.grad.item() == pytest.approx(-1.0)
    # an SGD step therefore *increases* lambda when the loss increases with it (gradient ascent)
    opt = torch.optim.SGD([lam], lr=0.5)
    opt.step()
    assert lam.item() == pytest.approx(0.5)


def test_lambda_ascent_on_a_constraint_term():
    gates = _gates()
    with torch.no_grad():
        gates.lambda_1.fill_(2.0)
    gap = torch.tensor(0.25)
    (gates.lambda_1 * gap + gates.lambda_2 * gap * gap).backward()
    assert gates.lambda_1.grad.item() == pytest.approx(-0.25)
    assert gates.lambda_2.grad.item() == pytest.approx(-0.0625)
    # the gates' own parameters are untouched by the hook
    gates.groups["mha"].kl().backward()
    assert torch.all(gates.groups["mha"].log_sigma2.grad < 0)


def test_relative_gates_keep_decision_ignores_the_gate_scale():
    """With relative noise, shrinking mu (while later weights grow) does not prune a unit."""
    from hf_compress.vtrans.gates import VIBGate

    torch.manual_seed(0)
    gate = VIBGate((4,), init_mu=1.0, init_log_sigma2=-4.0, relative=True)
    assert torch.allclose(gate.log_alpha(), torch.full((4,), -4.0))
    before = gate.keep_mask().clone()
    with torch.no_grad():
        gate.mu.mul_(1e-3)
    assert torch.equal(gate.keep_mask(), before)
    assert torch.allclose(gate.kl(), 0.5 * torch.log1p(torch.exp(torch.tensor(4.0))) * 4)
    # noise scales with mu: the sample's relative spread is sqrt(alpha)
    big = VIBGate((20000,), init_mu=3.0, init_log_sigma2=-4.0 + 2 * math.log(3.0), relative=True)
    z = big.sample().detach()
    assert abs(float(z.mean()) - 3.0) < 0.01
    assert abs(float(z.std()) / 3.0 - math.exp(-2.0)) < 0.005
    absolute = VIBGate((4,), init_mu=1.0, init_log_sigma2=-4.0)
    with torch.no_grad():
        absolute.mu.mul_(1e-3)
    assert not absolute.keep_mask().any()  # the absolute parametrization prunes the shrunk gate
