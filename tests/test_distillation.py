"""Knowledge distillation: softmax with temperature, the KD loss as a formula, its gradient, errors."""

import numpy as np
import pytest

import minicompress as mc
from minicompress import functional as F
from minicompress.distillation import kd_loss, softmax

RNG = np.random.default_rng(0)


def _np_softmax(z, T):
    e = np.exp(z / T - np.max(z / T, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------------
# softmax with temperature
# ---------------------------------------------------------------------------------------------------------------


def test_softmax_temperature_on_three_numbers():
    z = np.array([2.0, 1.0, 0.0])
    e = np.exp(np.array([1.0, 0.5, 0.0]))  # z / T with T = 2
    np.testing.assert_allclose(softmax(z, 2.0), e / e.sum(), rtol=1e-12)
    # T = 1 is the ordinary softmax; higher T is flatter (the max falls, the min rises)
    np.testing.assert_allclose(softmax(z, 1.0), np.exp(z) / np.exp(z).sum(), rtol=1e-12)
    assert softmax(z, 5.0)[0] < softmax(z, 2.0)[0] < softmax(z, 1.0)[0]
    assert softmax(z, 5.0)[2] > softmax(z, 2.0)[2] > softmax(z, 1.0)[2]


def test_softmax_is_stable_for_large_logits_and_small_T():
    z = np.array([[1000.0, 0.0, -1000.0], [3e4, 3e4, 0.0]], dtype=np.float32)
    p = softmax(z, 0.01)
    assert np.all(np.isfinite(p)) and p.dtype == np.float32
    np.testing.assert_allclose(p, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-7)


def test_large_T_makes_soft_targets_uniform():
    z = RNG.normal(scale=10.0, size=(6, 10))
    for T in (1e4, 1e6):
        np.testing.assert_allclose(softmax(z, T), np.full((6, 10), 0.1), atol=10 * np.abs(z).max() / T)
    # and the deviation from uniform shrinks like 1/T: p_i ~ (1 + (z_i - mean z) / T) / C
    T = 1e4
    np.testing.assert_allclose(softmax(z, T) - 0.1, (z - z.mean(axis=1, keepdims=True)) / T / 10, atol=2e-6)


def test_softmax_keeps_tensors_differentiable():
    z = mc.Tensor(RNG.normal(size=(3, 4)), requires_grad=True)
    p = softmax(z, 3.0)
    assert isinstance(p, mc.Tensor)
    np.testing.assert_allclose(p.data, _np_softmax(z.data, 3.0), rtol=1e-12)
    assert mc.gradcheck(lambda t: softmax(t, 3.0), [z.data.copy()])


# ---------------------------------------------------------------------------------------------------------------
# the loss as a formula
# ---------------------------------------------------------------------------------------------------------------


def _by_hand(z_s, z_t, y, T, alpha, scale_T2=True):
    """L = alpha * T^2 * mean_n sum_i p_i log(p_i / q_i) + (1 - alpha) * mean_n -log softmax(z_s)_y."""
    p, q = _np_softmax(z_t, T), _np_softmax(z_s, T)
    kl = np.mean(np.sum(p * np.log(p / q), axis=1))
    ce = np.mean(-np.log(_np_softmax(z_s, 1.0)[np.arange(len(y)), y]))
    return alpha * (T**2 if scale_T2 else 1.0) * kl + (1 - alpha) * ce


@pytest.mark.parametrize("T, alpha, scale_T2", [(1.0, 0.5, True), (4.0, 0.9, True), (4.0, 0.9, False),
                                                 (20.0, 1.0, True), (2.5, 0.0, True), (0.5, 0.3, True)])
def test_kd_loss_equals_the_formula(T, alpha, scale_T2):
    z_s, z_t = RNG.normal(scale=3, size=(8, 10)), RNG.normal(scale=3, size=(8, 10))
    y = RNG.integers(0, 10, size=8)
    loss = kd_loss(mc.Tensor(z_s), z_t, y, T, alpha, scale_T2=scale_T2)
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), _by_hand(z_s, z_t, y, T, alpha, scale_T2), rtol=1e-10)


def test_kd_loss_edge_weights():
    z_s, z_t = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))
    y = RNG.integers(0, 4, size=5)
    # alpha = 0: plain cross-entropy, the teacher is ignored
    np.testing.assert_allclose(kd_loss(z_s, z_t, y, 3.0, 0.0).item(), F.cross_entropy(mc.Tensor(z_s), y).item())
    # alpha = 1: labels are not needed; the student copying the teacher gives zero loss
    assert kd_loss(z_s, z_t, None, 3.0, 1.0).item() > 0
    assert abs(kd_loss(z_t, z_t, None, 3.0, 1.0).item()) < 1e-12
    # softmax ignores a constant shift of the logits, so does the soft term
    assert abs(kd_loss(z_t + 5.0, z_t, None, 3.0, 1.0).item()) < 1e-12


