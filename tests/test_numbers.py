"""Issue 13, "nothing silent": bad numbers get a clear error, never a NaN or a wrong answer (quantization,
distillation, gradual pruning, bit packing); degenerate cases (zero, constant, extreme) are handled on purpose."""
import re

import numpy as np
import pytest

from minicompress import binary, distillation, models, nn
from minicompress import pruning as prune
from minicompress import quantization as Q
from minicompress.tensor import Tensor

F32_MAX = float(np.finfo(np.float32).max)

# ---- quantization ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("signed", [True, False])
def test_quantize_tensor_over_almost_all_of_float32_is_finite(symmetric, signed):
    x = np.array([-3e38, -1e38, 0.0, 1e38, 3e38], dtype=np.float32)
    t = Q.quantize_tensor(x, symmetric=symmetric, signed=signed)
    assert np.isfinite(t.scale) and 0 < t.scale < F32_MAX
    r = t.dequantize()
    assert np.all(np.isfinite(r))
    assert np.all(np.abs(r - x) <= t.scale / 2 * (1 + 1e-4))  # every value within half a step, as for small ranges
    assert r[2] == 0.0  # zero stays exactly representable


def test_qparams_wide_range_takes_the_float64_scale_and_keeps_pytorch_float32_elsewhere():
    scale, zero_point = Q.qparams(-3e38, 3e38)
    assert scale == np.float32(6e38 / 255) and zero_point == 0
    assert Q.qparams(-1.0, 2.0) == (np.float32(np.float32(3.0) / np.float32(255)), -43)


@pytest.mark.parametrize("fn", ["quantize", "dequantize", "fake_quantize"])
@pytest.mark.parametrize("scale", [np.nan, np.inf, -np.inf, 0.0, -0.1, 1e-45, np.array([0.1, np.nan])])
def test_non_finite_zero_negative_or_tiny_scales_are_refused(fn, scale):
    axis = 0 if np.ndim(scale) else None
    args = {"quantize": (np.ones((2, 3)), scale, 0, -128, 127), "dequantize": (np.ones((2, 3), np.int8), scale, 0),
            "fake_quantize": (np.ones((2, 3)), scale, 0, -128, 127)}[fn]
    with pytest.raises(ValueError, match=f"{fn}: scale must be > 0, finite and large enough for 1 / S to fit "
                                         r"float32 \(S >= 2.94e-39\), got"):
        getattr(Q, fn)(*args, axis=axis)


@pytest.mark.parametrize("zero_point", [np.nan, 0.5, 1e10, "3"])
def test_zero_points_must_be_whole_int32_numbers(zero_point):
    with pytest.raises(ValueError, match=r"quantize: zero_point must (be a whole number|fit int32)"):
        Q.quantize(np.ones(3), 0.1, zero_point, 0, 255)


@pytest.mark.parametrize("fn", [Q.quantize, Q.fake_quantize])
def test_an_empty_integer_range_is_refused(fn):
    # qmin > qmax used to clamp every value to one end without a word
    with pytest.raises(ValueError, match=f"{fn.__name__}: qmin must be <= qmax, got qmin=127, qmax=-128"):
        fn(np.array([0.5, -0.5], np.float32), 0.1, 0, 127, -128)
    with pytest.raises(ValueError, match="qmax must be an integer, got 127.5"):
        fn(np.array([0.5], np.float32), 0.1, 0, -128, 127.5)
    np.testing.assert_array_equal(Q.quantize(np.array([-9.0, 9.0], np.float32), 0.1, 0, 3, 3), [3, 3])  # a point


def test_quantize_saturates_past_float32_without_warnings_or_garbage():
    with np.errstate(all="raise"):
        q = Q.quantize(np.array([3e38, -3e38, 0.0], dtype=np.float32), 1e-3, 0, -128, 127)
    np.testing.assert_array_equal(q, [127, -128, 0])


