"""Quantization arithmetic: formulas on concrete numbers, PyTorch agreement, properties, bad inputs, integer kernels."""
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minicompress as mc
from minicompress import quantization as Q

# --------------------------------------------------------------------------------------------------------------------
# formulas on concrete numbers
# --------------------------------------------------------------------------------------------------------------------


def test_seed_formula_round_w_times_255_is_scale_1_over_255():
    w = np.array([0.0, 0.2, 0.731, 0.93, 1.0], dtype=np.float32)
    scale, zero_point = Q.qparams(0.0, 1.0, bits=8, signed=False)
    assert (scale, zero_point) == (np.float32(1 / 255), 0)
    assert Q.qrange(8, signed=False) == (0, 255)
    q = Q.quantize(w, scale, zero_point, 0, 255)
    np.testing.assert_array_equal(q, np.round(w.astype(np.float64) * 255))
    np.testing.assert_array_equal(q, [0, 51, 186, 237, 255])
    np.testing.assert_allclose(Q.dequantize(q, scale, zero_point), q / 255, rtol=1e-6)
    # exact ties are where float32 shows: 1/255 rounds up in float32, so 1 / S = 254.99998 < 255 and
    # 0.5 * 255 = 127.5 (-> 128, half to even) becomes 127.49999 -> 127, as in PyTorch
    assert np.float32(1) / scale < 255
    assert np.round(np.float64(0.5) * 255) == 128 and Q.quantize(0.5, scale, zero_point, 0, 255) == 127


def test_ranges():
    assert Q.qrange(8) == (-128, 127)
    assert Q.qrange(8, signed=False) == (0, 255)
    assert Q.qrange(4) == (-8, 7)
    assert Q.qrange(2, signed=False) == (0, 3)
    assert Q.qrange(8, narrow_range=True) == (-127, 127)
    assert Q.qrange(16) == (-32768, 32767)


def test_affine_qparams_by_hand():
    # [-1, 3] on uint8: S = 4 / 255, Z = 0 - round(-1 / S) = round(63.75) = 64
    scale, zero_point = Q.qparams(-1.0, 3.0, signed=False)
    assert scale == np.float32(4.0) / np.float32(255)
    assert zero_point == 64
    # the range is widened to include 0: [2, 3] behaves as [0, 3]
    assert Q.qparams(2.0, 3.0, signed=False) == Q.qparams(0.0, 3.0, signed=False)
    # zero is exactly representable
    assert Q.dequantize(Q.quantize(0.0, scale, zero_point, 0, 255), scale, zero_point) == 0.0


def test_symmetric_and_narrow_range_qparams():
    scale, zero_point = Q.qparams(-0.5, 2.0, symmetric=True)
    assert (scale, zero_point) == (np.float32(2.0) / np.float32(127.5), 0)  # PyTorch: max|x| / ((qmax - qmin) / 2)
    scale, zero_point = Q.qparams(-0.5, 2.0, symmetric=True, narrow_range=True)
    assert (scale, zero_point) == (np.float32(2.0) / np.float32(127), 0)  # TFLite: max|w| / 127
    assert Q.qparams(-0.5, 2.0, symmetric=True, signed=False)[1] == 128


def test_round_half_to_even_and_clamp():
    q = Q.quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0]), 1.0, 0, -128, 127)
    np.testing.assert_array_equal(q, [0, 2, 2, 0, -2, 127, -128])
    assert q.dtype == np.int8
    assert Q.quantize([1.0], 1.0, 0, 0, 255).dtype == np.uint8


def test_per_channel_quantize_dequantize():
    w = np.array([[0.1, -0.2, 0.4], [10.0, -5.0, 2.5]], dtype=np.float32)
    qt = Q.quantize_tensor(w, bits=8, symmetric=True, axis=0)
    np.testing.assert_array_equal(qt.scale, np.float32([0.4, 10.0]) / np.float32(127.5))
    np.testing.assert_array_equal(qt.q, [[32, -64, 127], [127, -64, 32]])  # 0.4/S = 127.5 -> 128 -> clamped
    np.testing.assert_allclose(qt.dequantize(), w, atol=float(qt.scale.max()) / 2 + 1e-7)


