"""Quantization, sections 4-5: integer arithmetic (exact int32 sums with float BLAS, fixed-point
requantization) and integer-only layers (Jacob et al. 2018).

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import nn
from ..tensor import Tensor
from .arithmetic import QTensor, _as_array, _check_finite, _int_dtype

# ====================================================================================================================
# 4. Integer arithmetic: exact accumulation with float BLAS, fixed-point requantization
# ====================================================================================================================

EXACT_INT_LIMIT = {np.dtype(np.float32): 2**24, np.dtype(np.float64): 2**53}  # every |n| <= limit is exact


def exact_block_size(a_bound, b_bound, float_dtype=np.float32):
    """The longest run of products a_k * b_k (|a_k| <= a_bound, |b_k| <= b_bound) a float matmul sums exactly.

    A float with p-bit significand holds every integer |n| <= 2^p exactly (float32: 2^24, float64: 2^53).
    If every product and every partial sum stays within that, no rounding ever happens, whatever order or
    fused multiply-add the BLAS uses, because any partial sum of K terms is at most K * a_bound * b_bound.
    So K = floor(2^p / (a_bound * b_bound)); 0 means even one product is not exact.
    """
    limit, term = EXACT_INT_LIMIT[np.dtype(float_dtype)], int(a_bound) * int(b_bound)
    return limit if term == 0 else limit // term


def int_matmul(a, b, a_bound=None, b_bound=None, engine=None):
    """Exact a @ b for integer-valued a (M, K) and b (K, N), computed with float BLAS in exact blocks.

    NumPy's integer matmul is exact but does not use BLAS (it is ~50x slower). A float matmul on
    integer-valued arrays is exact as long as every partial sum stays below 2^24 (float32) or 2^53 (float64):
    K is split into blocks of ``exact_block_size`` columns, each block multiplied in float and converted
    back to integers, the blocks summed in int64. ``engine`` None tries float32, then float64, then NumPy
    int64; np.float32 / np.float64 force a float type (still blocked), np.int64 asks for NumPy's integer
    matmul (the slow reference). For int8 weights and uint8 activations one product is at most
    128 * 255 = 32640 < 2^15, so float32 sums up to 514 terms exactly (LeNet-5's largest K is 400: one block).
    ``a_bound`` / ``b_bound`` bound |a| and |b| (computed when not given). Returns int32 when
    K * a_bound * b_bound < 2^31 (the int32 accumulator of Jacob et al.), else int64.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"int_matmul: need (M, K) @ (K, N), got {a.shape} @ {b.shape}")
    a_bound = int(np.abs(a).max()) if a_bound is None and a.size else int(a_bound or 0)
    b_bound = int(np.abs(b).max()) if b_bound is None and b.size else int(b_bound or 0)
    k = a.shape[1]
    acc_dtype = np.int32 if k * a_bound * b_bound <= np.iinfo(np.int32).max else np.int64
    dtypes = (np.float32, np.float64) if engine is None else (engine,)
    for dt in dtypes:
        block = 0 if dt == np.int64 else exact_block_size(a_bound, b_bound, dt)
        if block >= 1:
            break
    else:  # asked for, or even a single product overflows the float significand
        return (a.astype(np.int64) @ b.astype(np.int64)).astype(acc_dtype)
    af, bf = a.astype(dt, copy=False), b.astype(dt, copy=False)
    if block >= k:
        return (af @ bf).astype(acc_dtype)
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    for k0 in range(0, k, block):
        acc += (af[:, k0 : k0 + block] @ bf[k0 : k0 + block]).astype(np.int64)
    return acc.astype(acc_dtype)


def quantize_multiplier(M):
    """Write a real multiplier M > 0 as M = M0_real * 2^-n with M0_real in [0.5, 1); M0 = round(2^31 * M0_real).

    Returns (M0 int64 array holding int32 values, n int64 array). M0 * 2^-(31 + n) equals M to a relative error
    of at most 2^-32. (If rounding gives M0 = 2^31, it is halved and n lowered by one.) Ties round up, as
    TFLite's QuantizeMultiplier (std::round), so an exported model gets the very same M0.
    """
    M = np.asarray(M, dtype=np.float64)
    if np.any(~np.isfinite(M)) or np.any(M <= 0):
        raise ValueError(f"quantize_multiplier: M must be finite and > 0, got {M.ravel()[0] if M.size else M}")
    mantissa, exponent = np.frexp(M)  # M = mantissa * 2^exponent, mantissa in [0.5, 1)
    M0 = np.floor(mantissa * 2.0**31 + 0.5).astype(np.int64)  # exact: mantissa * 2^31 + 0.5 < 2^31 + 1
    n = -exponent.astype(np.int64)
    full = M0 == 2**31
    M0, n = np.where(full, 2**30, M0), np.where(full, n - 1, n)
    if np.any(31 + n < 1) or np.any(31 + n > 62):
        raise ValueError(f"quantize_multiplier: M = {M.ravel()[0]} is outside the supported range (2^-31, 2^30)")
    return M0, n


