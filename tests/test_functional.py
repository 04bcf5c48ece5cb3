"""Convolution, pooling, softmax, losses, dropout and batch norm: finite differences, naive loops, PyTorch."""

import numpy as np
import pytest

import minicompress as mc
from minicompress import functional as F
from minicompress import gradcheck, tensor

rng = np.random.default_rng(1)


def normal(*shape):
    return rng.standard_normal(shape)


# ---- naive loop oracles: slow, obviously right ---------------------------------------------------------------------


def conv2d_loops(x, w, b, stride, padding):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for s in range(n):
        for f in range(o):
            for i in range(ho):
                for j in range(wo):
                    patch = xp[s, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
                    out[s, f, i, j] = np.sum(patch * w[f]) + b[f]
    return out


def pool_loops(x, k, stride, reduce):
    n, c, h, wd = x.shape
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = reduce(x[:, :, i * stride : i * stride + k, j * stride : j * stride + k], axis=(2, 3))
    return out


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2), (3, 0)])
def test_conv2d_matches_loops_and_finite_differences(stride, padding):
    x, w, b = normal(2, 3, 7, 8), normal(4, 3, 3, 3), normal(4)
    np.testing.assert_allclose(F.conv2d(x, w, b, stride, padding).data, conv2d_loops(x, w, b, stride, padding),
                               rtol=1e-10, atol=1e-12)
    assert gradcheck(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride, padding), [x, w, b])


def test_conv2d_non_square_kernel_stride_padding():
    x, w, b = normal(2, 2, 6, 7), normal(3, 2, 3, 2), normal(3)
    assert gradcheck(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride=(1, 2), padding=(2, 0)), [x, w, b])


@pytest.mark.parametrize("k,stride", [(2, 2), (3, 2), (2, 1)])
def test_pooling_matches_loops_and_finite_differences(k, stride):
    x = normal(2, 3, 7, 7)
    np.testing.assert_allclose(F.max_pool2d(x, k, stride).data, pool_loops(x, k, stride, np.max))
    np.testing.assert_allclose(F.avg_pool2d(x, k, stride).data, pool_loops(x, k, stride, np.mean))
    assert gradcheck(lambda t: F.max_pool2d(t, k, stride), [x])
    assert gradcheck(lambda t: F.avg_pool2d(t, k, stride), [x])


def test_pooling_with_padding_gradients():
    x = normal(2, 2, 5, 5)
    assert gradcheck(lambda t: F.max_pool2d(t, 3, 2, 1), [x])
    assert gradcheck(lambda t: F.avg_pool2d(t, 3, 2, 1), [x])


def test_max_pool_tie_sends_gradient_to_the_first_maximum():
    x = tensor(np.zeros((1, 1, 2, 2)), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad[0, 0], [[1, 0], [0, 0]])


def test_conv_and_pool_against_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x, w, b = normal(2, 3, 9, 9), normal(5, 3, 3, 3), normal(5)
    tx, tw, tb = (tensor(a, requires_grad=True) for a in (x, w, b))
    px, pw, pb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    g = normal(2, 5, 4, 4)
    y = F.max_pool2d(F.conv2d(tx, tw, tb, stride=2, padding=1).relu(), 2, 1)
    y.backward(g)
    py = tf.max_pool2d(tf.conv2d(px, pw, pb, stride=2, padding=1).relu(), 2, 1)
    py.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, py.detach().numpy(), rtol=1e-10)
    for ours, theirs in ((tx, px), (tw, pw), (tb, pb)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(F.avg_pool2d(x, 3, 2, 1).data, tf.avg_pool2d(torch.tensor(x), 3, 2, 1).numpy())


def test_conv2d_bad_input_explains():
    with pytest.raises(ValueError, match=r"conv2d: input has 1 channels .* expects 3"):
        F.conv2d(np.ones((2, 1, 5, 5)), np.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: kernel 5x5 is larger than the padded input 4x4"):
        F.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 5, 5)))
    with pytest.raises(ValueError, match=r"conv2d: input must be 4-D"):
        F.conv2d(np.ones((1, 4, 4)), np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"max_pool2d: kernel \(3, 3\) is larger"):
        F.max_pool2d(np.ones((1, 1, 2, 2)), 3)


# ---- softmax family ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1.0, 0.5, 4.0])
def test_softmax_and_log_softmax_with_temperature(T):
    z = normal(3, 5)
    e = np.exp(z / T)
    np.testing.assert_allclose(F.softmax(z, T=T).data, e / e.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(F.log_softmax(z, T=T).data, np.log(e / e.sum(axis=1, keepdims=True)))
    assert gradcheck(lambda t: F.softmax(t, T=T), [z])
    assert gradcheck(lambda t: F.log_softmax(t, axis=0, T=T), [z])


def test_fused_softmax_agrees_with_the_simple_composite_and_survives_large_logits():
    z = normal(4, 6)
    np.testing.assert_allclose(F.softmax(z).data, F.softmax_simple(z).data)
    big = np.array([[1e4, 0.0, -1e4]], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(F.softmax_simple(big).data).any()  # exp(1e4) = inf, inf / inf = nan
    np.testing.assert_array_equal(F.softmax(big).data, [[1, 0, 0]])


def test_log_softmax_and_cross_entropy_finite_for_logits_of_1e4():
    z = tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], dtype=np.float32), requires_grad=True)
    logp = F.log_softmax(z)
    np.testing.assert_allclose(logp.data, [[0, -2e4, -1e4], [-2e4, 0, 5 - 1e4]])
    loss = F.cross_entropy(z, np.array([1, 1]))
    np.testing.assert_allclose(loss.data, 1e4)  # sample 0 has loss 2e4, sample 1 has 0
    loss.backward()
    assert np.isfinite(z.grad).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_formula_gradient_and_torch(reduction):
    z, y = normal(5, 4), np.array([0, 3, 1, 1, 2])
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    per_sample = -logp[np.arange(5), y]
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    np.testing.assert_allclose(F.cross_entropy(z, y, reduction).data, expected)
    assert gradcheck(lambda t: F.cross_entropy(t, y, reduction), [z])
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y), reduction=reduction)
    np.testing.assert_allclose(F.cross_entropy(z, y, reduction).data, ref.numpy())


