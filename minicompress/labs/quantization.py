"""Lab 2, quantization: the checks of tutorials/labs/02_quantization_lab.ipynb (answers: minicompress.quantization).

2.1 q = round(w * s), the course's formula     2.6 per-channel scales
2.2 affine S and Z from [min, max]             2.7 the fake-quantization STE mask
2.3 the symmetric scale                        2.8 M = M0 * 2^-n, a fixed-point multiplier
2.4 quantize with clamping                     2.9 one integer-only Linear layer
2.5 dequantize
"""

import math

import numpy as np

from .. import quantization as Q
from ..tensor import Tensor
from .checking import Check, Lab, Mistake, each, same

LAB = Lab(2, "Quantization: from q = round(w * s) to an integer-only layer")
_rng = np.random.default_rng(2)
EPS = np.finfo(np.float32).eps


def _bits_signed(qmin, qmax):
    return int(round(math.log2(qmax - qmin + 1))), qmin < 0


# --------------------------------------------------------------------------------------------------------------------
# 1. The course's formula, then scale and zero point
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("quantize_course")
def check_quantize_course():
    def reference(w, s):
        return Q.quantize(w, np.float32(1 / s), 0, 0, s)

    tutorial = np.array([0.0, 0.2, 0.731, 0.93, 1.0], np.float32)
    return Check(
        reference=reference, names=("w", "s"),
        cases=[(tutorial, 255), (np.array([0.125, 0.375, 0.625, 0.875], np.float32), 4),
               (np.array([0.0, 0.5, 1.0], np.float32), 16), (_rng.random(8).astype(np.float32), 255),
               (_rng.random(6).astype(np.float32), 15)],
        hint="q = round(w * s) with round half to even (np.round): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2",
        mistakes=[Mistake(lambda w, s: np.floor(w * s), "round to the nearest integer: floor (or int(), "
                                                        "astype(int)) always goes down"),
                  Mistake(lambda w, s: np.floor(w * s + 0.5), "np.round rounds half to even (0.5 -> 0, 2.5 -> 2, "
                                                               "as PyTorch and TFLite); floor(x + 0.5) rounds half up"),
                  Mistake(lambda w, s: np.round(w / s), "the course's s = 1 / S is a multiplier: q = round(w * s)")])


_NO_EPS = ("a constant range gives max' - min' = 0 and S = 0: take S = max(..., eps) (eps = "
           "np.finfo(np.float32).eps) so nothing divides by zero")


@LAB.exercise("affine_qparams")
def check_affine_qparams():
    def reference(min_val, max_val, qmin, qmax):
        bits, signed = _bits_signed(qmin, qmax)
        return Q.qparams(min_val, max_val, bits=bits, signed=signed)

    def unwidened(lo, hi, qmin, qmax):
        S = max((hi - lo) / (qmax - qmin), EPS)
        return S, int(np.clip(qmin - np.round(lo / S), qmin, qmax))

    def flipped(lo, hi, qmin, qmax):
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        S = max((hi - lo) / (qmax - qmin), EPS)
        return S, int(np.clip(qmin + np.round(lo / S), qmin, qmax))

    def no_eps(lo, hi, qmin, qmax):
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        S = (hi - lo) / (qmax - qmin)
        return S, qmin - np.round(lo / S)

    return Check(
        reference=reference, names=("min_val", "max_val", "qmin", "qmax"),
        compare=each(same(rtol=1e-6), same(exact=True), names=("scale S", "zero point Z")),
        cases=[(-1.0, 3.0, 0, 255), (-1.0, 3.0, -128, 127), (0.5, 2.0, 0, 255), (-3.0, -1.0, 0, 255),
               (0.0, 0.0, 0, 255), (-0.7, 0.3, 0, 15)],
        hint="min' = min(min, 0), max' = max(max, 0); S = max((max' - min') / (qmax - qmin), eps) with eps the "
             "float32 machine epsilon; Z = clamp(qmin - round(min' / S), qmin, qmax)",
        mistakes=[Mistake(unwidened, "widen the range to include 0 first (min' = min(min, 0), max' = max(max, 0)),"
                                     " so that real 0 (zero padding, ReLU) is exactly representable"),
                  Mistake(flipped, "Z = qmin - round(min' / S): real 0 lands on Z, so q = qmin must mean min'; "
                                   "the sign of round(min' / S) was flipped"),
                  Mistake(no_eps, _NO_EPS)],
        errors={"ZeroDivisionError": _NO_EPS})