def rounding_right_shift(x, shift):
    """round(x / 2^shift) with ties toward +inf, for int64 x and shift >= 1: (x + 2^(shift-1)) >> shift.

    (TFLite's single-rounding mode; gemmlowp rounds twice, half away from zero, and can differ on ties.)
    """
    return (x + np.left_shift(np.int64(1), shift - 1)) >> shift


def multiply_by_quantized_multiplier(acc, M0, n):
    """TFLite's MultiplyByQuantizedMultiplier (gemmlowp's arithmetic, TFLite's default build): acc * M rounded
    twice, with M = M0 * 2^-(31 + n):

        high = round(acc * 2^max(-n, 0) * M0 / 2^31)   ties up (-0.5 -> 0)     SaturatingRoundingDoublingHighMul
        out  = round(high / 2^max(n, 0))                ties away from zero     RoundingDivideByPOT

    The two roundings can differ from one exact rounding: acc = 1, M = 0.375 (M0 = 3 * 2^29, n = 1) gives
    high = round(0.75) = 1, out = round(0.5) = 1, while round(0.375) = 0.
    """
    n = np.asarray(n, dtype=np.int64)
    x = np.asarray(acc, dtype=np.int64) << np.maximum(-n, 0)
    ab = x * np.asarray(M0, dtype=np.int64)  # |x| < 2^31 and M0 < 2^31: fits int64
    ab = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = np.where(ab >= 0, ab >> 31, -((-ab) >> 31))  # C's integer division truncates toward zero
    right = np.maximum(n, 0)
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + ((high & mask) > threshold)


def requantize(acc, M0, n, zero_point, qmin, qmax, rounding="single"):
    """q = clamp(Z + round(acc * M0 * 2^-(31 + n)), qmin, qmax): int32 accumulators to the output code.

    rounding="single": one exact rounding, ties up (TFLite built with TFLITE_SINGLE_ROUNDING). acc * M0 fits in
    int64 because |acc| < 2^31 and M0 < 2^31. The rounding constant and the zero point are added together before
    the shift (Z * 2^s is exact).
    rounding="double": ``multiply_by_quantized_multiplier``, what the TFLite runtime on PyPI (LiteRT) computes and
    what minicompress's integer layers use, so that an exported model gives the same integers.
    M0 and n may be per channel (broadcast).
    """
    if acc.dtype != np.int32:
        raise ValueError(f"requantize: accumulators must be int32 (Jacob et al.), got {acc.dtype}")
    if rounding == "double":
        t = multiply_by_quantized_multiplier(acc, M0, n) + np.int64(zero_point)
        return np.clip(t, qmin, qmax).astype(_int_dtype(qmin, qmax))
    if rounding != "single":
        raise ValueError(f"requantize(rounding={rounding!r}): allowed 'single' or 'double'")
    shift = 31 + np.asarray(n, dtype=np.int64)
    t = np.multiply(acc, M0, dtype=np.int64)
    t += (np.int64(zero_point) << shift) + (np.int64(1) << (shift - 1))  # + Z, + 1/2 for round half up
    t >>= shift
    return np.clip(t, qmin, qmax, out=t).astype(_int_dtype(qmin, qmax))


# ====================================================================================================================
# 5. Integer-only layers (Jacob et al. 2018)
# ====================================================================================================================


def _param(x):
    return np.asarray(x.data if isinstance(x, Tensor) else x)


def _pair(v):
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