def test_kd_loss_matches_torch():
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    z_s, z_t = RNG.normal(scale=4, size=(16, 10)), RNG.normal(scale=4, size=(16, 10))
    y = RNG.integers(0, 10, size=16)
    for T, alpha in [(1.0, 0.5), (4.0, 0.9), (20.0, 0.7)]:
        ts, tt = torch.tensor(z_s, requires_grad=True), torch.tensor(z_t)
        kl = tF.kl_div(tF.log_softmax(ts / T, dim=1), tF.softmax(tt / T, dim=1), reduction="batchmean")
        ref = alpha * kl * T * T + (1 - alpha) * tF.cross_entropy(ts, torch.tensor(y))
        ref.backward()
        ours_s = mc.Tensor(z_s, requires_grad=True)
        ours = kd_loss(ours_s, z_t, y, T, alpha)
        ours.backward()
        np.testing.assert_allclose(ours.item(), ref.item(), rtol=1e-10)
        np.testing.assert_allclose(ours_s.grad, ts.grad.numpy(), rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# a partly labelled batch (transfer set): the hard term only where the label is known
# ---------------------------------------------------------------------------------------------------------------


def test_kd_loss_with_a_labelled_mask_on_concrete_numbers():
    # two samples, two classes; only sample 0 is labelled. Teacher = student logits, so the soft term is 0 and
    # L = (1 - alpha) * CE_0 / N with CE_0 = -log softmax([2, 0])_0 = log(1 + e^-2) = 0.126928
    z = np.array([[2.0, 0.0], [0.0, 1.0]])
    loss = kd_loss(mc.Tensor(z), z, np.array([0, 1]), 4.0, 0.75, labeled=np.array([True, False]))
    np.testing.assert_allclose(loss.item(), 0.25 * np.log1p(np.exp(-2.0)) / 2, rtol=1e-12)


def test_kd_loss_labelled_mask_equals_the_formula_and_torch():
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    z_s, z_t = RNG.normal(scale=3, size=(8, 10)), RNG.normal(scale=3, size=(8, 10))
    y = RNG.integers(0, 10, size=8)
    mask = np.array([True, False, False, True, True, False, True, False])
    y_unread = np.where(mask, y, -7)  # an unlabelled sample's target is never read
    T, alpha = 4.0, 0.9
    zs = mc.Tensor(z_s, requires_grad=True)
    loss = kd_loss(zs, z_t, y_unread, T, alpha, labeled=mask)
    loss.backward()
    ts = torch.tensor(z_s, requires_grad=True)
    kl = tF.kl_div(tF.log_softmax(ts / T, dim=1), tF.softmax(torch.tensor(z_t) / T, dim=1), reduction="batchmean")
    ce = tF.cross_entropy(ts, torch.tensor(np.where(mask, y, 0)), reduction="none")
    ref = alpha * T * T * kl + (1 - alpha) * (ce * torch.tensor(mask, dtype=ce.dtype)).sum() / len(y)
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-10)
    np.testing.assert_allclose(zs.grad, ts.grad.numpy(), rtol=1e-8, atol=1e-12)
    # all labelled is the plain loss; none labelled is the soft term alone
    full = kd_loss(z_s, z_t, y, T, alpha).item()
    assert kd_loss(z_s, z_t, y, T, alpha, labeled=np.ones(8, bool)).item() == pytest.approx(full, rel=1e-12)
    soft = alpha * kd_loss(z_s, z_t, None, T, 1.0).item()
    assert kd_loss(z_s, z_t, y_unread, T, alpha, labeled=np.zeros(8, bool)).item() == pytest.approx(soft, rel=1e-12)


def test_kd_loss_labelled_mask_gradcheck():
    z_t, y = RNG.normal(size=(4, 5)), RNG.integers(0, 5, size=4)
    mask = np.array([False, True, True, False])
    assert mc.gradcheck(lambda zs: kd_loss(zs, z_t, y, 3.0, 0.6, labeled=mask), [RNG.normal(size=(4, 5))])


@pytest.mark.parametrize("mask", [np.ones(3, bool), np.ones(4, int), [[True] * 4]])
def test_kd_loss_bad_labelled_mask(mask):
    z = RNG.normal(size=(4, 5))
    with pytest.raises(ValueError, match=r"kd_loss: labeled must be a bool mask of shape \(4,\)"):
        kd_loss(z, z, np.zeros(4, int), 2.0, 0.5, labeled=mask)