@LAB.exercise("symmetric_scale")
def check_symmetric_scale():
    def reference(min_val, max_val, bits):
        return Q.qparams(min_val, max_val, bits=bits, symmetric=True)[0]

    def from_max(lo, hi, bits):
        return max(max(hi, 0.0) / ((2 ** bits - 1) / 2), EPS)

    def narrow(lo, hi, bits):
        return max(max(-min(lo, 0.0), max(hi, 0.0)) / (2 ** (bits - 1) - 1), EPS)

    def affine(lo, hi, bits):
        return max((max(hi, 0.0) - min(lo, 0.0)) / (2 ** bits - 1), EPS)

    return Check(
        reference=reference, names=("min_val", "max_val", "bits"), compare=same(rtol=1e-6),
        cases=[(-1.0, 3.0, 8), (-5.0, 2.0, 8), (0.0, 0.0, 8), (-1.0, 0.5, 4), (0.5, 2.0, 8), (-2.0, -1.0, 8)],
        hint="S = max(max(-min', max') / ((qmax - qmin) / 2), eps) with [qmin, qmax] = [-2^(bits-1), "
             "2^(bits-1) - 1], min' = min(min, 0), max' = max(max, 0)",
        mistakes=[Mistake(from_max, "the largest magnitude is max(|min'|, |max'|) = max(-min', max'), not max: "
                                    "here the negative end is farther from 0"),
                  Mistake(narrow, "divide by (qmax - qmin) / 2 = 127.5 for 8 bits (PyTorch); 127 is TFLite's "
                                  "narrow range [-127, 127]"),
                  Mistake(affine, "that is the affine scale (max' - min') / (qmax - qmin); symmetric takes the "
                                  "largest magnitude on both sides of 0")])


# --------------------------------------------------------------------------------------------------------------------
# 2. Quantize and dequantize
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("quantize")
def check_quantize():
    tutorial = np.array([-1.0, -0.3, 0.0, 0.4, 3.0], np.float32)
    S, Z = Q.qparams(-1.0, 3.0, signed=False)
    return Check(
        reference=Q.quantize, names=("x", "S", "Z", "qmin", "qmax"), compare=same(exact=True),
        cases=[(tutorial, S, int(Z), 0, 255), (np.array([10.0, -10.0, 0.3], np.float32), 0.1, 0, -128, 127),
               (np.array([0.25, 0.75, -0.25, 1.25], np.float32), 0.5, 0, -128, 127),
               (np.array([-2.0, -0.25, 0.0, 0.5, 40.0], np.float32), 0.25, 3, 0, 15),
               (_rng.standard_normal(8).astype(np.float32), 0.0625, -5, -8, 7)],
        hint="q = clamp(round(x / S) + Z, qmin, qmax), round half to even (np.round)",
        mistakes=[Mistake(lambda x, S, Z, lo, hi: np.round(x / S) + Z,
                          "clamp to [qmin, qmax]: values outside the range saturate at qmin or qmax"),
                  Mistake(lambda x, S, Z, lo, hi: np.clip(np.round(x / S) - Z, lo, hi),
                          "q = round(x / S) + Z: real 0 must land on the zero point, so add Z"),
                  Mistake(lambda x, S, Z, lo, hi: np.clip(np.floor(x / S + 0.5) + Z, lo, hi),
                          "round half to even (np.round): round(0.5) = 0, round(2.5) = 2, not up"),
                  Mistake(lambda x, S, Z, lo, hi: np.clip(np.round(x * S) + Z, lo, hi),
                          "divide by the scale: q = round(x / S) + Z (S is the real step between codes)")])


@LAB.exercise("dequantize")
def check_dequantize():
    return Check(
        reference=Q.dequantize, names=("q", "S", "Z"), compare=same(rtol=1e-6),
        cases=[(np.array([0, 64, 100, 255], np.uint8), np.float32(4 / 255), 64),
               (np.array([-128, 0, 127], np.int8), np.float32(0.02), 0),
               (np.array([[0, 15], [3, 7]], np.uint8), np.float32(0.25), 3)],
        hint="r_hat = S * (q - Z), computed after casting q to a wide signed integer (int32)",
        mistakes=[Mistake(lambda q, S, Z: S * (q - np.array(Z, q.dtype)),
                          "cast q to int32 before subtracting Z: in uint8, 0 - 64 wraps around to 192"),
                  Mistake(lambda q, S, Z: S * q - Z, "r_hat = S * (q - Z): subtract the zero point before scaling"),
                  Mistake(lambda q, S, Z: S * (q.astype(np.int32) + Z), "r_hat = S * (q - Z): subtract Z, "
                                                                        "the code that stands for real 0")])