def test_cross_entropy_bad_targets_explain():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="target 3 is out of range; classes are 0..2"):
        F.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class indices"):
        F.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"targets must have shape \(2,\)"):
        F.cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="empty batch"):
        F.cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert F.cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=int), reduction="sum").item() == 0
    with pytest.raises(ValueError, match="temperature T must be a finite number > 0"):
        F.softmax(z, T=0)


def test_kl_div_formula_gradient_and_torch():
    log_q = F.log_softmax(normal(3, 4)).data
    p = np.array([[0.5, 0.5, 0, 0], [0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0]])
    with np.errstate(divide="ignore"):
        pointwise = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - log_q), 0)
    np.testing.assert_allclose(F.kl_div(log_q, p).data, pointwise.sum() / 3)
    np.testing.assert_allclose(F.kl_div(log_q, p, "sum").data, pointwise.sum())
    assert gradcheck(lambda t: F.kl_div(t, p), [log_q])
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.kl_div(torch.tensor(log_q), torch.tensor(p), reduction="batchmean")
    np.testing.assert_allclose(F.kl_div(log_q, p).data, ref.numpy())


def test_mse_loss():
    a, b = normal(3, 2), normal(3, 2)
    np.testing.assert_allclose(F.mse_loss(a, b).data, ((a - b) ** 2).mean())
    assert gradcheck(lambda t, u: F.mse_loss(t, u, "sum"), [a, b])


# ---- dropout and batch norm ----------------------------------------------------------------------------------------


def test_dropout_keeps_the_expectation_and_is_identity_in_eval():
    mc.manual_seed(0)
    x = np.ones((200, 100), dtype=np.float32)
    y = F.dropout(x, 0.3, training=True).data
    assert set(np.unique(y)) == {0, np.float32(1 / 0.7)}
    assert abs((y == 0).mean() - 0.3) < 0.01
    assert abs(y.mean() - 1) < 0.02
    np.testing.assert_array_equal(F.dropout(x, 0.3, training=False).data, x)
    np.testing.assert_array_equal(F.dropout(x, 1.0).data, 0)

    def fixed_mask_dropout(t):
        mc.manual_seed(1)
        return F.dropout(t, 0.5)

    assert gradcheck(fixed_mask_dropout, [normal(4, 5)])
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        F.dropout(x, 1.5)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2)])
def test_batch_norm_train_and_eval_gradients(shape):
    x, gamma, beta = normal(*shape), normal(3), normal(3)
    assert gradcheck(lambda t, g, b: F.batch_norm(t, None, None, g, b, training=True), [x, gamma, beta])
    mean, var = np.abs(normal(3)), np.abs(normal(3)) + 0.5
    assert gradcheck(lambda t, g, b: F.batch_norm(t, mean, var, g, b, training=False), [x, gamma, beta])


def test_batch_norm_against_torch_including_running_statistics():
    torch = pytest.importorskip("torch")
    x, gamma, beta = normal(8, 3, 4, 4), normal(3), normal(3)
    rm, rv = np.zeros(3), np.ones(3)
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1)
    ref = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, torch.tensor(gamma), torch.tensor(beta),
                                         training=True, momentum=0.1)
    np.testing.assert_allclose(y.data, ref.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rm, trm.numpy())
    np.testing.assert_allclose(rv, trv.numpy())


def test_batch_norm_needs_more_than_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.ones((1, 3)), None, None, training=True)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: F.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), stride=0), r"conv2d: stride must be >= 1"),
        (lambda: F.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), padding=-1), r"conv2d: padding must be"),
        (lambda: F.max_pool2d(np.ones((1, 1, 4, 4)), 2, stride=0), r"max_pool2d: kernel_size and stride must be >= 1"),
        (lambda: F.avg_pool2d(np.ones((1, 1, 4, 4)), 2, padding=2), r"avg_pool2d: padding 2 must be at most half"),
        (lambda: F.batch_norm(np.ones((2, 3, 4)), None, None, training=True), r"batch_norm: input must be \(N, C\)"),
        (lambda: F.kl_div(np.zeros((2, 3)), np.zeros((2, 4))), r"kl_div: log_q has shape \(2, 3\) but p has \(2, 4\)"),
        (lambda: F.kl_div(np.zeros((2, 3)), np.zeros((2, 3)), "avg"), r"kl_div: reduction must be"),
        (lambda: F.mse_loss(np.zeros(2), np.zeros(2), "avg"), r"mse_loss: reduction must be one of"),
        (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), "avg"), r"cross_entropy: reduction must be"),
        (lambda: F.log_softmax(np.zeros((2, 3)), T=float("nan")), r"log_softmax: temperature T must be"),
    ],
)
def test_more_bad_arguments_explain(call, message):
    with pytest.raises(ValueError, match=message):
        call()