def test_zero_and_constant_tensors_quantize_exactly():
    for x in (np.zeros((3, 4)), np.full((3, 4), -2.5), np.full((3, 4), 7.0)):
        t = Q.quantize_tensor(x.astype(np.float32))
        assert np.isfinite(t.scale) and t.scale > 0
        np.testing.assert_allclose(t.dequantize(), x, atol=t.scale / 2)
        tc = Q.quantize_tensor(x.astype(np.float32), axis=0, symmetric=True)
        np.testing.assert_allclose(tc.dequantize(), x, atol=float(np.max(tc.scale)) / 2)


# ---- distillation ---------------------------------------------------------------------------------------------------


def logits(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 10)).astype(np.float32), rng.standard_normal((4, 10)).astype(np.float32)


@pytest.mark.parametrize("T", [1e30, 1e4, 100.5])
def test_kd_loss_refuses_temperatures_where_float32_gives_noise(T):
    z_s, z_t = logits()
    message = f"kd_loss: temperature T={re.escape(repr(T))} is too large: past T = 100 the soft term T\\^2 \\* KL"
    with pytest.raises(ValueError, match=message + " is mostly float32 rounding error"):
        distillation.kd_loss(Tensor(z_s), z_t, np.arange(4), T, 0.9)
    model = models.mlp([784, 10])
    with pytest.raises(ValueError, match=f"distill: temperature T={re.escape(repr(T))} is too large"):
        distillation.distill(model, model, None, 1, None, T=T)


def test_kd_loss_at_the_largest_temperature_is_accurate():
    z_s, z_t = logits()
    T = distillation.MAX_T
    loss = distillation.kd_loss(Tensor(z_s), z_t, None, T, 1.0).item()
    s, t = z_s.astype(np.float64) / T, z_t.astype(np.float64) / T
    lq, lp = (v - np.log(np.exp(v).sum(1, keepdims=True)) for v in (s, t))
    reference = T * T * float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))
    assert loss == pytest.approx(reference, rel=0.005)


@pytest.mark.parametrize("who", ["student", "teacher"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_kd_loss_refuses_non_finite_logits(who, bad):
    z_s, z_t = logits()
    (z_s if who == "student" else z_t)[2, 5] = bad
    with pytest.raises(ValueError, match=f"kd_loss: {who} logits hold NaN or Inf \\(first in row 2"):
        distillation.kd_loss(Tensor(z_s), z_t, np.arange(4), 4.0, 0.5)


def test_tiny_temperatures_that_overflow_are_refused_and_small_ones_work():
    z_s, z_t = logits()
    with pytest.raises(ValueError, match=r"kd_loss: temperature T=1e-45 is too small for student logits"):
        distillation.kd_loss(Tensor(z_s), z_t, np.arange(4), 1e-45, 0.5)
    with pytest.raises(ValueError, match=r"softmax: temperature T=1e-45 is too small"):
        distillation.softmax(z_t, 1e-45)
    p = distillation.softmax(z_t, 1e-30)  # one-hot on the argmax, as T -> 0
    np.testing.assert_array_equal(p, np.eye(10)[z_t.argmax(1)])
    assert np.isfinite(distillation.kd_loss(Tensor(z_s), z_t, np.arange(4), 1e-3, 0.5).item())


# ---- gradual pruning ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n=0 is the number of pruning steps and must be an int >= 1"),
    ({"n": 2.5}, "n=2.5 is the number of pruning steps"),
    ({"dt": 0}, "dt=0 is the number of training steps between prunings and must be > 0"),
    ({"dt": float("nan")}, "dt=nan"),
    ({"s_i": float("nan")}, "sparsity=nan must be in"),
    ({"s_f": 1.5}, "sparsity=1.5 must be in"),
    ({"t0": float("inf")}, "t0=inf must be a finite number"),
])
def test_agp_sparsity_refuses_bad_schedules(kwargs, message):
    args = {"t": 3, "s_f": 0.9, "s_i": 0.0, "t0": 0, "n": 10, "dt": 1} | kwargs
    with pytest.raises(ValueError, match="agp_sparsity: " + message.replace("(", r"\(").replace(")", r"\)")):
        prune.agp_sparsity(**args)


