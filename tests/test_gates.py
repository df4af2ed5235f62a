"""Hard-concrete gates: the L0 penalty is P(gate > 0), test-time gates, seeded sampling."""

from __future__ import annotations

import math

import pytest
import torch

from weightstep.stepping.gates import BETA, GAMMA, ZETA, HardConcreteGate


def _gate_rows(log_alphas: list[float], samples: int) -> HardConcreteGate:
    gate = HardConcreteGate((len(log_alphas), samples))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor(log_alphas)[:, None].expand(-1, samples))
    return gate


def test_expected_l0_matches_monte_carlo_probability_of_an_open_gate():
    log_alphas = [-5.0, -3.0, -1.5, 0.0, 1.0, 3.0]
    samples = 20000
    gate = _gate_rows(log_alphas, samples)
    z = gate.sample(torch.Generator().manual_seed(7)).detach()
    observed = (z > 0).float().mean(dim=1)
    shift = BETA * math.log(-GAMMA / ZETA)
    for i, la in enumerate(log_alphas):
        p = 1.0 / (1.0 + math.exp(-(la - shift)))
        tol = 4 * math.sqrt(p * (1 - p) / samples) + 1e-3
        assert abs(float(observed[i]) - p) < tol, (la, float(observed[i]), p)
    assert float(gate.expected_l0().detach()) == pytest.approx(samples * sum(
        1.0 / (1.0 + math.exp(-(la - shift))) for la in log_alphas), rel=1e-5)


def test_samples_are_hard_concrete():
    gate = HardConcreteGate((5000,), log_alpha_init=0.0)
    z = gate.sample(torch.Generator().manual_seed(1)).detach()
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0  # both ends have probability mass
    assert 0.0 < float(((z > 0) & (z < 1)).float().mean()) < 1.0


def test_deterministic_gate_closed_and_open():
    gate = HardConcreteGate((4,))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-20.0, -3.0, 0.0, 20.0]))
    d = gate.deterministic().detach()
    assert d[0].item() == 0.0 and d[1].item() == 0.0  # -3 (the default init) is closed at test time
    assert d[2].item() == pytest.approx(0.5 * (ZETA - GAMMA) + GAMMA)  # not a 0.5 threshold
    assert d[3].item() == 1.0
    assert gate.open_mask().tolist() == [False, False, True, True]
    assert torch.equal(gate(False).detach(), d)
    # the closed/open boundary: sigmoid(log_alpha) = -gamma / (zeta - gamma)
    edge = math.log(-GAMMA / ZETA)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([edge - 1e-3, edge + 1e-3, -2.0, -2.5]))
    assert gate.open_mask().tolist() == [False, True, True, False]


def test_sampling_is_deterministic_with_a_seeded_generator():
    gate = HardConcreteGate((3, 17), log_alpha_init=-1.0)
    a = gate.sample(torch.Generator().manual_seed(3))
    b = gate.sample(torch.Generator().manual_seed(3))
    c = gate.sample(torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(3)
    first, second = gate(True, g), gate(True, g)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the generator advances


def test_gradient_reaches_log_alpha_through_samples_and_penalty():
    gate = HardConcreteGate((200,), log_alpha_init=0.0)
    (gate.sample(torch.Generator().manual_seed(0)).sum() + gate.expected_l0()).backward()
    assert gate.log_alpha.grad is not None and float(gate.log_alpha.grad.abs().sum()) > 0


def test_overridable_constants_and_validation():
    gate = HardConcreteGate((2,), 0.0, beta=0.5, gamma=-0.2, zeta=1.2)
    assert float(gate.deterministic()[0].detach()) == pytest.approx(0.5 * 1.4 - 0.2)
    with pytest.raises(ValueError):
        HardConcreteGate((2,), 0.0, gamma=0.1)
    with pytest.raises(ValueError):
        HardConcreteGate((2,), float("nan"))