def test_sixteen_and_two_bits():
    x = np.linspace(-1, 1, 101).astype(np.float32)
    for bits in (2, 16):
        qt = Q.quantize_tensor(x, bits=bits)
        assert qt.q.min() >= qt.qmin and qt.q.max() <= qt.qmax
        assert np.abs(qt.dequantize() - x).max() <= qt.scale / 2 * (1 + 1e-5)
    assert Q.quantize_tensor(x, bits=2).qmax == 1


def test_observers_by_hand():
    mm = Q.MinMaxObserver()
    mm(np.array([0.0, 2.0]))
    mm(np.array([-1.0, 1.0]))
    assert (mm.min_val, mm.max_val) == (-1.0, 2.0)
    ma = Q.MovingAverageMinMaxObserver(averaging_constant=0.01)
    ma(np.array([0.0, 2.0]))
    ma(np.array([-1.0, 4.0]))
    assert ma.min_val == np.float32(-0.01) and ma.max_val == np.float32(2.02)  # x <- x + c (X - x)
    pc = Q.PerChannelMinMaxObserver(axis=0)
    pc(np.array([[1.0, -2.0], [0.5, 0.25]]))
    np.testing.assert_array_equal(pc.min_val, [-2.0, 0.25])
    scale, zero_point = pc.calculate_qparams()
    np.testing.assert_array_equal(scale, np.float32([2.0, 0.5]) / np.float32(127.5))
    x = mm(np.ones(3))
    assert x is not None and mm.max_val == 2.0
    mm(np.zeros(0))  # empty batches are ignored, as in PyTorch
    assert mm.min_val == -1.0


def test_mse_observer_clips_outliers():
    x = np.concatenate([np.random.default_rng(0).standard_normal(20000), [60.0]]).astype(np.float32)
    obs = Q.MSEObserver(bits=4, signed=True, symmetric=True)
    obs(x)
    mse_scale, _ = obs.calculate_qparams()
    mm_scale, _ = Q.qparams(x.min(), x.max(), bits=4, symmetric=True)
    assert mse_scale < mm_scale / 4  # the lone outlier no longer dictates the grid

    def err(scale):
        q = Q.quantize(x, scale, 0, -8, 7)
        return np.mean((Q.dequantize(q, scale, 0) - x) ** 2)

    assert err(mse_scale) < err(mm_scale) / 4


def test_fake_quantize_staircase_and_ste_mask():
    x = mc.Tensor(np.array([-0.3, -0.04, 0.0, 0.26, 0.5, 2.6], dtype=np.float32), requires_grad=True)
    y = Q.fake_quantize(x, np.float32(0.1), 0, 0, 25)  # grid 0, 0.1, ..., 2.5
    np.testing.assert_allclose(y.data, [0.0, 0.0, 0.0, 0.3, 0.5, 2.5], atol=1e-7)
    y.backward(np.arange(1, 7, dtype=np.float32))
    # round(x / S) = -3, -0, 0, 3, 5, 26: the gradient passes only where qmin <= round(x/S)+Z <= qmax
    np.testing.assert_array_equal(x.grad, [0, 2, 3, 4, 5, 0])


def test_storage_ratio_formula():
    # r = n b / (n log2 k + k b): 1000 float32 weights, 16 clusters: 32000 / (4000 + 512)
    assert Q.storage_ratio(1000, 16) == pytest.approx(32000 / 4512)