@LAB.exercise("per_channel_scales")
def check_per_channel_scales():
    def reference(w):
        axes = tuple(range(1, w.ndim))
        return Q.qparams(w.min(axis=axes), w.max(axis=axes), symmetric=True)[0]

    def per_tensor(w):
        return np.full(w.shape[0], max(np.abs(w).max() / 127.5, EPS), np.float32)

    def axis0(w):
        return np.maximum(np.abs(w).max(axis=0) / 127.5, EPS)

    def no_abs(w):
        return np.maximum(w.max(axis=tuple(range(1, w.ndim))) / 127.5, EPS)

    tutorial = np.array([[0.5, -1.0, 0.0, 0.25], [-0.2, -0.2, 0.2, 0.2]], np.float32)
    zero_row = np.array([[0.0, 0.0, 0.0], [1.0, -3.0, 2.0]], np.float32)
    return Check(
        reference=reference, names=("w",), compare=same(rtol=1e-6),
        cases=[(tutorial,), (_rng.standard_normal((3, 2, 2, 2)).astype(np.float32),), (zero_row,),
               ((_rng.standard_normal((4, 4)) * [[1], [10], [0.1], [3]]).astype(np.float32),)],
        hint="int8 symmetric per output channel c: S_c = max(max|w[c]| / 127.5, eps), reducing over every axis "
             "but 0; shape (out_channels,)",
        mistakes=[Mistake(per_tensor, "one scale per output channel: a channel of small weights gets its own "
                                      "small S instead of the tensor's largest"),
                  Mistake(axis0, "the channel axis is 0 (out_channels): reduce over axes 1, 2, ..., keep axis 0"),
                  Mistake(no_abs, "use the largest magnitude max(-min, max) of each channel, not its max")])


# --------------------------------------------------------------------------------------------------------------------
# 3. Training through the rounding: the straight-through estimator's mask
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("ste_mask")
def check_ste_mask():
    def reference(x, S, Z, qmin, qmax):
        t = Tensor(x, requires_grad=True)
        Q.fake_quantize(t, np.float32(S), Z, qmin, qmax).backward(np.ones_like(x))
        return t.grad != 0

    def everywhere(x, S, Z, qmin, qmax):
        return np.ones(x.shape, bool)

    def strict(x, S, Z, qmin, qmax):
        q = np.round(x / S) + Z
        return (q > qmin) & (q < qmax)

    def real_range(x, S, Z, qmin, qmax):
        return (x >= S * (qmin - Z)) & (x <= S * (qmax - Z))

    tutorial = np.array([-1.3, -0.6, 0.1, 0.55, 0.9], np.float32)
    return Check(
        reference=reference, names=("x", "S", "Z", "qmin", "qmax"), compare=same(exact=True),
        cases=[(tutorial, 0.25, 0, -4, 3), (np.array([0.75, 0.8, 0.9, -1.0, -1.1, -1.2], np.float32), 0.25, 0, -4, 3),
               (np.array([-1.0, 0.0, 2.0, 3.7, 3.8], np.float32), 0.5, 2, 0, 9)],
        hint="the gradient passes where qmin <= round(x / S) + Z <= qmax (inclusive) and is cut where the value "
             "was clamped; return a boolean array of x's shape",
        mistakes=[Mistake(everywhere, "the clipped straight-through estimator cuts the gradient where the value was "
                                      "clamped; passing it everywhere trains weights the forward pass ignores"),
                  Mistake(strict, "the range is inclusive: q = qmin and q = qmax were not clamped, they pass"),
                  Mistake(real_range, "test the rounded code round(x / S) + Z, not x against S * (qmax - Z): a value a "
                                      "little above the top rounds down into range and passes")])