class Quantize(nn.Module):
    """Float input -> QTensor with fixed (scale, zero_point): the entrance of an integer-only model.

    q = clamp(round(x / S) + Z, qmin, qmax) with x / S a float32 division rounded half away from zero: TFLite's
    QUANTIZE kernel, so an exported model starts from the same integers. (``quantize`` instead rounds x * (1 / S)
    half to even, as PyTorch's fake quantization; the two differ only within a float32 rounding of a tie.)
    """

    def __init__(self, scale, zero_point, qmin, qmax):
        super().__init__()
        self.scale, self.zero_point = np.float32(scale), np.int32(zero_point)
        self.qmin, self.qmax = int(qmin), int(qmax)

    def forward(self, x):
        x = np.asarray(_as_array(x), dtype=np.float32)
        _check_finite(x, "Quantize", "x")
        with np.errstate(over="ignore"):  # past float32, x / S is +-inf, which the clamp maps to qmin or qmax
            r = x / self.scale
        q = np.clip(np.sign(r) * np.floor(np.abs(r) + np.float32(0.5)) + np.float32(self.zero_point),
                    self.qmin, self.qmax)
        return QTensor(q.astype(_int_dtype(self.qmin, self.qmax)), self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self):
        return f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}, range=[{self.qmin}, {self.qmax}]"

    def to_arrays(self):
        return {"scale": np.float32(self.scale), "zero_point": np.int32(self.zero_point)}, \
            {"qmin": self.qmin, "qmax": self.qmax}

    @classmethod
    def from_arrays(cls, arrays, config):
        return cls(arrays["scale"], arrays["zero_point"], config["qmin"], config["qmax"])


class DeQuantize(nn.Module):
    """QTensor -> float Tensor r = S * (q - Z): the exit of an integer-only model."""

    def forward(self, x):
        return Tensor(x.dequantize())

    def to_arrays(self):
        return {}, {}

    @classmethod
    def from_arrays(cls, arrays, config):
        return cls()


class _IntegerLayer(nn.Module):
    """Shared part of QuantizedLinear / QuantizedConv2d.

    Stored: q_w (int, out-channel first), per-channel (S2, Z2), int32 bias q_b = round(b / (S1 * S2)),
    input (S1, Z1) and output (S3, Z3) parameters. Derived at construction: M = S1 * S2 / S3 as (M0, n)
    and a float32 copy of (q_w - Z2) for the BLAS product (the "packed" weight, not part of the stored size).
    """

    def __init__(self, weight_q, weight_scale, weight_zero_point, bias_q, input_scale, input_zero_point,
                 output_scale, output_zero_point, qmin, qmax, relu=False, weight_bits=8):
        super().__init__()
        self.weight_q, self.weight_bits = np.asarray(weight_q), int(weight_bits)
        out = self.weight_q.shape[0]
        # (1,) for per-tensor, (out,) for per-channel: stored as given
        self.weight_scale = np.asarray(weight_scale, np.float32).reshape(-1)
        self.weight_zero_point = np.asarray(weight_zero_point, np.int32).reshape(-1)
        self.bias_q = None if bias_q is None else np.asarray(bias_q, dtype=np.int32)
        self.input_scale, self.input_zero_point = np.float32(input_scale), np.int32(input_zero_point)
        self.output_scale, self.output_zero_point = np.float32(output_scale), np.int32(output_zero_point)
        self.qmin, self.qmax, self.relu = int(qmin), int(qmax), bool(relu)
        # M = S1 * S2 / S3 per output channel, as the fixed-point M0 * 2^-n
        self.M = np.float64(self.input_scale) * self.weight_scale.astype(np.float64) / np.float64(self.output_scale)
        self.M0, self.n = quantize_multiplier(self.M)
        w = self.weight_q.reshape(out, -1).astype(np.int32) - self.weight_zero_point.reshape(-1, 1)
        self._w_bound = int(np.abs(w).max()) if w.size else 0
        self._w = w.astype(np.float32)
        # a fused ReLU is just a higher lower clamp: real 0 is the integer Z3
        self._lo = max(self.qmin, int(self.output_zero_point)) if self.relu else self.qmin

    def _check_input(self, x):
        if not isinstance(x, QTensor):
            raise TypeError(f"{type(self).__name__}: expects a QTensor (put a Quantize module in front), "
                            f"got {type(x).__name__}")
        if x.scale != self.input_scale or x.zero_point != self.input_zero_point:
            raise ValueError(f"{type(self).__name__}: input quantized with (S={x.scale}, Z={x.zero_point}) but the "
                             f"layer was built for (S={self.input_scale}, Z={self.input_zero_point})")

    def _a_bound(self):
        return max(abs(self.qmin - int(self.input_zero_point)), abs(self.qmax - int(self.input_zero_point)))

    def _output(self, acc, channel_axis):
        shape = [1, 1]
        shape[channel_axis] = -1
        M0, n = self.M0.reshape(shape), self.n.reshape(shape)
        return requantize(acc, M0, n, int(self.output_zero_point), self._lo, self.qmax, rounding=self.rounding)

    def extra_repr(self):
        shape = "x".join(str(d) for d in self.weight_q.shape)
        return (f"weight {shape} {self.weight_q.dtype}, out scale={float(self.output_scale):.6g} "
                f"zero_point={int(self.output_zero_point)}, range=[{self.qmin}, {self.qmax}]"
                + (", relu" if self.relu else ""))

    def to_arrays(self):
        arrays = {"weight_q": self.weight_q, "weight_scale": self.weight_scale,
                  "weight_zero_point": self.weight_zero_point,
                  "input_scale": self.input_scale, "input_zero_point": self.input_zero_point,
                  "output_scale": self.output_scale, "output_zero_point": self.output_zero_point}
        if self.bias_q is not None:
            arrays["bias_q"] = self.bias_q
        return arrays, {"qmin": self.qmin, "qmax": self.qmax, "relu": self.relu, "weight_bits": self.weight_bits,
                        **self._extra_config()}

    def _extra_config(self):
        return {}

    @classmethod
    def from_arrays(cls, arrays, config):
        extra = {k: v for k, v in config.items() if k not in ("qmin", "qmax", "relu")}
        return cls(arrays["weight_q"], arrays["weight_scale"], arrays["weight_zero_point"], arrays.get("bias_q"),
                   arrays["input_scale"], arrays["input_zero_point"], arrays["output_scale"],
                   arrays["output_zero_point"], config["qmin"], config["qmax"], config["relu"], **extra)