def test_pack_bits_roundtrip_and_size():
    rng = np.random.default_rng(0)
    for bits in (1, 2, 3, 4, 5, 7, 8, 16):
        v = rng.integers(0, 2**bits, size=1001)
        packed = Q.pack_bits(v, bits)
        assert packed.nbytes == -(-1001 * bits // 8)
        np.testing.assert_array_equal(Q.unpack_bits(packed, bits, 1001), v)


def test_kmeans_linear_init_and_convergence():
    w = np.array([0.0, 0.1, 0.2, 2.4, 2.5, 2.6, 5.0], dtype=np.float32)
    codebook, idx = Q.kmeans_1d(w, 3)  # linear init 0, 2.5, 5 -> means of the three groups
    np.testing.assert_allclose(codebook, [0.1, 2.5, 5.0], rtol=1e-6)
    np.testing.assert_array_equal(idx, [0, 0, 0, 1, 1, 1, 2])
    # linear init can leave a cluster empty: it keeps its initial value (here 2.5) and nothing moves any more
    codebook, idx = Q.kmeans_1d(np.array([0.0, 0.1, 0.2, 1.0, 1.1, 1.2, 5.0]), 3)
    np.testing.assert_allclose(codebook, [0.6, 2.5, 5.0], rtol=1e-6)
    np.testing.assert_array_equal(idx, [0, 0, 0, 0, 0, 0, 2])


# --------------------------------------------------------------------------------------------------------------------
# integer arithmetic
# --------------------------------------------------------------------------------------------------------------------


def test_float32_matmul_limit_of_exactness():
    a, b = np.array([[4096, 1]]), np.array([[4096], [1]])  # 2^24 + 1 is not a float32
    assert (a.astype(np.float32) @ b.astype(np.float32))[0, 0] == 2**24  # the naive float32 product is wrong
    assert Q.exact_block_size(4096, 4096, np.float32) == 1
    assert Q.int_matmul(a, b, engine=np.float32)[0, 0] == 2**24 + 1  # one product per block: exact
    assert Q.int_matmul(a, b)[0, 0] == 2**24 + 1
    big = np.array([[2**26, 1]]), np.array([[2**27], [1]])  # 2^53 + 1: not a float64 either
    assert (big[0].astype(np.float64) @ big[1].astype(np.float64))[0, 0] == 2**53
    assert Q.int_matmul(*big)[0, 0] == 2**53 + 1  # falls back to NumPy int64 (exact, no BLAS)
    # int8 x uint8 (minus zero point): 514 products of 128 * 255 fit in float32 exactly
    assert Q.exact_block_size(255, 128, np.float32) == 514


def test_int_matmul_blocks_equal_integer_matmul():
    rng = np.random.default_rng(0)
    a = rng.integers(-255, 256, size=(17, 2000))
    b = rng.integers(-128, 128, size=(2000, 9))
    exact = a.astype(np.int64) @ b.astype(np.int64)
    out = Q.int_matmul(a, b)
    assert out.dtype == np.int32  # 2000 * 255 * 128 < 2^31
    np.testing.assert_array_equal(out, exact)
    a_big = np.full((1, 40000), 255)
    b_big = np.full((40000, 1), 255)
    assert Q.int_matmul(a_big, b_big).dtype == np.int64  # int32 would overflow: 40000 * 255^2 > 2^31


def test_quantize_multiplier_and_requantize_exactly():
    for M in (0.75, 0.1, 3.0e-4, 1.0, 2.5):
        M0, n = Q.quantize_multiplier(M)
        assert 2**30 <= M0 < 2**31
        assert abs(float(M0) * 2.0 ** -(31 + int(n)) - M) <= M * 2.0**-31
    M0, n = Q.quantize_multiplier(0.75)
    assert (M0, n) == (3 * 2**29, 0)  # 0.75 = 0.75 * 2^0
    acc = np.array([1, 2, 3, -3, 1000, -1000, 10**6], dtype=np.int32)
    # round(0.75 * acc) with ties up: 0.75 -> 1, 1.5 -> 2, 2.25 -> 2, -2.25 -> -2, 750, -750, clamp 127
    np.testing.assert_array_equal(Q.requantize(acc, M0, n, 0, -128, 127), [1, 2, 2, -2, 127, -128, 127])
    np.testing.assert_array_equal(Q.requantize(acc[:4], M0, n, 10, 0, 255), [11, 12, 12, 8])


@settings(max_examples=60, deadline=None)
@given(acc=hnp.arrays(np.int32, st.integers(1, 20), elements=st.integers(-(2**31) + 1, 2**31 - 1)),
       M=st.floats(1e-6, 100.0))
def test_requantize_equals_exact_rational_rounding(acc, M):
    M0, n = Q.quantize_multiplier(M)
    got = Q.requantize(acc, M0, n, 0, -(2**31), 2**31 - 1)
    for a, g in zip(acc.tolist(), got.tolist()):
        exact = Fraction(a * int(M0), 2 ** (31 + int(n)))
        want = int((exact + Fraction(1, 2)).__floor__())  # round half up
        assert g == max(-(2**31), min(2**31 - 1, want))


# --------------------------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------------------------

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=80, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 40), elements=finite), bits=st.integers(2, 8),
       symmetric=st.booleans())