# --------------------------------------------------------------------------------------------------------------------
# 4. Integer-only inference
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("quantize_multiplier")
def check_quantize_multiplier():
    def truncated(M):
        m, e = np.frexp(M)
        return int(m * 2 ** 31), int(-e)

    def one_to_two(M):
        e = math.floor(math.log2(M))
        return int(round(M / 2 ** e * 2 ** 31)), -e

    def no_overflow_fix(M):
        m, e = np.frexp(M)
        return int(np.round(m * 2 ** 31)), int(-e)

    def ints(expected, obtained):
        return each(same(exact=True), names=("M0", "n"))(tuple(int(v) for v in expected), obtained)

    return Check(
        reference=Q.quantize_multiplier, names=("M",), compare=ints,
        cases=[(0.3,), (0.0039,), (2.0 ** -10,), (0.7071067811865476,), (1 - 2.0 ** -40,), (1.5,)],
        hint="write M = M0_real * 2^-n with M0_real in [0.5, 1) (np.frexp), then M0 = round(2^31 * M0_real) as an "
             "int; if that rounds to 2^31, use M0 = 2^30 and n - 1",
        mistakes=[Mistake(truncated, "M0 = round(2^31 * M0_real): truncating loses up to one unit in the last bit"),
                  Mistake(one_to_two, "M0_real must be in [0.5, 1) (np.frexp's mantissa), so that M0 uses 31 bits "
                                      "and fits int32"),
                  Mistake(no_overflow_fix, "rounding can give M0 = 2^31, which does not fit in int32: use 2^30 and "
                                           "lower n by one")])


@LAB.exercise("integer_linear")
def check_integer_linear():
    def reference(q_x, Z_x, q_w, q_b, M0, n, Z_y, qmin, qmax):
        acc = (q_x.astype(np.int64) - Z_x) @ q_w.astype(np.int64).T + q_b
        return Q.requantize(acc.astype(np.int32), M0, n, Z_y, qmin, qmax)

    def mistake(forget_zx=False, narrow=False, truncate=False, clamp=True):
        def layer(q_x, Z_x, q_w, q_b, M0, n, Z_y, qmin, qmax):
            x = q_x - np.array(Z_x, q_x.dtype) if narrow else q_x.astype(np.int64) - (0 if forget_zx else Z_x)
            acc = (x.astype(np.int64) @ q_w.astype(np.int64).T + q_b)
            s = 31 + n
            y = Z_y + ((acc * M0 + (0 if truncate else 2 ** (s - 1))) >> s)
            return np.clip(y, qmin, qmax) if clamp else y
        return layer

    def case(batch, in_f, out_f, Z_x, Z_y, M_range):
        q_x = _rng.integers(0, 256, (batch, in_f)).astype(np.uint8)
        q_w = _rng.integers(-127, 128, (out_f, in_f)).astype(np.int8)
        q_b = _rng.integers(-2000, 2000, out_f).astype(np.int32)
        M0, n = Q.quantize_multiplier(_rng.uniform(*M_range, out_f))
        return (q_x, Z_x, q_w, q_b, M0, n, Z_y, 0, 255)

    q_x = np.array([[3, 200, 17, 128]], np.uint8)
    q_w = np.array([[1, -2, 3, 4], [-100, 50, 0, 127]], np.int8)
    M0, n = Q.quantize_multiplier(np.array([0.01, 0.002]))
    tutorial = (q_x, 128, q_w, np.array([100, -50], np.int32), M0, n, 128, 0, 255)
    return Check(
        reference=reference, names=("q_x", "Z_x", "q_w", "q_b", "M0", "n", "Z_y", "qmin", "qmax"),
        compare=same(exact=True),
        cases=[tutorial, case(3, 6, 4, 120, 128, (0.001, 0.01)), case(2, 5, 3, 0, 0, (0.0005, 0.02)),
               case(4, 8, 2, 128, 128, (0.05, 0.2))],
        hint="acc = sum_k (q_x - Z_x) * q_w + q_b in int32 (int64 to be safe), then per output channel "
             "q_y = clamp(Z_y + ((acc * M0 + 2^(s-1)) >> s), qmin, qmax) with s = 31 + n",
        mistakes=[Mistake(mistake(forget_zx=True), "subtract the input zero point: acc = sum (q_x - Z_x) * q_w"),
                  Mistake(mistake(narrow=True), "accumulate in a wide integer: q_x - Z_x in uint8 wraps around "
                                                "(cast to int32 or int64 first)"),
                  Mistake(mistake(truncate=True), "round, do not truncate: add 2^(s-1) before the right shift >> s"),
                  Mistake(mistake(clamp=False), "clamp the output codes to [qmin, qmax] (saturate)")])