class QuantizedLinear(_IntegerLayer):
    """Integer-only y = x W^T + b:

        acc[i, o] = sum_k (q1[i, k] - Z1) * (q2[o, k] - Z2[o]) + q_bias[o]         (int32)
        q3[i, o]  = clamp(Z3 + round(M[o] * acc[i, o]), qmin, qmax),  M = S1 S2 / S3 = M0 * 2^-n
    Input and output are QTensors (unsigned activations), the weight is int8 (per-channel or per-tensor).
    """

    rounding = "single"  # as LiteRT's int8 FULLY_CONNECTED (measured bit for bit, tests/test_export.py)

    def columns(self, x):
        """The rows (q1 - Z1) that meet the weight: (N, in_features) float32 holding integers."""
        self._check_input(x)
        if x.q.ndim != 2 or x.q.shape[1] != self.weight_q.shape[1]:
            raise ValueError(f"QuantizedLinear(in_features={self.weight_q.shape[1]}): input shape {x.q.shape}")
        return x.q.astype(np.float32) - np.float32(self.input_zero_point)

    def accumulate(self, cols, engine=None):
        """int32 accumulators (N, out): sum_k (q1 - Z1)(q2 - Z2) + q_bias (engine: see int_matmul)."""
        acc = int_matmul(cols, self._w.T, self._a_bound(), self._w_bound, engine)
        if self.bias_q is not None:
            acc += self.bias_q
        return acc

    def forward(self, x):
        q = self._output(self.accumulate(self.columns(x)), channel_axis=1)
        return QTensor(q, self.output_scale, self.output_zero_point, self.qmin, self.qmax)