def test_roundtrip_error_at_most_half_a_step_and_zero_exact(x, bits, symmetric):
    qt = Q.quantize_tensor(x, bits=bits, symmetric=symmetric, signed=symmetric)
    S, Z = np.float64(qt.scale), int(qt.zero_point)
    lo, hi = S * (qt.qmin - Z), S * (qt.qmax - Z)  # the representable range
    inside = (x >= lo) & (x <= hi)
    err = np.abs(qt.dequantize().astype(np.float64) - x)
    assert np.all(err[inside] <= S / 2 * (1 + 1e-5) + 1e-6 * np.abs(x[inside]))
    assert Q.dequantize(Q.quantize(np.float32(0.0), qt.scale, qt.zero_point, qt.qmin, qt.qmax),
                        qt.scale, qt.zero_point) == 0.0


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 5), k=st.integers(1, 700), n=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_int_matmul_equals_integer_reference(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-255, 256, size=(m, k))
    b = rng.integers(-128, 128, size=(k, n))
    np.testing.assert_array_equal(Q.int_matmul(a.astype(np.float32), b), a @ b)


# --------------------------------------------------------------------------------------------------------------------
# bad inputs and degenerate tensors
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 1, 17, 8.0, True, "8"])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match=r"bits must be an integer in \[2, 16\]"):
        Q.qrange(bits)
    with pytest.raises(ValueError, match="bits"):
        Q.quantize_tensor(np.ones(3), bits=bits)


def test_nan_inf_empty_and_min_greater_than_max():
    with pytest.raises(ValueError, match="quantize: x must be finite, found nan"):
        Q.quantize(np.array([1.0, np.nan]), 0.1, 0, 0, 255)
    with pytest.raises(ValueError, match="finite"):
        Q.quantize_tensor(np.array([np.inf, 1.0]))
    with pytest.raises(ValueError, match="MinMaxObserver: input must be finite"):
        Q.MinMaxObserver()(np.array([np.nan]))
    with pytest.raises(ValueError, match="empty"):
        Q.quantize_tensor(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="min_val must be <= max_val, got min 2.0 > max 1.0"):
        Q.qparams(2.0, 1.0)
    with pytest.raises(RuntimeError, match="no data observed"):
        Q.MinMaxObserver().calculate_qparams()
    with pytest.raises(ValueError, match="scale must be > 0"):
        Q.quantize([1.0], 0.0, 0, 0, 255)
    with pytest.raises(ValueError, match="needs axis"):
        Q.quantize(np.ones((2, 2)), np.ones(2), np.zeros(2), 0, 255)


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_tensor_gets_valid_scale(value):
    x = np.full(10, value, dtype=np.float32)
    for symmetric in (False, True):
        qt = Q.quantize_tensor(x, symmetric=symmetric)
        assert np.isfinite(qt.scale) and qt.scale > 0
        np.testing.assert_allclose(qt.dequantize(), x, atol=float(qt.scale) / 2 + 1e-7)
    assert Q.qparams(0.0, 0.0)[0] == np.finfo(np.float32).eps  # all zeros: eps, not 0 / 0


# --------------------------------------------------------------------------------------------------------------------
# agreement with PyTorch (skipped when torch is not installed)
# --------------------------------------------------------------------------------------------------------------------


def _torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    return torch


