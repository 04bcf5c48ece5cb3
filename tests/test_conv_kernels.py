"""The convolution kernels (banded and im2col) and the fused Conv -> ReLU -> MaxPool path against a naive loop,
finite differences, each other and PyTorch; ties in max pooling; hooks through the fused path of Sequential."""

import numpy as np
import pytest

from minicompress import data, gradcheck, models, nn, pruning, quantization
from minicompress import functional as F
from minicompress.tensor import Tensor

rng = np.random.default_rng(17)


def conv_loops(x, w, b, stride, padding):
    """y[n, o, h, w] = sum_{c, i, j} W[o, c, i, j] x_pad[n, c, s*h + i, s*w + j] + b[o], one output at a time."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, o, ho, wo), dtype=np.result_type(x, w))
    for s in range(n):
        for f in range(o):
            for i in range(ho):
                for j in range(wo):
                    out[s, f, i, j] = np.sum(xp[s, :, i * sh : i * sh + kh, j * sw : j * sw + kw] * w[f]) + b[f]
    return out


# (x shape, w shape, stride, padding): square and odd sizes, strides 1-3, padding, non-square kernels
CASES = [
    ((2, 3, 7, 8), (4, 3, 3, 3), (1, 1), (0, 0)),
    ((2, 3, 7, 8), (4, 3, 3, 2), (2, 1), (1, 2)),
    ((1, 2, 9, 6), (3, 2, 2, 3), (3, 3), (0, 0)),
    ((3, 1, 11, 11), (2, 1, 5, 5), (2, 2), (2, 2)),
    ((2, 2, 5, 5), (2, 2, 1, 1), (1, 2), (0, 1)),
]


def case_arrays(case, dtype=np.float64):
    x_shape, w_shape, stride, padding = case
    return (rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype),
            rng.standard_normal(w_shape[0]).astype(dtype), stride, padding)


@pytest.fixture(params=[64, 1], ids=["default-blocks", "most-blocks"])
def blocks(request, monkeypatch):
    """Run a test with the default width blocks, and again cutting the width into as many blocks as possible."""
    monkeypatch.setattr(F, "_BLOCK_MIN_COLUMNS", request.param)


def grads(fn, *arrays, upstream=None):
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    u = np.random.default_rng(0).standard_normal(out.shape).astype(out.dtype) if upstream is None else upstream
    out.backward(u)
    return out.data, [t.grad for t in tensors]


# ---- 1. banded = loop = im2col -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_banded_equals_loop_and_im2col_in_values_and_gradients(case, blocks):
    x, w, b, stride, padding = case_arrays(case)
    expected = conv_loops(x, w, b, stride, padding)
    banded, g_banded = grads(lambda *t: F.conv2d_banded(*t, stride, padding), x, w, b)
    im2col, g_im2col = grads(lambda *t: F.conv2d_im2col(*t, stride, padding), x, w, b)
    np.testing.assert_allclose(banded, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(im2col, expected, rtol=1e-12, atol=1e-12)
    for a, c in zip(g_banded, g_im2col):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:4])
def test_banded_finite_differences(case, blocks):
    x, w, b, stride, padding = case_arrays(case)
    assert gradcheck(lambda *t: F.conv2d_banded(*t, stride, padding), [x[:1], w, b])


def test_float32_stays_float32_and_matches_float64():
    x, w, b, stride, padding = case_arrays(CASES[1], np.float32)
    out, g = grads(lambda *t: F.conv2d_banded(*t, stride, padding), x, w, b)
    assert out.dtype == np.float32 and all(gi.dtype == np.float32 for gi in g)
    ref, g_ref = grads(lambda *t: F.conv2d_banded(*t, stride, padding), *(a.astype(np.float64) for a in (x, w, b)),
                       upstream=np.random.default_rng(0).standard_normal(out.shape))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for a, c in zip(g, g_ref):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)


def test_band_matrix_is_the_kernel_on_its_diagonals():
    """B[(i, c, v), (o, w)] = W[o, c, i, v - s*w] inside the band, 0 outside: the formula on concrete numbers."""
    w = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)  # rows [1, 2, 3] and [4, 5, 6]
    ctx = type("Ctx", (), {})()
    F._banded_forward(ctx, np.zeros((1, 1, 2, 5)), w, (1, 1), (0, 0), 1, 3, 1)
    assert ctx.band.tolist() == [[1, 0, 0], [2, 1, 0], [3, 2, 1], [0, 3, 2], [0, 0, 3],
                                 [4, 0, 0], [5, 4, 0], [6, 5, 4], [0, 6, 5], [0, 0, 6]]


def test_width_blocks_keep_64_columns_and_whole_pool_pairs():
    assert F._width_blocks(6, 28, 2) == 2  # LeNet-5 conv1: 2 blocks of 14 outputs, B has 6 * 14 = 84 columns
    assert F._width_blocks(16, 10, 2) == 1  # conv2: 5 blocks of 2 would leave 32 columns
    assert F._width_blocks(6, 28, 1) == 2 and F._width_blocks(64, 12, 2) == 6 and F._width_blocks(1, 5, 1) == 1


def test_conv2d_uses_the_banded_kernel_where_it_is_cheap():
    """Banded for narrow rows (padded width <= 8 kernel widths), im2col for wide ones; both give the same result."""
    assert F._banded_fits((64, 1, 28, 28), (6, 1, 5, 5), (2, 2), 28)  # LeNet-5's conv1: 32 <= 40
    assert not F._banded_fits((1, 1, 28, 28), (6, 1, 3, 3), (1, 1), 28)  # 30 > 24: im2col
    assert not F._banded_fits((1, 512, 20, 20), (512, 512, 3, 3), (0, 0), 18)  # band too large
    x, w, b = rng.standard_normal((1, 2, 30, 30)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    out = F.conv2d(Tensor(x, requires_grad=True), w, b)
    assert out._fn is F.Conv2dIm2col
    np.testing.assert_allclose(out.data, conv_loops(x, w, b, (1, 1), (0, 0)), rtol=1e-12, atol=1e-12)
    assert F.conv2d(Tensor(x[:, :, :10, :10], requires_grad=True), w, b)._fn is F.Conv2dBanded


def test_bad_input_names_the_function():
    with pytest.raises(ValueError, match=r"conv2d_banded: input has 1 channels .* expects 3"):
        F.conv2d_banded(np.ones((2, 1, 5, 5)), np.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d_relu_maxpool2d: the convolution output 1x3 is smaller than the 2x2"):
        F.conv2d_relu_maxpool2d(np.ones((1, 1, 3, 5)), np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d_relu_maxpool2d: stride must be >= 1"):
        F.conv2d_relu_maxpool2d(np.ones((1, 1, 6, 6)), np.ones((1, 1, 3, 3)), stride=0)


# ---- 2. fused Conv -> ReLU -> MaxPool(2) = the three functions -----------------------------------------------------


def unfused(x, w, b, stride, padding, relu):
    y = F.conv2d_im2col(x, w, b, stride, padding)
    return F.max_pool2d(y.relu() if relu else y, 2)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_fused_equals_unfused_in_values_and_gradients(case, relu, blocks):
    x, w, b, stride, padding = case_arrays(case)
    if min((x.shape[2 + a] + 2 * padding[a] - w.shape[2 + a]) // stride[a] + 1 for a in (0, 1)) < 2:
        pytest.skip("convolution output smaller than the pool")
    fused, g_fused = grads(lambda *t: F.conv2d_relu_maxpool2d(*t, stride, padding, relu), x, w, b)
    ref, g_ref = grads(lambda *t: unfused(*t, stride, padding, relu), x, w, b)
    np.testing.assert_allclose(fused, ref, rtol=1e-12, atol=1e-12)
    for a, c in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("relu", [True, False])
def test_fused_finite_differences_odd_sizes(relu, blocks):
    x, w, b, stride, padding = case_arrays(((1, 2, 8, 7), (3, 2, 2, 2), (1, 1), (1, 0)))  # 9x6 conv output
    assert gradcheck(lambda *t: F.conv2d_relu_maxpool2d(*t, stride, padding, relu), [x, w, b])


def test_fused_float32():
    x, w, b, stride, padding = case_arrays(((4, 1, 28, 28), (6, 1, 5, 5), (1, 1), (2, 2)), np.float32)
    fused, g_fused = grads(lambda *t: F.conv2d_relu_maxpool2d(*t, stride, padding), x, w, b)
    ref, g_ref = grads(lambda *t: unfused(*t, stride, padding, True), x, w, b)
    assert fused.dtype == np.float32 and all(g.dtype == np.float32 for g in g_fused)
    np.testing.assert_allclose(fused, ref, rtol=1e-5, atol=1e-5)
    for a, c in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-4)


# ---- 3. ties in max pooling: the first maximum in row-major order takes the gradient --------------------------------


def test_all_equal_windows_send_the_gradient_to_the_first_position_only():
    x, w, b = np.ones((1, 1, 5, 5)), np.ones((1, 1, 2, 2)), np.zeros(1)  # conv output 4x4, all 4: four-way ties
    up = np.ones((1, 1, 2, 2))
    _, (gx, gw, gb) = grads(lambda *t: F.conv2d_relu_maxpool2d(*t), x, w, b, upstream=up)
    _, g_ref = grads(lambda *t: unfused(*t, 1, 0, True), x, w, b, upstream=up)
    # the winners are the first members, conv outputs (0, 0), (0, 2), (2, 0), (2, 2); each read x[h:h+2, v:v+2]
    expected = np.zeros((5, 5))
    for h, v in [(0, 0), (0, 2), (2, 0), (2, 2)]:
        expected[h : h + 2, v : v + 2] += 1
    np.testing.assert_array_equal(gx[0, 0], expected)  # an equality mask would give 4x as much, spread around
    assert gw[0, 0].tolist() == [[4, 4], [4, 4]] and gb.tolist() == [4]
    for a, c in zip((gx, gw, gb), g_ref):
        np.testing.assert_array_equal(a, c)


def test_pair_ties_prefer_left_then_top():
    """Windows [[a, a], [a, a]], [[0, a], [a, a]], [[0, 0], [a, a]], [[0, 0], [0, a]]: the winner is the first a."""
    z = np.array([[1, 1, 0, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 1]], dtype=np.float64)  # a 2x8 conv output
    x, w = z[None, None], np.ones((1, 1, 1, 1))  # a 1x1 kernel of weight 1 passes z through
    _, (gx, _, _) = grads(lambda *t: F.conv2d_relu_maxpool2d(*t, relu=False), x, w, np.zeros(1),
                          upstream=np.array([[[[1.0, 2.0, 3.0, 4.0]]]]))
    assert gx[0, 0].tolist() == [[1, 0, 0, 2, 0, 0, 0, 0], [0, 0, 0, 0, 3, 0, 0, 4]]


def test_mnist_blank_background_matches_unfused_and_max_pool2d():
    images, _ = data.load_mnist()
    x = images[:8, None].astype(np.float64) / 255  # mostly exact zeros: whole windows tie
    w, b = rng.standard_normal((4, 1, 5, 5)), rng.standard_normal(4)
    fused, g_fused = grads(lambda *t: F.conv2d_relu_maxpool2d(*t, 1, 2), x, w, b)
    ref, g_ref = grads(lambda *t: unfused(*t, (1, 1), (2, 2), True), x, w, b)
    np.testing.assert_allclose(fused, ref, rtol=1e-12, atol=1e-12)
    for a, c in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-10)


# ---- 4. PyTorch ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES[1:4])
def test_banded_against_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b, stride, padding = case_arrays(case)
    out, g = grads(lambda *t: F.conv2d_banded(*t, stride, padding), x, w, b)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding)
    ty.backward(torch.tensor(np.random.default_rng(0).standard_normal(out.shape)))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for a, t in zip(g, (tx, tw, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_fused_against_torch_on_mnist_with_ties():
    torch = pytest.importorskip("torch")
    images, _ = data.load_mnist()
    x = images[:8, None].astype(np.float32) / 255
    w, b = (0.3 * rng.standard_normal((6, 1, 5, 5))).astype(np.float32), np.full(6, 0.01, dtype=np.float32)
    u = np.random.default_rng(0).standard_normal((8, 6, 14, 14)).astype(np.float32)
    out, g = grads(lambda *t: F.conv2d_relu_maxpool2d(*t, 1, 2), x, w, b, upstream=u)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(tx, tw, tb, 1, 2)), 2)
    ty.backward(torch.tensor(u))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    for a, t in zip(g, (tx, tw, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-4, atol=1e-4)


# ---- 5. Sequential's fused path: same model, same numbers, hooks respected -----------------------------------------


def model_grads(model, x, fuse):
    model.fuse = fuse
    model.zero_grad()
    out = model(x)
    out.backward(np.random.default_rng(0).standard_normal(out.shape).astype(out.dtype))
    return out.data, {name: p.grad.copy() for name, p in model.named_parameters()}


def assert_fused_equals_unfused(model, x, tol=1e-5):
    out, g = model_grads(model, x, True)
    out_ref, g_ref = model_grads(model, x, False)
    np.testing.assert_allclose(out, out_ref, rtol=tol, atol=tol)
    assert g.keys() == g_ref.keys()
    for name in g:
        np.testing.assert_allclose(g[name], g_ref[name], rtol=tol, atol=tol, err_msg=name)


def mnist_batch(n=16):
    return data.load_mnist()[0][:n, None].astype(np.float32) / 255


def test_sequential_recognises_the_chain():
    model = models.lenet5()
    assert [nn._fusable_chain(list(model), i) for i in range(len(model))][:6] == [3, 0, 0, 3, 0, 0]
    caffe = models.lenet5_caffe()  # Conv -> MaxPool without a ReLU
    assert [nn._fusable_chain(list(caffe), i) for i in (0, 2)] == [2, 2]
    strided = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, stride=1))
    assert nn._fusable_chain(list(strided), 0) == 0
    patched = models.lenet5()
    patched[3].forward = lambda x: F.conv2d(x, patched[3].weight)  # an instance's own forward is respected
    assert nn._fusable_chain(list(patched), 3) == 0
    assert patched(mnist_batch(2)).shape == (2, 10)


@pytest.mark.parametrize("spec", ["lenet5", "lenet5_caffe"])
def test_fused_model_equals_unfused_model(spec):
    assert_fused_equals_unfused(models.from_spec(spec), mnist_batch())


def test_pruning_masks_work_through_the_fused_path():
    model = models.lenet5()
    pruning.l1_unstructured(model[0], "weight", 0.5)
    pruning.l1_unstructured(model[3], "weight", 0.7)
    assert_fused_equals_unfused(model, mnist_batch())
    model.fuse = True
    model(mnist_batch()).sum().backward()
    assert np.all(model[3].weight_orig.grad[model[3].weight_mask.data == 0] == 0)  # pruned weights get no gradient


def test_shared_weights_and_input_hooks_work_through_the_fused_path():
    model = models.lenet5()
    quantization.share_weights(model[3], bits=3)  # a pre-hook rebuilds W = codebook[indices]
    model[0].register_forward_pre_hook(lambda module, inputs: (inputs[0] * 2,))  # a hook that changes the input
    assert_fused_equals_unfused(model, mnist_batch())
    doubled = models.lenet5()
    doubled.load_state_dict({k: v for k, v in model.state_dict().items() if "weight_" not in k}, strict=False)
    with pytest.raises(AssertionError):  # the input hook really ran: without it the output differs
        np.testing.assert_allclose(model(mnist_batch()).data, doubled(mnist_batch()).data)


def test_fake_quantized_conv_weight_through_the_fused_path():
    """A QAT-style hook: weight = fake_quantize(weight_orig) (4 bits, scale 0.02) before every forward."""
    model = models.lenet5()
    conv = model[3]
    w = conv.weight
    del conv.weight
    conv.weight_orig = w
    conv.register_forward_pre_hook(
        lambda m, inputs: setattr(m, "weight", quantization.fake_quantize(m.weight_orig, 0.02, 0, -8, 7)))
    assert_fused_equals_unfused(model, mnist_batch())
    assert len(np.unique(conv.weight.data)) <= 16


def test_hooks_on_relu_or_pool_leave_the_chain_unfused():
    model = models.lenet5()
    calls = []
    model[1].register_forward_pre_hook(lambda m, inputs: calls.append("relu"))
    model[5].register_forward_pre_hook(lambda m, inputs: calls.append("pool"))
    assert nn._fusable_chain(list(model), 0) == 0 and nn._fusable_chain(list(model), 3) == 0
    model(mnist_batch(2))
    assert calls == ["relu", "pool"]
