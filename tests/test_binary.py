"""Tests for minicompress.binary: sign and its straight-through gradients, binary layers, bit packing and the
XNOR-popcount product, packed models, save/load, callbacks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import binary, data, nn, optim, train
from minicompress import functional as F
from minicompress.checkpoint import CheckpointError, write_npz


def pm1(rng, shape, dtype=np.float32):
    """Random +-1 array."""
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(dtype)


# ---- sign and the straight-through estimator ------------------------------------------------------------------------


def test_sign_of_zero_is_plus_one_and_dtype_kept():
    x = np.array([-2.0, -1e-8, 0.0, -0.0, 1e-8, 3.0], dtype=np.float32)
    out = binary.sign(x)
    np.testing.assert_array_equal(out, [-1, -1, 1, 1, 1, 1])
    assert out.dtype == np.float32
    assert binary.sign(np.array([0.0])).dtype == np.float64
    assert binary.sign_ste(mc.tensor([0.0, -0.5])).data.tolist() == [1.0, -1.0]


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("ste", [0, 1, 1, 1, 1, 1, 0]),  # 1[|x| <= 1], including the edges |x| = 1
        ("identity", [1, 1, 1, 1, 1, 1, 1]),
        ("approxsign", [0, 0, 1, 2, 1, 0, 0]),  # 2 - 2|x| on [-1, 1]
    ],
)
def test_ste_gradient_on_concrete_numbers(variant, expected):
    x = mc.tensor(np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=np.float32), requires_grad=True)
    y = binary.sign_ste(x, variant)
    np.testing.assert_array_equal(y.data, [-1, -1, -1, 1, 1, 1, 1])
    g = np.arange(1, 8, dtype=np.float32)  # a non-uniform upstream gradient
    y.backward(g)
    np.testing.assert_allclose(x.grad, g * np.array(expected, dtype=np.float32))
    assert x.grad.dtype == np.float32


SURROGATES = {
    "ste": lambda x: np.clip(x, -1, 1),  # hard tanh
    "identity": lambda x: x,
    "approxsign": lambda x: np.where(np.abs(x) <= 1, 2 * x - x * np.abs(x), np.sign(x)),
}


@pytest.mark.parametrize("variant", binary.STE_VARIANTS)
def test_ste_backward_is_the_derivative_of_its_surrogate(variant):
    # the STE is exact for a smooth surrogate of sign: check backward against central differences of it
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=50)
    x = x[np.abs(np.abs(x) - 1) > 1e-3]  # away from the kinks at |x| = 1
    u = rng.standard_normal(x.shape)
    t = mc.tensor(x, requires_grad=True)
    binary.sign_ste(t, variant).backward(u)
    eps = 1e-6
    numeric = u * (SURROGATES[variant](x + eps) - SURROGATES[variant](x - eps)) / (2 * eps)
    np.testing.assert_allclose(t.grad, numeric, atol=1e-6)


def test_ste_matches_torch_hardtanh_gradient():
    # PyTorch's hardtanh passes the gradient only for |x| < 1 (0 at the edges x = +-1); minicompress uses
    # 1[|x| <= 1] as BinaryNet and Larq do (tested above), so the edges are left out here
    torch = pytest.importorskip("torch")
    x = np.linspace(-2, 2, 16)
    u = np.random.default_rng(0).standard_normal(16)
    t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.hardtanh(t).backward(torch.tensor(u))
    ours = mc.tensor(x, requires_grad=True)
    binary.sign_ste(ours).backward(u)
    np.testing.assert_allclose(ours.grad, t.grad.numpy())


def test_bad_ste_variant():
    with pytest.raises(ValueError, match="sign_ste: variant must be one of"):
        binary.sign_ste(np.ones(2), "tanh")
    with pytest.raises(ValueError, match="BinaryLinear: variant"):
        binary.BinaryLinear(2, 2, ste="nope")


# ---- XNOR-Net scaling -------------------------------------------------------------------------------------------


def test_alpha_is_mean_abs_per_output_channel():
    w = np.array([[0.5, -1.0, 0.0, 0.25], [-0.2, -0.2, 0.2, 0.2]], dtype=np.float32)
    np.testing.assert_allclose(binary.xnor_alpha(w), [0.4375, 0.2])
    conv_w = np.arange(-12, 12, dtype=np.float64).reshape(2, 3, 2, 2)
    np.testing.assert_allclose(binary.xnor_alpha(conv_w), [np.abs(conv_w[0]).mean(), np.abs(conv_w[1]).mean()])
    assert mc.gradcheck(binary.xnor_alpha, [np.random.default_rng(2).uniform(0.1, 1, (3, 4)) * [1, -1, 1, -1]])


# ---- layers ------------------------------------------------------------------------------------------------------


def test_binary_linear_formula_and_latent_gradient():
    rng = np.random.default_rng(3)
    layer = binary.BinaryLinear(6, 4, bias=True, xnor=True)
    layer.bias.data[:] = rng.standard_normal(4)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    w = layer.weight.data
    expected = x @ np.where(w >= 0, 1, -1).T * np.abs(w).mean(axis=1) + layer.bias.data
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-6, atol=1e-6)

    layer = binary.BinaryLinear(6, 4)  # no xnor: dL/dW = (G^T x) * 1[|W| <= 1] exactly
    layer.weight.data[0, :2] = [1.5, -3.0]  # outside the clip range: no gradient
    g = rng.standard_normal((5, 4)).astype(np.float32)
    layer(x).backward(g)
    expected_grad = (g.T @ x) * (np.abs(layer.weight.data) <= 1)
    np.testing.assert_allclose(layer.weight.grad, expected_grad, rtol=1e-5)
    assert np.all(layer.weight.grad[0, :2] == 0)


def test_bnn_linear_binarizes_its_input():
    rng = np.random.default_rng(4)
    layer = binary.BinaryLinear(9, 3, binary_activations=True)
    x = rng.standard_normal((4, 9)).astype(np.float32)
    x[0, 0] = 0.0
    out = layer(x).data
    np.testing.assert_array_equal(out, binary.sign(x) @ binary.sign(layer.weight.data).T)
    assert out.dtype == np.float32


@pytest.mark.parametrize("xnor", [False, True])
def test_gradcheck_binary_linear_in_input_and_bias(xnor):
    rng = np.random.default_rng(5)
    layer = binary.BinaryLinear(5, 3, bias=True, xnor=xnor)
    layer.weight.data = rng.uniform(-1, 1, (3, 5))  # float64 for the check
    layer.bias.data = rng.standard_normal(3)
    assert mc.gradcheck(lambda x: layer(x), [rng.standard_normal((2, 5))])
    g = rng.standard_normal((2, 3))
    layer.zero_grad()  # gradcheck's own backward left a gradient
    layer(rng.standard_normal((2, 5))).backward(g)
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=0))


@pytest.mark.parametrize("padding", [0, 1])
def test_binary_conv_against_torch_and_gradcheck(padding):
    rng = np.random.default_rng(6)
    layer = binary.BinaryConv2d(2, 3, 3, stride=2, padding=padding, bias=True, xnor=True, binary_activations=True)
    layer.bias.data[:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 7, 7)).astype(np.float32)
    w_b, alpha = binary.sign(layer.weight.data), np.abs(layer.weight.data).mean(axis=(1, 2, 3))
    out = layer(x).data
    assert out.shape == (2, 3, (7 + 2 * padding - 3) // 2 + 1, (7 + 2 * padding - 3) // 2 + 1)
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.conv2d(torch.tensor(binary.sign(x)), torch.tensor(w_b), stride=2, padding=padding)
    np.testing.assert_allclose(out, ref.numpy() * alpha[:, None, None] + layer.bias.data[:, None, None], rtol=1e-6)


def test_gradcheck_binary_conv_with_real_input():
    rng = np.random.default_rng(7)
    layer = binary.BinaryConv2d(2, 2, 3, padding=1, xnor=True)
    layer.weight.data = rng.uniform(-1, 1, layer.weight.shape)
    assert mc.gradcheck(lambda x: layer(x), [rng.standard_normal((1, 2, 4, 4))])


def test_layer_input_shape_errors():
    with pytest.raises(ValueError, match=r"BinaryLinear\(in_features=4\): expected input \(N, 4\)"):
        binary.BinaryLinear(4, 2)(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"BinaryConv2d\(in_channels=3\)"):
        binary.BinaryConv2d(3, 2, 3)(np.zeros((1, 1, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        binary.BinaryLinear(0, 2)


def test_clip_callback_keeps_latent_weights_in_range_during_fit():
    rng = np.random.default_rng(8)
    model = binary.binary_mlp([12, 8, 3])
    batches = [(rng.standard_normal((16, 12)).astype(np.float32), rng.integers(0, 3, 16)) for _ in range(4)]
    opt = optim.Adam(model.parameters(), lr=0.5)  # large steps push weights far past +-1
    train.fit(model, batches, 2, opt, callbacks=[binary.ClipLatentWeights()], progress=False)
    for _, layer in binary.binary_layers(model):
        assert np.abs(layer.weight.data).max() <= 1
        assert np.isclose(np.abs(layer.weight.data).max(), 1)  # some did hit the bound


def test_recorder_counts_sign_flips_and_histograms():
    model = binary.binary_mlp([4, 3, 2])
    rec = binary.LatentWeightRecorder(model, bins=4)
    name, layer = binary.binary_layers(model)[0]
    layer.weight.data[0] = -binary.sign(layer.weight.data[0]) * 0.5  # flip exactly 4 signs
    rec.on_epoch_end(model, 0, {})
    assert rec.flips[name] == [4]
    assert len(rec.histograms[name]) == 2 and rec.histograms[name][1].sum() == rec.n_weights[name] == 12
    rec.on_epoch_end(model, 1, {})
    assert rec.flips[name] == [4, 0]


def test_binary_mlp_structure_and_spec():
    bc = binary.binary_mlp([784, 16, 16, 10])
    assert [type(m).__name__ for m in bc] == [
        "Flatten", "BinaryLinear", "BatchNorm1d", "ReLU", "BinaryLinear", "BatchNorm1d", "ReLU", "BinaryLinear",
        "BatchNorm1d",
    ]  # fmt: skip
    bnn = binary.from_spec("mlp:784-16-16-10", binary_activations=True)
    assert [m.binary_activations for _, m in binary.binary_layers(bnn)] == [False, True, True]
    assert bnn.spec == "binary_mlp:784-16-16-10+act"
    assert binary.binary_layers(binary.from_spec(bnn.spec))[1][1].binary_activations
    assert bnn(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape == (2, 10)
    with pytest.raises(ValueError, match="binary.from_spec"):
        binary.from_spec("lenet5")
    with pytest.raises(ValueError, match="integers"):
        binary.from_spec("mlp:784-x-10")


# ---- bit packing and XNOR-popcount --------------------------------------------------------------------------------


def test_xnor_popcount_identity_on_8_element_vectors():
    a = np.array([1, -1, 1, 1, -1, -1, 1, -1])
    b = np.array([1, 1, -1, 1, -1, 1, 1, 1])
    a_bits, b_bits = binary.pack_signs(a), binary.pack_signs(b)
    assert a_bits.tolist() == [0b10110010] and b_bits.tolist() == [0b11010111]
    popcount = int(np.bitwise_count(a_bits ^ b_bits)[0])
    assert popcount == 4 and 8 - 2 * popcount == int(a @ b) == 0
    assert binary.xnor_matmul(a[None], b[None]).tolist() == [[0]]


@pytest.mark.parametrize("k", [1, 7, 8, 9, 63, 64, 65, 130])
def test_xnor_matmul_padding_edge_lengths(k):
    rng = np.random.default_rng(k)
    a, b = pm1(rng, (5, k)), pm1(rng, (3, k))
    out = binary.xnor_matmul(a, b)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, a @ b.T)
    np.testing.assert_array_equal(binary.xnor_matmul(np.ones((1, k)), -np.ones((1, k))), [[-k]])


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 9), n=st.integers(1, 9), k=st.integers(1, 300), seed=st.integers(0, 2**32 - 1),
    chunk=st.integers(1, 4),
)  # fmt: skip
def test_xnor_matmul_equals_float_matmul_exactly(m, n, k, seed, chunk):
    rng = np.random.default_rng(seed)
    a, b = pm1(rng, (m, k)), pm1(rng, (n, k))
    np.testing.assert_array_equal(binary.xnor_matmul(a, b), (a @ b.T).astype(np.int32))
    bits = binary.popcount_matmul(binary.pack_signs(a), binary.pack_signs(b), k, chunk_rows=chunk)
    np.testing.assert_array_equal(bits, a @ b.T)
    np.testing.assert_array_equal(binary.unpack_signs(binary.pack_signs(a), k), a)


def test_popcount_matmul_mask_skips_positions():
    rng = np.random.default_rng(9)
    a, b = pm1(rng, (4, 20)), pm1(rng, (3, 20))
    mask = rng.random((4, 20)) < 0.6
    expected = (a * mask) @ b.T
    out = binary.popcount_matmul(binary.pack_signs(a), binary.pack_signs(b), 20, mask_bits=np.packbits(mask, axis=1))
    np.testing.assert_array_equal(out, expected)


def test_packing_bad_inputs():
    with pytest.raises(ValueError, match=r"only \+1 and -1 .* found 0.5 at index \(1, 0\)"):
        binary.pack_signs(np.array([[1.0, -1.0], [0.5, 1.0]]))
    with pytest.raises(ValueError, match="found 0"):
        binary.xnor_matmul(np.array([[0, 1]]), np.array([[1, 1]]))
    with pytest.raises(ValueError, match=r"a has K=3 .* b has K=4"):
        binary.xnor_matmul(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="must be 2-D"):
        binary.xnor_matmul(np.ones(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match="empty input"):
        binary.xnor_matmul(np.ones((0, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="empty input"):
        binary.xnor_matmul(np.ones((2, 0)), np.ones((2, 0)))
    with pytest.raises(ValueError, match="nothing to pack"):
        binary.pack_signs(np.ones((3, 0)))
    with pytest.raises(ValueError, match=r"bits must be uint8 of shape \(4, 2\)"):
        binary.PackedBinaryLinear(9, 4, np.zeros((4, 1), dtype=np.uint8))


def test_packing_a_layer_with_non_binary_weights_fails():
    layer = binary.BinaryLinear(4, 2)
    layer.weight.data[:] = 0.3
    layer.binary_weight = lambda: layer.weight.data  # as if the forward used real weights
    with pytest.raises(ValueError, match=r"pack BinaryLinear: only \+1 and -1 .* found 0.3"):
        binary.PackedBinaryLinear.from_layer(layer)


def test_pack_model_rejects_unknown_layers():
    with pytest.raises(TypeError, match="layer 1 is a Sigmoid"):
        binary.pack_model(nn.Sequential(nn.Flatten(), nn.Sigmoid()))
    with pytest.raises(TypeError, match="expected an nn.Sequential"):
        binary.pack_model(binary.BinaryLinear(2, 2))


# ---- packed models ---------------------------------------------------------------------------------------------


def _trained_a_little(model, x, n_classes, rng):
    """Two Adam steps so batch norm statistics and latent weights are not at their initial values."""
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(2):
        loss = F.cross_entropy(model(x), rng.integers(0, n_classes, len(x)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        binary.clip_latent_weights(model)
    return model.eval()


@pytest.mark.parametrize("activations", [False, True])
@pytest.mark.parametrize("xnor", [False, True])
def test_packed_mlp_forward_equals_float_exactly_and_saves_losslessly(activations, xnor, tmp_path):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    model = _trained_a_little(binary.binary_mlp([784, 37, 20, 10], activations, xnor), x, 10, rng)
    with mc.no_grad():
        ref = model(x).data
    packed = binary.pack_model(model)
    np.testing.assert_array_equal(packed(x), ref)

    rows = packed.size_report()
    assert [r["weights"] for r in rows] == [784 * 37, 37 * 20, 20 * 10]
    assert [r["packed_bytes"] for r in rows] == [37 * 98, 20 * 5, 10 * 3]  # ceil(K / 8) bytes per row
    assert rows[0]["ratio"] == 32.0
    bn_bytes = 4 * 4 * (37 + 20 + 10)  # gamma, beta, running mean and variance in float32
    assert packed.nbytes == sum(r["packed_bytes"] + r["scale_bias_bytes"] for r in rows) + bn_bytes
    assert rows[0]["scale_bias_bytes"] == (4 * 37 if xnor else 0)

    binary.save(packed, tmp_path / "b.npz")
    loaded = binary.load(tmp_path / "b.npz")
    assert loaded.spec == model.spec
    for (_, p), (_, q) in zip(packed.packed_layers(), loaded.packed_layers()):
        assert q.bits.dtype == np.uint8 and np.array_equal(p.bits, q.bits)
    np.testing.assert_array_equal(loaded(x), ref)


@pytest.mark.parametrize("activations", [False, True])
def test_packed_conv_model_equals_float_exactly(activations, tmp_path):
    rng = np.random.default_rng(11)
    model = nn.Sequential(
        binary.BinaryConv2d(1, 4, 3, padding=1, binary_activations=activations, xnor=True), nn.BatchNorm2d(4),
        nn.MaxPool2d(2), binary.BinaryConv2d(4, 5, 3, stride=2, padding=1, binary_activations=True, bias=True),
        nn.BatchNorm2d(5), nn.Flatten(), binary.BinaryLinear(45, 3, binary_activations=True), nn.BatchNorm1d(3),
    )  # fmt: skip
    x = rng.standard_normal((8, 1, 12, 12)).astype(np.float32)
    model = _trained_a_little(model, x, 3, rng)
    with mc.no_grad():
        ref = model(x).data
    packed = binary.pack_model(model)
    np.testing.assert_array_equal(packed(x), ref)
    binary.save(packed, tmp_path / "c.npz")
    np.testing.assert_array_equal(binary.load(tmp_path / "c.npz")(x), ref)


def test_load_rejects_other_kinds_and_broken_layers(tmp_path):
    write_npz(tmp_path / "m.npz", {"w": np.zeros(2)}, {"kind": "model"})
    with pytest.raises(CheckpointError, match="expected 'binary'"):
        binary.load(tmp_path / "m.npz")
    layer = {"type": "PackedBinaryLinear", "binary_activations": True, "in_features": 9, "out_features": 2}
    write_npz(tmp_path / "b.npz", {"0.bits": np.zeros((2, 1), np.uint8)}, {"kind": "binary", "layers": [layer]})
    with pytest.raises(CheckpointError, match=r"layer 0 \(PackedBinaryLinear\) .* shape \(2, 2\)"):
        binary.load(tmp_path / "b.npz")


def test_binary_mlp_learns_mnist_subset_and_packed_model_agrees():
    x, y = data.load_mnist(None, "train")
    xt, yt = data.load_mnist(None, "test")
    train.set_seed(0)
    model = binary.binary_mlp([784, 64, 10], binary_activations=True)
    opt = optim.Adam(model.parameters(), lr=0.01)
    loader = data.DataLoader(x[:3000], y[:3000], batch_size=100, shuffle=True, seed=0)
    train.fit(model, loader, 2, opt, callbacks=[binary.ClipLatentWeights()], progress=False)
    test = data.DataLoader(xt, yt, batch_size=500)
    acc = train.evaluate(model, test, progress=False)
    assert acc > 0.75
    packed = binary.pack_model(model)
    packed_acc = np.mean(np.concatenate([packed(xb).argmax(1) == yb for xb, yb in test]))
    assert packed_acc == acc