def test_qparams_match_torch_minmax_observer():
    torch = _torch()
    rng = np.random.default_rng(0)
    obs = torch.ao.quantization
    for _ in range(12):
        x = (rng.standard_normal(64) * rng.uniform(0.01, 10) + rng.uniform(-3, 3)).astype(np.float32)
        for dtype, signed in ((torch.quint8, False), (torch.qint8, True)):
            for qscheme, sym in ((torch.per_tensor_affine, False), (torch.per_tensor_symmetric, True)):
                o = obs.MinMaxObserver(dtype=dtype, qscheme=qscheme)
                o(torch.from_numpy(x))
                s, z = o.calculate_qparams()
                assert Q.qparams(x.min(), x.max(), 8, sym, signed) == (np.float32(s.item()), z.item())
    o = obs.MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=15)  # 4 bits
    o(torch.from_numpy(x))
    s, z = o.calculate_qparams()
    assert Q.qparams(x.min(), x.max(), 4, signed=False) == (np.float32(s.item()), z.item())
    o = obs.MovingAverageMinMaxObserver(averaging_constant=0.01)
    ours = Q.MovingAverageMinMaxObserver(averaging_constant=0.01, bits=8)
    for _ in range(5):
        x = rng.standard_normal(100).astype(np.float32)
        o(torch.from_numpy(x))
        ours(x)
    assert ours.calculate_qparams() == (np.float32(o.calculate_qparams()[0].item()), o.calculate_qparams()[1].item())


def test_quantize_per_tensor_and_per_channel_match_torch():
    torch = _torch()
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(10000) * 2).astype(np.float32)
    scale, zp = Q.qparams(x.min(), x.max(), signed=False)
    tq = torch.quantize_per_tensor(torch.from_numpy(x), float(scale), int(zp), torch.quint8)
    ours = Q.quantize(x, scale, zp, 0, 255)
    # fbgemm's vectorised kernel rounds x/S + Z, ours rounds x/S then adds Z: they may differ only on exact ties
    differ = tq.int_repr().numpy() != ours
    assert np.all(np.abs(x[differ] * (np.float32(1) / scale) % 1 - 0.5) == 0)
    np.testing.assert_array_equal(tq.dequantize().numpy()[~differ], Q.dequantize(ours, scale, zp)[~differ])
    w = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    o = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8,
                                                       qscheme=torch.per_channel_symmetric)
    o(torch.from_numpy(w))
    ts, tz = o.calculate_qparams()
    s, z = Q.qparams(w.min(axis=(1, 2, 3)), w.max(axis=(1, 2, 3)), symmetric=True)
    np.testing.assert_array_equal(s, ts.numpy())
    np.testing.assert_array_equal(z, tz.numpy())
    tq = torch.quantize_per_channel(torch.from_numpy(w), ts, tz, 0, torch.qint8)
    np.testing.assert_array_equal(Q.quantize(w, s, z, -128, 127, axis=0), tq.int_repr().numpy())
    np.testing.assert_array_equal(Q.dequantize(tq.int_repr().numpy(), s, z, axis=0), tq.dequantize().numpy())


def test_fake_quantize_values_and_gradients_match_torch():
    torch = _torch()
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(500) * 3).astype(np.float32)
    g = rng.standard_normal(500).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.fake_quantize_per_tensor_affine(xt, 0.02, 10, 0, 255)
    yt.backward(torch.from_numpy(g))
    xm = mc.Tensor(x, requires_grad=True)
    ym = Q.fake_quantize(xm, np.float32(0.02), 10, 0, 255)
    ym.backward(g)
    np.testing.assert_array_equal(ym.data, yt.detach().numpy())
    np.testing.assert_array_equal(xm.grad, xt.grad.numpy())
    w = rng.standard_normal((4, 30)).astype(np.float32) * 2
    s = np.float32([0.01, 0.02, 0.005, 0.03])
    z = np.int32([0, 1, -3, 2])
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.fake_quantize_per_channel_affine(wt, torch.from_numpy(s), torch.from_numpy(z), 0, -128, 127)
    yt.backward(torch.ones_like(yt))
    wm = mc.Tensor(w, requires_grad=True)
    ym = Q.fake_quantize(wm, s, z, -128, 127, axis=0)
    ym.backward(np.ones_like(w))
    np.testing.assert_array_equal(ym.data, yt.detach().numpy())
    np.testing.assert_array_equal(wm.grad, wt.grad.numpy())