@pytest.mark.parametrize("kwargs", [{"n_steps": 0}, {"n_steps": 2.5}, {"frequency": float("nan")}, {"frequency": 0},
                                    {"start_step": -1}, {"start_step": 1.5}])
def test_gradual_pruning_refuses_schedules_that_would_never_prune(kwargs):
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f"GradualPruning: {name}={value!r} must be an int >= "):
        prune.GradualPruning([(nn.Linear(4, 3), "weight")], 0.5, **kwargs)


def test_agp_sparsity_degenerate_schedules():
    assert prune.agp_sparsity(5, 0.9, n=1, dt=1) == 0.9  # one step: straight to s_f
    assert prune.agp_sparsity(0, 0.9, n=1, dt=1) == 0.0
    assert prune.agp_sparsity(7, 0.0, n=3) == 0.0 and prune.agp_sparsity(7, 1.0, s_i=1.0, n=3) == 1.0


# ---- binary ---------------------------------------------------------------------------------------------------------


def test_sign_of_nan_stays_nan_and_is_never_packed_as_minus_one():
    s = binary.sign(np.array([np.nan, -0.0, 0.0, -2.0, 3.0], dtype=np.float32))
    assert np.isnan(s[0]) and s[1:].tolist() == [1.0, 1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match=r"pack_signs: found NaN at index \(0, 1\) .* cannot be stored as a bit"):
        binary.pack_signs(binary.sign(np.array([[1.0, np.nan, -1.0]])))


def test_pack_model_refuses_nan_weights():
    model = binary.binary_mlp([784, 16, 10])
    layer = next(m for m in model.modules() if isinstance(m, binary.BinaryLinear))
    layer.weight.data[3, 7] = np.nan
    with pytest.raises(ValueError, match=r"pack BinaryLinear: found NaN at index \(3, 7\)"):
        binary.pack_model(model)


def test_packed_binary_activations_refuse_nan_inputs():
    layer = binary.BinaryLinear(12, 3, binary_activations=True)
    packed = binary.PackedBinaryLinear.from_layer(layer)
    x = np.ones((2, 12), dtype=np.float32)
    x[1, 4] = np.nan
    with pytest.raises(ValueError, match="PackedBinaryLinear: the input holds NaN, which has no sign"):
        packed(x)


def test_popcount_matmul_checks_k_against_the_packed_bytes():
    rng = np.random.default_rng(0)
    a = np.where(rng.random((3, 13)) < 0.5, -1.0, 1.0)
    b = np.where(rng.random((4, 13)) < 0.5, -1.0, 1.0)
    a_bits, b_bits = binary.pack_signs(a), binary.pack_signs(b)  # 2 bytes per row
    np.testing.assert_array_equal(binary.popcount_matmul(a_bits, b_bits, 13), (a @ b.T).astype(np.int32))
    for k in (17, 64, 8):  # more values than the bits hold, or fewer than the bytes hold
        with pytest.raises(ValueError, match=f"popcount_matmul: a_bits must be uint8 of shape \\(rows, {-(-k // 8)}\\) "
                                             f"for k={k} values per row"):
            binary.popcount_matmul(a_bits, b_bits, k)
    with pytest.raises(ValueError, match=r"popcount_matmul: a_bits has 1 bits past position k=10"):
        binary.popcount_matmul(a_bits, b_bits, 10)
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k=.* must be an int >= 1"):
            binary.popcount_matmul(a_bits, b_bits, k)
    with pytest.raises(ValueError, match="b_bits must be uint8"):
        binary.popcount_matmul(a_bits, b_bits.astype(np.int64), 13)


