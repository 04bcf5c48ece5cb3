"""Quantization on layers and models: dynamic, static PTQ, QAT, integer-only kernels, weight sharing, sizes, save/load."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import checkpoint, models, nn, optim
from minicompress import functional as F
from minicompress import quantization
from minicompress import quantization as Q
from minicompress.data import load_mnist


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(np.float32)


def _small_cnn():
    mc.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 6 * 6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 10),
    )  # fmt: skip


def _with_bn_stats(model):
    bn = model[1]
    rng = np.random.default_rng(3)
    bn.running_mean.data[:] = rng.standard_normal(4) * 0.1
    bn.running_var.data[:] = rng.uniform(0.5, 2.0, 4)
    bn.weight.data[:] = rng.uniform(0.5, 1.5, 4)
    bn.bias.data[:] = rng.standard_normal(4) * 0.1
    return model.eval()


# --------------------------------------------------------------------------------------------------------------------
# dynamic quantization
# --------------------------------------------------------------------------------------------------------------------


def test_seed_example_quantize_dynamic_runs():
    mc.manual_seed(0)
    model = models.lenet300_100()
    inputs = _images(8)
    quantized_model = quantization.quantize_dynamic(model)
    out = quantized_model(inputs)
    assert out.shape == (8, 10)
    assert quantized_model.quantized_layers == ["1", "3", "5"]
    assert isinstance(model[1], nn.Linear)  # the original is untouched
    ref = model(inputs).data
    assert np.abs(out.data - ref).max() < 0.05 * np.abs(ref).max()


def test_dynamic_linear_formula():
    layer = nn.Linear(3, 2)
    layer.weight.data[:] = [[0.5, -1.0, 0.25], [1.0, 0.0, -0.5]]
    layer.bias.data[:] = [0.1, -0.2]
    d = Q.quantize_dynamic(layer)
    assert d.weight_scale[0] == np.float32(1.0) / np.float32(127.5)  # symmetric int8 per tensor
    # w / S = w * 127.49999 (1 / S in float32): -1.0 -> -127 (the code -128 stays unused), 0.5 -> 63.7 -> 64
    np.testing.assert_array_equal(d.weight_q, [[64, -127, 32], [127, 0, -64]])
    x = np.array([[0.0, 0.7, 2.0]], dtype=np.float32)  # S_x = 2/255, Z_x = 0: q_x = [0, 89, 255]
    acc = 89 * -127 + 255 * 32
    expected = np.float32(acc) * (np.float32(2.0) / np.float32(255) * d.weight_scale[0]) + np.float32(0.1)
    assert d(x).data[0, 0] == pytest.approx(expected, rel=1e-6)


def test_quantize_dynamic_matches_torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 30), torch.nn.ReLU(), torch.nn.Linear(30, 10))
    model = models.mlp([784, 30, 10])
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    tq = torch.ao.quantization.quantize_dynamic(tmodel)
    ours = Q.quantize_dynamic(model, reduce_range=True)  # fbgemm quantizes activations to 7 bits
    x = _images(16)
    t_out = tq(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours(x).data, t_out, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ours[1].weight_q, tq[1].weight().int_repr().numpy())


# --------------------------------------------------------------------------------------------------------------------
# static PTQ and QAT
# --------------------------------------------------------------------------------------------------------------------


def test_fold_batch_norm_preserves_outputs():
    model = _with_bn_stats(_small_cnn())
    x = _images(4)
    w, b = Q.fold_batch_norm(model[0].weight, model[0].bias, model[1])
    ref = model[1](model[0](x)).data
    np.testing.assert_allclose(F.conv2d(x, w, b, 1, 1).data, ref, atol=1e-5)
    prepared = Q.prepare(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    np.testing.assert_allclose(prepared(x).data, model(x).data, atol=1e-4)  # observers do not change values


def test_static_ptq_converts_to_integers_close_to_float():
    model = _with_bn_stats(_small_cnn())
    x = _images(32)
    prepared = Q.calibrate(Q.prepare(model), [x[:16], (x[16:], None)])
    qmodel = Q.convert(prepared)
    assert isinstance(qmodel[0], Q.Quantize) and isinstance(qmodel[-1], Q.DeQuantize)
    assert isinstance(qmodel[1], Q.QuantizedConv2d) and qmodel[1].relu
    assert qmodel[0].scale == np.float32(x.max()) / np.float32(255)  # input range [0, max]: S = max / 255
    hidden = qmodel[1](qmodel[0](x))
    assert hidden.q.dtype == np.uint8 and hidden.q.min() >= hidden.zero_point  # fused ReLU: q >= Z
    out, ref = qmodel(x).data, model(x).data
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max() + 0.05


def test_integer_model_matches_fake_quantized_model_within_one_step():
    model = _with_bn_stats(_small_cnn())
    x = _images(32)
    qat = Q.prepare_qat(model)
    qat(x)  # one training-mode pass sets the moving-average ranges
    qat.eval()
    fake = qat(x).data
    qmodel = Q.convert(qat)
    out = qmodel(x).data
    step = float(qmodel[-2].output_scale)
    assert np.abs(out - fake).max() <= step * (1 + 1e-5)
    assert np.mean(np.abs(out - fake) < step / 2) > 0.95  # nearly all outputs identical


def test_integer_linear_equals_exact_float64_reference():
    rng = np.random.default_rng(0)
    q_w = rng.integers(-128, 128, size=(5, 7)).astype(np.int8)
    s_w = rng.uniform(0.001, 0.01, 5).astype(np.float32)
    bias_q = rng.integers(-1000, 1000, 5).astype(np.int32)
    layer = Q.QuantizedLinear(q_w, s_w, 0, bias_q, np.float32(0.02), 7, np.float32(0.05), 3, 0, 255)
    x = Q.QTensor(rng.integers(0, 256, size=(20, 7)).astype(np.uint8), np.float32(0.02), np.int32(7), 0, 255)
    out = layer(x).q
    acc = (x.q.astype(np.int64) - 7) @ q_w.T.astype(np.int64) + bias_q  # exact integers
    M = np.float64(np.float32(0.02)) * s_w.astype(np.float64) / np.float64(np.float32(0.05))
    ref = np.clip(np.floor(acc * M + 0.5) + 3, 0, 255)  # float64 is exact enough away from ties
    np.testing.assert_array_equal(out, ref)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), stride=st.integers(1, 2), padding=st.integers(0, 2))
def test_integer_conv_equals_integer_loop_reference(seed, stride, padding):
    rng = np.random.default_rng(seed)
    q_w = rng.integers(-128, 128, size=(3, 2, 3, 3)).astype(np.int8)
    s_w = rng.uniform(0.001, 0.01, 3).astype(np.float32)
    layer = Q.QuantizedConv2d(q_w, s_w, 0, None, np.float32(0.02), 5, np.float32(0.1), 0, 0, 255,
                              stride=(stride, stride), padding=(padding, padding))
    q_x = rng.integers(0, 256, size=(2, 2, 6, 7)).astype(np.uint8)
    out = layer(Q.QTensor(q_x, np.float32(0.02), np.int32(5), 0, 255)).q
    xs = np.pad(q_x.astype(np.int64) - 5, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))
    ho, wo = out.shape[2:]
    acc = np.zeros(out.shape, dtype=np.int64)
    for i in range(ho):  # the naive loop oracle
        for j in range(wo):
            patch = xs[:, :, i * stride : i * stride + 3, j * stride : j * stride + 3]
            acc[:, :, i, j] = np.einsum("nchw,ochw->no", patch, q_w.astype(np.int64))
    expected = Q.requantize(acc.astype(np.int32), layer.M0[None, :, None, None], layer.n[None, :, None, None],
                            0, 0, 255, rounding="double")  # TFLite's CONV_2D rule
    np.testing.assert_array_equal(out, expected)


def test_qat_trains_through_fake_quantization():
    mc.manual_seed(0)
    model = models.mlp([784, 16, 10])
    images, labels = load_mnist(split="train")  # the embedded subset
    x, y = (images[:256, None] / 255).astype(np.float32), labels[:256]
    qat = Q.prepare_qat(model, bits=4)
    opt = optim.Adam(qat.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(qat(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in qat.parameters())
    assert losses[-1] < losses[0] * 0.75
    w_fq = qat[2]._weight().data  # at most 2^4 levels per output channel
    assert max(len(np.unique(row)) for row in w_fq) <= 16
    qmodel = Q.convert(qat.eval())
    assert qmodel[2].weight_q.min() >= -8 and qmodel[2].weight_q.max() <= 7
    agree = np.mean(qmodel(x).data.argmax(1) == qat(x).data.argmax(1))
    assert agree > 0.95  # the integer model predicts what the fake-quantized model predicts


def test_qat_from_calibrated_frozen_ranges():
    model = _with_bn_stats(_small_cnn())
    x = _images(16)
    qat = Q.prepare_qat(model, bits=4, init_batches=[x])
    ptq = Q.calibrate(Q.prepare(model, bits=4, observer=Q.MSEObserver), [x])
    frozen = [m.activation_post_process.calculate_qparams() for m in qat if hasattr(m, "activation_post_process")]
    wanted = [m.activation_post_process.calculate_qparams() for m in ptq if hasattr(m, "activation_post_process")]
    assert frozen == wanted
    qat(x * 3)  # a training-mode batch with a wider range does not move frozen ranges
    assert qat[0].activation_post_process.calculate_qparams() == wanted[0]


def test_avg_pool_on_integers_and_save_load(tmp_path):
    mc.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(3 * 14 * 14, 10))
    x = _images(8)
    qmodel = Q.quantize_static(model, [x])
    assert type(qmodel[2]) is Q.QuantizedAvgPool2d  # AvgPool2d subclasses MaxPool2d: must not become a max
    h = qmodel[1](qmodel[0](x))
    pooled = qmodel[2](h)
    exact = h.q.astype(np.float64).reshape(8, 3, 14, 2, 14, 2).mean(axis=(3, 5))
    # round(mean), ties away from the code 128 (int8 zero in TFLite's scheme)
    np.testing.assert_array_equal(pooled.q, 128 + np.sign(exact - 128) * np.floor(np.abs(exact - 128) + 0.5))
    Q.save_quantized(qmodel, tmp_path / "a.npz")
    np.testing.assert_array_equal(Q.load_quantized(tmp_path / "a.npz")(x).data, qmodel(x).data)


def test_prepare_rejects_what_it_cannot_quantize():
    with pytest.raises(TypeError, match="need an nn.Sequential"):
        Q.prepare(nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"layer 1 \(Tanh\) cannot be quantized"):
        Q.prepare(nn.Sequential(nn.Linear(3, 2), nn.Tanh()))
    with pytest.raises(ValueError, match="bits <= 8"):
        Q.prepare(nn.Sequential(nn.Linear(3, 2)), bits=16)
    with pytest.raises(TypeError, match="expects the output of prepare"):
        Q.convert(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(RuntimeError, match="no data observed"):
        Q.convert(Q.prepare(nn.Sequential(nn.Linear(3, 2))))
    qmodel = Q.convert(Q.calibrate(Q.prepare(nn.Sequential(nn.Linear(3, 2))), [np.ones((2, 3), np.float32)]))
    with pytest.raises(TypeError, match="QuantizedLinear: expects a QTensor"):
        qmodel[1](np.ones((2, 3)))
    with pytest.raises(ValueError, match="has no nn.Linear"):
        Q.quantize_dynamic(nn.Sequential(nn.ReLU()))


# --------------------------------------------------------------------------------------------------------------------
# weight sharing
# --------------------------------------------------------------------------------------------------------------------


def test_shared_weight_gradient_is_summed_per_cluster():
    idx = np.array([[0, 2, 1], [2, 2, -1]])
    mc.gradcheck(lambda c: Q.SharedWeight.apply(c, idx) * 1.0, [np.array([0.5, -1.0, 2.0])])
    c = mc.Tensor(np.array([0.5, -1.0, 2.0], dtype=np.float32), requires_grad=True)
    w = Q.SharedWeight.apply(c, idx)
    np.testing.assert_array_equal(w.data, [[0.5, 2.0, -1.0], [2.0, 2.0, 0.0]])
    w.backward(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    np.testing.assert_array_equal(c.grad, [1, 3, 2 + 4 + 5])  # the pruned entry (6) goes nowhere


def test_share_weights_finetunes_codebook_and_keeps_pruned_zeros():
    mc.manual_seed(0)
    model = models.mlp([784, 20, 10])
    model[1].weight.data[:, :100] = 0  # pruned
    x, y = _images(32), np.arange(32) % 10
    Q.share_model_weights(model, bits=3)
    layer = model[1]
    assert "weight" not in dict(layer.named_parameters()) and layer.weight_codebook.shape == (8,)
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = layer.weight_codebook.data.copy()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert not np.array_equal(layer.weight_codebook.data, before)
    model(x)
    w = layer.weight.data
    assert len(np.unique(w[:, 100:])) <= 8 and np.all(w[:, :100] == 0)
    stored = Q.export_shared(layer)
    np.testing.assert_array_equal(Q.import_shared(stored, w.shape), w)
    n_alive = 20 * 684
    assert Q.shared_nbytes(layer) == -(-n_alive * 3 // 8) + 8 * 4 + -(-20 * 784 // 8)  # indices + codebook + mask


def test_dense_shared_layer_size_matches_storage_ratio():
    layer = nn.Linear(64, 32)
    Q.share_weights(layer, bits=4)
    n = 64 * 32
    assert Q.shared_nbytes(layer) == n * 4 // 8 + 16 * 4
    assert 4 * n / Q.shared_nbytes(layer) == pytest.approx(Q.storage_ratio(n, 16))


# --------------------------------------------------------------------------------------------------------------------
# sizes and save / load
# --------------------------------------------------------------------------------------------------------------------


def test_nbytes_by_hand_and_lossless_save_load(tmp_path):
    mc.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 12), nn.ReLU(), nn.Linear(12, 10))
    x = _images(8)
    for bits, activation_bits in ((8, None), (4, None), (4, 8)):
        qmodel = Q.quantize_static(model, [x], bits=bits, activation_bits=activation_bits)
        assert qmodel[2].qmax == 2 ** (activation_bits or bits) - 1 and qmodel[2].weight_bits == bits
        # Quantize: S + Z; each layer: packed weights, S2 Z2 bias per channel, S1 Z1 S3 Z3
        expected = 8 + (784 * 12 * bits // 8 + 12 * 12 + 16) + (12 * 10 * bits // 8 + 10 * 12 + 16)
        assert Q.quantized_nbytes(qmodel) == expected
        path = tmp_path / f"q{bits}_{activation_bits}.npz"
        Q.save_quantized(qmodel, path)
        loaded = Q.load_quantized(path)
        np.testing.assert_array_equal(loaded(x).data, qmodel(x).data)
        for a, b in zip(qmodel, loaded):
            if hasattr(a, "weight_q"):
                np.testing.assert_array_equal(a.weight_q, b.weight_q)
                assert a.weight_q.dtype == b.weight_q.dtype
    assert Q.float_nbytes(model) == 4 * (784 * 12 + 12 + 12 * 10 + 10)


def test_dynamic_save_load(tmp_path):
    mc.manual_seed(0)
    qmodel = Q.quantize_dynamic(models.lenet5())
    Q.save_quantized(qmodel, tmp_path / "d.npz")
    loaded = Q.load_quantized(tmp_path / "d.npz")
    x = _images(4)
    np.testing.assert_array_equal(loaded(x).data, qmodel(x).data)
    assert loaded.quantized_layers == qmodel.quantized_layers
    checkpoint.save(models.lenet5(), tmp_path / "m.npz")
    with pytest.raises(checkpoint.CheckpointError, match="holds kind 'model', expected 'quantized'"):
        Q.load_quantized(tmp_path / "m.npz")