class QuantizedConv2d(_IntegerLayer):
    """Integer-only convolution: the same accumulation as QuantizedLinear over im2col windows.

    Padding is added to (q1 - Z1), i.e. with the integer that stands for real 0, so it is exact.
    """

    rounding = "double"  # as LiteRT's int8 CONV_2D (measured bit for bit, tests/test_export.py)

    def __init__(self, *args, stride=(1, 1), padding=(0, 0), **kwargs):
        super().__init__(*args, **kwargs)
        self.stride, self.padding = tuple(int(s) for s in stride), tuple(int(p) for p in padding)

    def _extra_config(self):
        return {"stride": list(self.stride), "padding": list(self.padding)}

    def output_size(self, x):
        (kh, kw), (sh, sw), (ph, pw) = self.weight_q.shape[2:], self.stride, self.padding
        return (x.q.shape[2] + 2 * ph - kh) // sh + 1, (x.q.shape[3] + 2 * pw - kw) // sw + 1

    def columns(self, x):
        """im2col of (q1 - Z1), transposed: (C * kh * kw, N * Ho * Wo) float32 holding integers.

        Channels-first columns keep the long axis (pixels) innermost, so both the copy and the per-channel
        requantization that follow run over long contiguous rows.
        """
        self._check_input(x)
        o, c, kh, kw = self.weight_q.shape
        if x.q.ndim != 4 or x.q.shape[1] != c:
            raise ValueError(f"QuantizedConv2d(in_channels={c}): input shape {x.q.shape}")
        (sh, sw), (ph, pw) = self.stride, self.padding
        xs = x.q.astype(np.float32) - np.float32(self.input_zero_point)
        if ph or pw:
            xs = np.pad(xs, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        win = sliding_window_view(xs, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
        return win.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, -1)

    def accumulate(self, cols, engine=None):
        """int32 accumulators (out, N * Ho * Wo): sum_k (q2 - Z2)(q1 - Z1) + q_bias (engine: see int_matmul)."""
        acc = int_matmul(self._w, cols, self._w_bound, self._a_bound(), engine)
        if self.bias_q is not None:
            acc += self.bias_q[:, None]
        return acc

    def forward(self, x):
        (ho, wo), n = self.output_size(x), x.q.shape[0]
        q = self._output(self.accumulate(self.columns(x)), channel_axis=0)
        return QTensor(q.reshape(-1, n, ho, wo).transpose(1, 0, 2, 3), self.output_scale, self.output_zero_point,
                       self.qmin, self.qmax)


class QuantizedMaxPool2d(nn.Module):
    """Max pooling directly on the integers: q -> S (q - Z) is increasing, so the max commutes with it.
    Padding uses qmin, which never beats a real entry (as -inf in float)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = self.kernel_size if stride is None else _pair(stride)
        self.padding = _pair(padding)

    def forward(self, x):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        q = x.q
        if ph or pw:
            q = np.pad(q, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=x.qmin)
        ho, wo = (q.shape[2] - kh) // sh + 1, (q.shape[3] - kw) // sw + 1
        out = None
        for i in range(kh):  # loop over the kernel window only: each step is one vectorised slice
            for j in range(kw):
                part = q[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw]
                out = part.copy() if out is None else np.maximum(out, part, out=out)
        return QTensor(out, x.scale, x.zero_point, x.qmin, x.qmax)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"

    def to_arrays(self):
        return {}, {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding)}

    @classmethod
    def from_arrays(cls, arrays, config):
        return cls(config["kernel_size"], config["stride"], config["padding"])


class QuantizedAvgPool2d(QuantizedMaxPool2d):
    """Average pooling on the integers, keeping (S, Z): mean(S (q - Z)) = S (mean(q) - Z), so
    q_out = round(sum(q) / (kh * kw)), an integer division. Padding uses Z (real 0, counted in the
    mean as PyTorch's default count_include_pad=True).

    Ties are rounded as TFLite's int8 AVERAGE_POOL_2D does: half away from zero on the int8 codes. Unsigned
    codes q in [0, 255] are int8 codes q - 128 there, so c = 128 is subtracted first and added back:
    q_out = c + sign(s) * floor((|s| + k // 2) / k), s = sum(q - c), k = kh * kw (e.g. codes 127, 128 -> 127).
    """

    def forward(self, x):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        q = x.q
        if ph or pw:
            q = np.pad(q, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=int(x.zero_point))
        ho, wo = (q.shape[2] - kh) // sh + 1, (q.shape[3] - kw) // sw + 1
        total = np.zeros(q.shape[:2] + (ho, wo), dtype=np.int32)
        for i in range(kh):
            for j in range(kw):
                total += q[:, :, i : i + sh * ho : sh, j : j + sw * wo : sw]
        k, c = kh * kw, 128 if x.qmin >= 0 else 0
        s = total - np.int32(c * k)
        mean = np.sign(s) * ((np.abs(s) + k // 2) // k) + c
        return QTensor(mean.astype(q.dtype), x.scale, x.zero_point, x.qmin, x.qmax)


class QuantizedReLU(nn.Module):
    """relu on integers: q -> max(q, Z) (real 0 is Z)."""

    def forward(self, x):
        return QTensor(np.maximum(x.q, np.asarray(x.zero_point, x.q.dtype)), x.scale, x.zero_point, x.qmin, x.qmax)

    def to_arrays(self):
        return {}, {}

    @classmethod
    def from_arrays(cls, arrays, config):
        return cls()


class QuantizedFlatten(nn.Module):
    """Flatten the integers from ``start_dim`` on; the quantization parameters do not change."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = int(start_dim)

    def forward(self, x):
        q = x.q.reshape(x.q.shape[: self.start_dim] + (-1,))
        return QTensor(q, x.scale, x.zero_point, x.qmin, x.qmax)

    def to_arrays(self):
        return {}, {"start_dim": self.start_dim}

    @classmethod
    def from_arrays(cls, arrays, config):
        return cls(config["start_dim"])