# ---------------------------------------------------------------------------------------------------------------
# the gradient (1/T)(q - p), and why T^2
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 3.0, 20.0])
def test_soft_term_gradient_is_q_minus_p_over_T(T):
    N = 6
    z_s, z_t = RNG.normal(scale=2, size=(N, 10)), RNG.normal(scale=2, size=(N, 10))
    q, p = _np_softmax(z_s, T), _np_softmax(z_t, T)
    for scale_T2, factor in [(False, 1.0), (True, T * T)]:
        zs = mc.Tensor(z_s, requires_grad=True)
        kd_loss(zs, z_t, None, T, 1.0, scale_T2=scale_T2).backward()
        # per sample (1/T)(q - p); the batch mean divides every sample's gradient by N
        np.testing.assert_allclose(zs.grad, factor * (q - p) / T / N, rtol=1e-9, atol=1e-15)


def test_T2_keeps_the_soft_gradient_on_one_scale():
    z_s, z_t = RNG.normal(size=(32, 10)), RNG.normal(size=(32, 10))

    def mean_abs_grad(T, scale_T2):
        zs = mc.Tensor(z_s, requires_grad=True)
        kd_loss(zs, z_t, None, T, 1.0, scale_T2=scale_T2).backward()
        return np.abs(zs.grad).mean()

    # without T^2 the gradient falls like 1/T^2 for large T; with it, it tends to a constant
    assert mean_abs_grad(20.0, False) / mean_abs_grad(40.0, False) == pytest.approx(4.0, rel=0.02)
    assert mean_abs_grad(20.0, True) / mean_abs_grad(40.0, True) == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("T, alpha, scale_T2", [(1.0, 0.5, True), (4.0, 0.9, True), (7.0, 1.0, False)])
def test_kd_loss_gradcheck(T, alpha, scale_T2):
    z_t = RNG.normal(size=(4, 5))
    y = RNG.integers(0, 5, size=4)
    assert mc.gradcheck(lambda zs: kd_loss(zs, z_t, y, T, alpha, scale_T2=scale_T2), [RNG.normal(size=(4, 5))])


def test_teacher_logits_get_no_gradient():
    zs = mc.Tensor(RNG.normal(size=(3, 4)), requires_grad=True)
    zt = mc.Tensor(RNG.normal(size=(3, 4)), requires_grad=True)
    kd_loss(zs, zt, np.array([0, 1, 2]), 2.0, 0.5).backward()
    assert zs.grad is not None and zt.grad is None


def test_kd_loss_keeps_float32():
    zs = mc.Tensor(RNG.normal(size=(3, 4)).astype(np.float32), requires_grad=True)
    loss = kd_loss(zs, RNG.normal(size=(3, 4)).astype(np.float32), np.array([0, 1, 2]), 4.0, 0.9)
    loss.backward()
    assert loss.dtype == np.float32 and zs.grad.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [0, -1.0, float("nan"), float("inf"), "4", None])
def test_bad_temperature(T):
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"kd_loss: temperature T must be a finite number > 0, got T="):
        kd_loss(z, z, np.array([0, 1]), T, 0.5)
    with pytest.raises(ValueError, match=r"softmax: temperature T"):
        softmax(z, T)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), None])
def test_bad_alpha(alpha):
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"kd_loss: alpha .* must be in \[0, 1\], got alpha="):
        kd_loss(z, z, np.array([0, 1]), 4.0, alpha)


def test_mismatched_logits():
    y = np.array([0, 1])
    with pytest.raises(ValueError, match=r"kd_loss: teacher has 10 classes but student has 5"):
        kd_loss(np.zeros((2, 5)), np.zeros((2, 10)), y, 4.0, 0.5)
    with pytest.raises(ValueError, match=r"kd_loss: teacher logits are for 3 samples but student logits for 2"):
        kd_loss(np.zeros((2, 5)), np.zeros((3, 5)), y, 4.0, 0.5)
    with pytest.raises(ValueError, match=r"kd_loss: student logits must be 2-D"):
        kd_loss(np.zeros(5), np.zeros(5), y, 4.0, 0.5)
    with pytest.raises(ValueError, match=r"kd_loss: targets .* needed when alpha < 1"):
        kd_loss(np.zeros((2, 5)), np.zeros((2, 5)), None, 4.0, 0.5)
    with pytest.raises(ValueError, match=r"cross_entropy: targets must have shape \(2,\)"):
        kd_loss(np.zeros((2, 5)), np.zeros((2, 5)), np.array([0, 1, 2]), 4.0, 0.5)
