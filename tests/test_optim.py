"""Optimizers and schedules: the update rules on concrete numbers and against torch.optim."""

import math

import numpy as np
import pytest

from minicompress import nn, optim


def quadratic_grads(params):
    """Gradient of sum(p^2 * k) with k = 1, 2, 3...: deterministic and different per entry."""
    for p in params:
        p.grad = 2 * p.data * np.arange(1, p.size + 1, dtype=p.dtype).reshape(p.shape)


def test_sgd_momentum_formula_by_hand():
    p = nn.Parameter(np.array([1.0], dtype=np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    p.grad = np.array([0.5], dtype=np.float32)
    opt.step()  # g = 0.5 + 0.01 * 1 = 0.51; v = g; p = 1 - 0.1 * 0.51
    np.testing.assert_allclose(p.data, [1 - 0.051], rtol=1e-6)
    p.grad = np.array([0.5], dtype=np.float32)
    opt.step()  # g = 0.5 + 0.01 * 0.949; v = 0.9 * 0.51 + g
    g = 0.5 + 0.01 * 0.949
    np.testing.assert_allclose(p.data, [0.949 - 0.1 * (0.9 * 0.51 + g)], rtol=1e-6)


def test_adam_formula_by_hand_first_step_moves_by_lr():
    p = nn.Parameter(np.array([1.0, -1.0], dtype=np.float32))
    opt = optim.Adam([p], lr=0.01)
    p.grad = np.array([3.0, -0.2], dtype=np.float32)
    opt.step()  # m_hat = g, v_hat = g^2: the step is lr * sign(g) (up to eps)
    np.testing.assert_allclose(p.data, [0.99, -0.99], rtol=1e-6)
    assert p.dtype == np.float32


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.1)),
        ("SGD", dict(lr=0.05, momentum=0.9)),
        ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
        ("Adam", dict(lr=0.01)),
        ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=1e-2)),
    ],
)
def test_optimizers_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    start = np.random.default_rng(0).standard_normal((3, 2))
    ours = [nn.Parameter(start.copy())]
    theirs = [torch.tensor(start.copy(), requires_grad=True)]
    opt, ref = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    for _ in range(5):
        quadratic_grads(ours)
        theirs[0].grad = torch.tensor(quadratic_grads_array(theirs[0].detach().numpy()))
        opt.step()
        ref.step()
    np.testing.assert_allclose(ours[0].data, theirs[0].detach().numpy(), rtol=1e-10, atol=1e-12)


def quadratic_grads_array(a):
    return 2 * a * np.arange(1, a.size + 1).reshape(a.shape)


def test_optimizer_skips_params_without_grad_and_zero_grad_clears():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.SGD([a, b], lr=1.0)
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(a.data, 0)
    np.testing.assert_array_equal(b.data, 1)
    opt.zero_grad()
    assert a.grad is None


def test_schedules_follow_their_formulas():
    p = nn.Parameter(np.ones(1))
    opt = optim.SGD([p], lr=0.1)
    step = optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        step.step()
        lrs.append(step.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [0.1, 0.05, 0.05, 0.025, 0.025])
    opt = optim.SGD([p], lr=0.1)
    cosine = optim.CosineAnnealingLR(opt, T_max=4)
    for epoch in range(1, 5):
        cosine.step()
        assert math.isclose(cosine.get_last_lr()[0], 0.05 * (1 + math.cos(math.pi * epoch / 4)))


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    ours = optim.SGD([nn.Parameter(np.ones(1))], lr=0.1)
    theirs = torch.optim.SGD([torch.ones(1, requires_grad=True)], lr=0.1)
    a, b = optim.CosineAnnealingLR(ours, T_max=7, eta_min=0.01), torch.optim.lr_scheduler.CosineAnnealingLR(theirs, 7, 0.01)
    for _ in range(7):
        theirs.step()
        a.step()
        b.step()
        assert math.isclose(a.get_last_lr()[0], b.get_last_lr()[0], rel_tol=1e-9)


def test_bad_hyper_parameters_explain():
    p = [nn.Parameter(np.ones(1))]
    with pytest.raises(ValueError, match="SGD: lr must be a finite number >= 0, got -1"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"Adam: betas must be in \[0, 1\)"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive int, got 0"):
        optim.StepLR(optim.SGD(p, lr=0.1), 0)
