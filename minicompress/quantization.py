"""Quantization: from q = round(w * 255) to integer-only inference.

The affine map of Jacob et al. (2018) ties a real value r to an integer q:

    r = S * (q - Z)                                  dequantize
    q = clamp(round(r / S) + Z, qmin, qmax)          quantize (round half to even)

S (``scale``) is a positive real, Z (``zero_point``) the integer that stands for r = 0 exactly.
The course writes q = round(w * s) with s = 1 / S: the seed example q = round(w * 255) is S = 1/255, Z = 0,
[qmin, qmax] = [0, 255] for w in [0, 1].

The file follows the order of the lecture:

1. the arithmetic: ``qrange``, ``qparams`` (PyTorch's MinMaxObserver formula, bit for bit), ``quantize``,
   ``dequantize``, per tensor and per channel;
2. observers that watch data and choose (S, Z): min-max, moving-average min-max, per-channel, MSE search;
3. fake quantization with the clipped straight-through estimator (for quantization-aware training);
4. integer arithmetic: exact int32 accumulation with float BLAS, the fixed-point multiplier M = 2^-n * M0,
   rounded as TensorFlow Lite's kernels round it (so ``minicompress.export`` files give the same integers);
5. integer-only layers (``QuantizedLinear``, ``QuantizedConv2d``, ...);
6. dynamic quantization (``quantize_dynamic``);
7. static post-training quantization (``prepare`` -> calibrate -> ``convert``) with batch-norm folding;
8. quantization-aware training (``prepare_qat`` -> fine-tune -> ``convert``);
9. weight sharing (Deep Compression): k-means codebooks, fine-tuned with per-cluster summed gradients;
10. sizes in bytes and lossless save / load.

Arithmetic is float32, as in PyTorch: r / S is computed as r * (1 / S) with 1 / S rounded to float32, which is what
PyTorch's fake quantization does bit for bit (see ``quantize`` for where PyTorch's own quantizers differ at ties).
"""
import copy
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import checkpoint, nn
from . import functional as F
from .tensor import Function, Tensor, no_grad

FLOAT32_EPS = np.float32(np.finfo(np.float32).eps)  # PyTorch's observer eps: the smallest scale allowed

# ====================================================================================================================
# 1. The arithmetic
# ====================================================================================================================


def _check_bits(bits, fn):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ValueError(f"{fn}: bits must be an integer in [2, 16], got {bits!r}")
    return int(bits)


def _as_array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def _check_finite(x, fn, name):
    if not np.all(np.isfinite(x)):
        bad = x[~np.isfinite(x)].ravel()[0]
        raise ValueError(f"{fn}: {name} must be finite, found {bad} (NaN or Inf cannot be quantized)")


def _check_qparams(scale, zero_point, fn):
    """A scale must be finite, > 0 and have a float32 inverse; a zero point must be a whole number (int32)."""
    scale, zero_point = np.asarray(scale, dtype=np.float64), np.asarray(zero_point)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        bad = ~(np.isfinite(scale) & (scale > 0) & (np.float32(1.0) / scale.astype(np.float32) < np.inf))
    if bad.any():
        raise ValueError(f"{fn}: scale must be > 0, finite and large enough for 1 / S to fit float32 "
                         f"(S >= {1 / np.finfo(np.float32).max:.3g}), got {scale[bad].ravel()[0]}")
    if not np.issubdtype(zero_point.dtype, np.integer):
        floating = zero_point.dtype.kind == "f"
        if not (floating and np.all(np.isfinite(zero_point) & (zero_point == np.round(zero_point)))):
            raise ValueError(f"{fn}: zero_point must be a whole number (an int32), got {zero_point.ravel()[0]!r}")
    if np.any(np.abs(zero_point.astype(np.float64)) > np.iinfo(np.int32).max):
        raise ValueError(f"{fn}: zero_point must fit int32, got {zero_point.ravel()[0]!r}")


def _check_qrange(qmin, qmax, fn):
    """qmin <= qmax, both whole numbers: otherwise every value would be clamped to one end, silently."""
    for name, v in (("qmin", qmin), ("qmax", qmax)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{fn}: {name} must be an integer, got {v!r}")
    if qmin > qmax:
        raise ValueError(f"{fn}: qmin must be <= qmax, got qmin={qmin}, qmax={qmax}")


def qrange(bits=8, signed=True, narrow_range=False):
    """The integer range [qmin, qmax] of a ``bits``-bit code.

    signed: [-2^(bits-1), 2^(bits-1) - 1] (int8: [-128, 127]); unsigned: [0, 2^bits - 1] (uint8: [0, 255]).
    ``narrow_range`` drops the lowest code (TFLite's int8 weights use [-127, 127], symmetric around 0).
    """
    bits = _check_bits(bits, "qrange")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return (qmin + 1 if narrow_range else qmin), qmax


def _int_dtype(qmin, qmax):
    """The narrowest NumPy integer type that holds [qmin, qmax]."""
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= qmin and qmax <= info.max:
            return dt
    return np.int64


def qparams(min_val, max_val, bits=8, symmetric=False, signed=True, narrow_range=False):
    """Scale S and zero point Z for an observed range [min_val, max_val] (scalars or per-channel arrays).

    As PyTorch's MinMaxObserver, in float32, bit for bit:
        min' = min(min_val, 0), max' = max(max_val, 0)           (0 must be representable)
        affine:    S = max((max' - min') / (qmax - qmin), eps),  Z = clamp(qmin - round(min' / S), qmin, qmax)
        symmetric: S = max(max(-min', max') / ((qmax - qmin) / 2), eps),  Z = 0 (signed) or 2^(bits-1) (unsigned)
    eps = float32 machine epsilon, so a constant or all-zero tensor gets a valid scale, never a division by zero.
    With ``narrow_range`` and symmetric signed codes this is TFLite's S = max|w| / 127.
    (PyTorch centres an unsigned symmetric custom range at (qmin + qmax) // 2; we use 2^(bits-1), equal for 8 bits.)
    Returns (scale float32, zero_point int32) with the shape of the inputs (NumPy scalars for scalar inputs).
    """
    lo = np.asarray(_as_array(min_val), dtype=np.float32)
    hi = np.asarray(_as_array(max_val), dtype=np.float32)
    if lo.shape != hi.shape:
        raise ValueError(f"qparams: min_val shape {lo.shape} and max_val shape {hi.shape} differ")
    if lo.size == 0:
        raise ValueError("qparams: empty min_val / max_val (nothing was observed)")
    _check_finite(lo, "qparams", "min_val")
    _check_finite(hi, "qparams", "max_val")
    if np.any(lo > hi):
        i = np.argmax(lo > hi)
        raise ValueError(f"qparams: min_val must be <= max_val, got min {lo.ravel()[i]} > max {hi.ravel()[i]}")
    qmin, qmax = qrange(bits, signed, narrow_range)
    lo, hi = np.minimum(lo, np.float32(0)), np.maximum(hi, np.float32(0))
    if symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / np.float32((qmax - qmin) / 2), FLOAT32_EPS)
        zero_point = np.full(lo.shape, 0 if signed else 2 ** (bits - 1), dtype=np.int32)
    else:
        with np.errstate(over="ignore"):
            scale = np.maximum((hi - lo) / np.float32(qmax - qmin), FLOAT32_EPS)
        # max - min overflows float32 for ranges past +-1.7e38, while the scale itself fits: take those in float64
        scale = np.where(np.isfinite(scale), scale, ((hi.astype(np.float64) - lo) / (qmax - qmin)).astype(np.float32))
        zero_point = np.clip(qmin - np.round(lo / scale), qmin, qmax).astype(np.int32)
    if scale.ndim == 0:
        return np.float32(scale), np.int32(zero_point)
    return scale.astype(np.float32), zero_point


def _along(param, ndim, axis):
    """Reshape a per-channel parameter (C,) so it broadcasts along ``axis`` of an ndim-array; scalars unchanged."""
    param = np.asarray(param)
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = -1
    return param.reshape(shape)


def _check_axis(x, scale, axis, fn):
    if axis is None:
        if np.ndim(scale) != 0:
            raise ValueError(f"{fn}: a per-channel scale of shape {np.shape(scale)} needs axis=")
        return None
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis={axis} out of range for an input of shape {x.shape}")
    axis = axis % x.ndim
    if np.size(scale) != x.shape[axis]:
        raise ValueError(f"{fn}: {np.size(scale)} scales for axis {axis} of size {x.shape[axis]} (shape {x.shape})")
    return axis


def _round_and_shift(x, scale, zero_point, axis):
    """round(x / S) + Z before clamping, as float32; also returns S and Z shaped to broadcast along ``axis``.

    x / S is computed as x * (1 / S) in float32, as PyTorch's fake quantization does (see ``quantize``).
    """
    S = _along(np.asarray(scale, dtype=np.float32), x.ndim, axis)
    Z = _along(np.asarray(zero_point, dtype=np.float32), x.ndim, axis)
    with np.errstate(over="ignore"):  # past float32, x / S becomes +-inf, which the clamp maps to qmin or qmax
        return np.round(x.astype(np.float32) * (np.float32(1.0) / S)) + Z, S, Z


def quantize(x, scale, zero_point, qmin, qmax, axis=None):
    """q = clamp(round(x / S) + Z, qmin, qmax), round half to even; per channel along ``axis`` if given.

    Returns the narrowest integer array that holds [qmin, qmax] (uint8 for [0, 255], int8 for [-128, 127]).

    Ties, measured against PyTorch 2.13 on the CPU (tests/test_quantization_ties.py): x / S is computed as
    x * (1 / S) in float32, rounded half to even, and Z is added after rounding. That is bit for bit PyTorch's
    fake quantization (per tensor and per channel), so a QAT model and its converted integer model agree.
    PyTorch's real quantizers add Z before rounding, round(x * (1 / S) + Z); torch.quantize_per_tensor to
    quint8 / qint8 even fuses the multiply and the add (one FMA: the product is not rounded to float32). Both
    differ from the line below only where x * (1 / S) lies within one float32 rounding of a half-integer.
    Example, quint8, x = -1.9967061, S = 0.015660440549254417, Z = 128: the product -127.4999964 rounds to
    -127.5 in float32, so here q = round(-127.5) + 128 = 0, while PyTorch's fused round(0.5000036) gives 1.
    """
    x = np.asarray(_as_array(x), dtype=np.float32)
    _check_finite(x, "quantize", "x")
    axis = _check_axis(x, scale, axis, "quantize")
    _check_qparams(scale, zero_point, "quantize")
    _check_qrange(qmin, qmax, "quantize")
    q, _, _ = _round_and_shift(x, scale, zero_point, axis)
    return np.clip(q, qmin, qmax).astype(_int_dtype(qmin, qmax))


def dequantize(q, scale, zero_point, axis=None):
    """r_hat = S * (q - Z) in float32; per channel along ``axis`` if given."""
    q = np.asarray(q)
    axis = _check_axis(q, scale, axis, "dequantize")
    _check_qparams(scale, zero_point, "dequantize")
    scale = _along(np.asarray(scale, dtype=np.float32), q.ndim, axis)
    zero_point = _along(np.asarray(zero_point, dtype=np.int32), q.ndim, axis)
    return (q.astype(np.int32) - zero_point).astype(np.float32) * scale


class QTensor:
    """Integers q with their (scale, zero_point, qmin, qmax, axis): the value they stand for is S * (q - Z)."""

    def __init__(self, q, scale, zero_point, qmin, qmax, axis=None):
        self.q, self.scale, self.zero_point = q, scale, zero_point
        self.qmin, self.qmax, self.axis = int(qmin), int(qmax), axis

    @property
    def shape(self):
        return self.q.shape

    def dequantize(self):
        return dequantize(self.q, self.scale, self.zero_point, self.axis)

    def __repr__(self):
        return (f"QTensor(shape={self.q.shape}, dtype={self.q.dtype}, scale={self.scale}, "
                f"zero_point={self.zero_point}, range=[{self.qmin}, {self.qmax}])")


def _minmax(x, axis):
    if axis is None:
        return x.min(), x.max()
    other = tuple(i for i in range(x.ndim) if i != axis)
    return x.min(axis=other), x.max(axis=other)


def quantize_tensor(x, bits=8, symmetric=False, signed=True, narrow_range=False, axis=None):
    """Quantize x with (S, Z) from its own min and max (per tensor, or per channel along ``axis``): a QTensor."""
    x = np.asarray(_as_array(x), dtype=np.float32)
    if x.size == 0:
        raise ValueError(f"quantize_tensor: empty input of shape {x.shape}")
    _check_finite(x, "quantize_tensor", "x")
    if axis is not None:
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(f"quantize_tensor: axis={axis} out of range for an input of shape {x.shape}")
        axis %= x.ndim
    scale, zero_point = qparams(*_minmax(x, axis), bits, symmetric, signed, narrow_range)
    qmin, qmax = qrange(bits, signed, narrow_range)
    return QTensor(quantize(x, scale, zero_point, qmin, qmax, axis), scale, zero_point, qmin, qmax, axis)


# ====================================================================================================================
# 2. Observers: watch the data, then calculate_qparams() as PyTorch
# ====================================================================================================================


class Observer(nn.Module):
    """Records the range of what flows through it (returned unchanged) and turns it into (scale, zero_point).

    bits / symmetric / signed / narrow_range fix the integer code (activations: unsigned affine by default).
    Empty inputs are ignored (as PyTorch); NaN or Inf raise.
    """

    def __init__(self, bits=8, symmetric=False, signed=False, narrow_range=False):
        super().__init__()
        self.bits, self.symmetric, self.signed, self.narrow_range = bits, symmetric, signed, narrow_range
        self.qmin, self.qmax = qrange(bits, signed, narrow_range)
        self.min_val = self.max_val = None

    def forward(self, x):
        data = _as_array(x)
        if data.size:
            _check_finite(data, type(self).__name__, "input")
            self.observe(np.asarray(data, dtype=np.float32))
        return x

    def observe(self, x):
        raise NotImplementedError

    def calculate_qparams(self):
        """(scale, zero_point) from the recorded range (see ``qparams``)."""
        if self.min_val is None:
            raise RuntimeError(f"{type(self).__name__}.calculate_qparams: no data observed yet (run calibration data)")
        return qparams(self.min_val, self.max_val, self.bits, self.symmetric, self.signed, self.narrow_range)


class MinMaxObserver(Observer):
    """Running minimum and maximum over everything seen: x_min <- min(x_min, min(X))."""

    def observe(self, x):
        lo, hi = x.min(), x.max()
        self.min_val = lo if self.min_val is None else np.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else np.maximum(self.max_val, hi)


class MovingAverageMinMaxObserver(Observer):
    """x_min <- x_min + c * (min(X) - x_min) (same for max), c = ``averaging_constant`` = 0.01 as PyTorch;
    the first batch sets the range directly."""

    def __init__(self, averaging_constant=0.01, **kwargs):
        super().__init__(**kwargs)
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"MovingAverageMinMaxObserver: averaging_constant must be in (0, 1], "
                             f"got {averaging_constant}")
        self.averaging_constant = np.float32(averaging_constant)

    def observe(self, x):
        lo, hi, c = x.min(), x.max(), self.averaging_constant
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + c * (lo - self.min_val)
            self.max_val = self.max_val + c * (hi - self.max_val)


class PerChannelMinMaxObserver(Observer):
    """One running [min, max] per channel along ``axis`` (axis 0 = output channels of a weight)."""

    def __init__(self, axis=0, bits=8, symmetric=True, signed=True, narrow_range=False):
        super().__init__(bits, symmetric, signed, narrow_range)
        self.axis = axis

    def observe(self, x):
        lo, hi = _minmax(x, self.axis % x.ndim)
        if self.min_val is not None and self.min_val.shape != lo.shape:
            raise ValueError(f"PerChannelMinMaxObserver: got {lo.size} channels along axis {self.axis} "
                             f"after {self.min_val.size}")
        self.min_val = lo if self.min_val is None else np.minimum(self.min_val, lo)
        self.max_val = hi if self.max_val is None else np.maximum(self.max_val, hi)


class MSEObserver(Observer):
    """Chooses the clipping range that minimises the quantization error instead of the full [min, max].

    Keeps a histogram of everything seen (``bins`` bins over the running range). calculate_qparams tries the
    ranges [a * min, a * max] for a in ``grid`` (shrinking towards 0) and keeps the one with the smallest
    estimated mean squared error sum_b count_b * (c_b - dequantize(quantize(c_b)))^2 over bin centres c_b.
    Clipping a few outliers buys a finer grid for everything else.
    """

    def __init__(self, bins=2048, grid=None, **kwargs):
        super().__init__(**kwargs)
        self.bins = int(bins)
        self.grid = np.linspace(0.05, 1.0, 96) if grid is None else np.asarray(grid, dtype=np.float64)
        self.hist = None

    def observe(self, x):
        lo, hi = float(min(x.min(), 0.0)), float(max(x.max(), 0.0))
        if self.hist is not None:
            lo, hi = min(lo, self.min_val), max(hi, self.max_val)
        if hi == lo:
            hi = lo + 1e-8
        edges = np.linspace(lo, hi, self.bins + 1)
        counts = np.histogram(x, bins=edges)[0].astype(np.float64)
        if self.hist is not None:  # re-bin the old histogram onto the (possibly wider) new edges
            centres = (self._edges[:-1] + self._edges[1:]) / 2
            counts += np.histogram(centres, bins=edges, weights=self.hist)[0]
        self.hist, self._edges = counts, edges
        self.min_val, self.max_val = np.float32(lo), np.float32(hi)

    def mse(self, lo, hi):
        """Estimated mean squared quantization error if [lo, hi] is the range."""
        scale, zero_point = qparams(lo, hi, self.bits, self.symmetric, self.signed, self.narrow_range)
        centres = ((self._edges[:-1] + self._edges[1:]) / 2).astype(np.float32)
        err = centres - dequantize(quantize(centres, scale, zero_point, self.qmin, self.qmax), scale, zero_point)
        return float(np.sum(self.hist * err.astype(np.float64) ** 2) / max(self.hist.sum(), 1.0))

    def calculate_qparams(self):
        if self.hist is None:
            raise RuntimeError("MSEObserver.calculate_qparams: no data observed yet (run calibration data)")
        errors = [self.mse(a * self.min_val, a * self.max_val) for a in self.grid]
        a = self.grid[int(np.argmin(errors))]
        return qparams(np.float32(a * self.min_val), np.float32(a * self.max_val), self.bits, self.symmetric,
                       self.signed, self.narrow_range)


# ====================================================================================================================
# 3. Fake quantization: quantize-dequantize in float, straight-through gradient inside the range
# ====================================================================================================================


class FakeQuantizeFunction(Function):
    """forward:  x_hat = S * (clamp(round(x / S) + Z, qmin, qmax) - Z)            (a staircase)
    backward: dL/dx = dL/dx_hat * 1[qmin <= round(x / S) + Z <= qmax]           (clipped straight-through)

    The staircase has zero derivative almost everywhere; the straight-through estimator pretends it is the
    identity inside the range and cuts the gradient where the value was clamped, as PyTorch's
    fake_quantize_per_tensor_affine / per_channel_affine. Per channel along ``axis`` when scale is an array.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis=None):
        q, S, Z = _round_and_shift(x, scale, zero_point, axis)
        ctx.mask = (q >= qmin) & (q <= qmax)
        return ((np.clip(q, qmin, qmax) - Z) * S).astype(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.mask, None, None, None, None, None


def fake_quantize(x, scale, zero_point, qmin, qmax, axis=None):
    """Differentiable quantize-dequantize (see FakeQuantizeFunction). x: Tensor or array; returns a Tensor."""
    data = _as_array(x)
    _check_finite(data, "fake_quantize", "x")
    axis = _check_axis(data, scale, axis, "fake_quantize")
    _check_qparams(scale, zero_point, "fake_quantize")
    _check_qrange(qmin, qmax, "fake_quantize")
    return FakeQuantizeFunction.apply(x, scale, zero_point, qmin, qmax, axis)


class FakeQuantize(nn.Module):
    """An observer plus fake quantization, for activations in QAT. In training mode the observer is updated
    with every batch (moving average by default); in eval mode the range is frozen. ``freeze(scale,
    zero_point)`` fixes the parameters for good (e.g. to ranges calibrated before QAT)."""

    def __init__(self, observer=None):
        super().__init__()
        self.observer = MovingAverageMinMaxObserver() if observer is None else observer
        self.frozen = None

    def freeze(self, scale, zero_point):
        self.frozen = (np.float32(scale), np.int32(zero_point))

    def calculate_qparams(self):
        return self.frozen if self.frozen is not None else self.observer.calculate_qparams()

    def forward(self, x):
        if self.frozen is None and (self.training or self.observer.min_val is None):
            self.observer(x)
        scale, zero_point = self.calculate_qparams()
        return fake_quantize(x, scale, zero_point, self.observer.qmin, self.observer.qmax)


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


# ====================================================================================================================
# 6. Dynamic quantization: int8 weights now, activations quantized on the fly
# ====================================================================================================================


class DynamicQuantizedLinear(nn.Module):
    """Linear with int8 weights (symmetric, per tensor by default as PyTorch's default_weight_observer) and float
    input/output. Each call quantizes the input with (S_x, Z_x) from its own min/max (unsigned, as PyTorch),
    accumulates in int32 and rescales:  y = (S_x * S_w) * sum_k (q_x - Z_x)(q_w - Z_w) + b  (float32).
    ``reduce_range`` uses 7-bit activations [0, 127], as PyTorch's fbgemm backend does to avoid overflow in
    its 16-bit intermediate products.
    """

    def __init__(self, weight_q, weight_scale, weight_zero_point, bias, bits=8, reduce_range=False):
        super().__init__()
        self.weight_q = np.asarray(weight_q)
        out = self.weight_q.shape[0]
        self.weight_scale = np.broadcast_to(np.asarray(weight_scale, np.float32), (out,)).copy()
        self.weight_zero_point = np.broadcast_to(np.asarray(weight_zero_point, np.int32), (out,)).copy()
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        self.bits, self.reduce_range = int(bits), bool(reduce_range)
        self.in_features, self.out_features = self.weight_q.shape[1], out
        act_bits = self.bits - 1 if self.reduce_range else self.bits
        self.act_qmin, self.act_qmax = qrange(act_bits, signed=False)
        w = self.weight_q.astype(np.int32) - self.weight_zero_point[:, None]
        self._w_bound = int(np.abs(w).max()) if w.size else 0
        self._w = w.astype(np.float32)

    @classmethod
    def from_float(cls, linear, bits=8, per_channel=False, reduce_range=False):
        w = _param(linear.weight).astype(np.float32)
        axis = 0 if per_channel else None
        qw = quantize_tensor(w, bits, symmetric=True, signed=True, axis=axis)
        bias = None if linear.bias is None else _param(linear.bias)
        return cls(qw.q, qw.scale, qw.zero_point, bias, bits, reduce_range)

    def forward(self, x):
        x = np.asarray(_as_array(x), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"DynamicQuantizedLinear(in_features={self.in_features}): input shape {x.shape}")
        _check_finite(x, "DynamicQuantizedLinear", "input")
        if x.size == 0:
            return Tensor(np.zeros((x.shape[0], self.out_features), np.float32))
        act_bits = self.bits - 1 if self.reduce_range else self.bits
        s_x, z_x = qparams(x.min(), x.max(), act_bits, signed=False)
        q_x = quantize(x, s_x, z_x, self.act_qmin, self.act_qmax)
        a = q_x.astype(np.float32) - np.float32(z_x)
        acc = int_matmul(a, self._w.T, a_bound=max(int(z_x) - self.act_qmin, self.act_qmax - int(z_x)),
                         b_bound=self._w_bound)
        y = acc.astype(np.float32) * (np.float32(s_x) * self.weight_scale)
        if self.bias is not None:
            y += self.bias
        return Tensor(y)

    def to_arrays(self):
        arrays = {"weight_q": self.weight_q, "weight_scale": self.weight_scale,
                  "weight_zero_point": self.weight_zero_point}
        if self.bias is not None:
            arrays["bias"] = self.bias
        return arrays, {"bits": self.bits, "reduce_range": self.reduce_range}

    @classmethod
    def from_arrays(cls, arrays, config):
        return cls(arrays["weight_q"], arrays["weight_scale"], arrays["weight_zero_point"], arrays.get("bias"),
                   config["bits"], config["reduce_range"])

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


def _replace_modules(module, types, make, prefix=""):
    """Replace, depth first, every child whose type is in ``types`` by make(child); returns the names replaced."""
    replaced = []
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, types):
            module._modules[name] = make(child)  # in place: setattr would move the child to the end of the order
            replaced.append(full)
        else:
            replaced += _replace_modules(child, types, make, full + ".")
    return replaced


def quantize_dynamic(model, bits=8, per_channel=False, reduce_range=False, inplace=False):
    """Replace every nn.Linear of ``model`` by a DynamicQuantizedLinear (as torch.ao.quantization.quantize_dynamic).

    Weights become ``bits``-bit symmetric integers now; activations are quantized batch by batch at run time.
    Convolutions stay float (PyTorch's default too). Returns the quantized model (a copy unless ``inplace``);
    ``model.quantized_layers`` lists the replaced module names.
    """
    _check_bits(bits, "quantize_dynamic")
    if isinstance(model, nn.Linear):
        return DynamicQuantizedLinear.from_float(model, bits, per_channel, reduce_range)
    qmodel = model if inplace else copy.deepcopy(model)
    qmodel.quantized_layers = _replace_modules(
        qmodel, (nn.Linear,), lambda m: DynamicQuantizedLinear.from_float(m, bits, per_channel, reduce_range))
    if not qmodel.quantized_layers:
        raise ValueError(f"quantize_dynamic: {type(model).__name__} has no nn.Linear layer to quantize")
    qmodel.eval()
    return qmodel


# ====================================================================================================================
# 7. Static post-training quantization: fold batch norm, observe, convert
# ====================================================================================================================


def fold_batch_norm(weight, bias, bn):
    """Fold an eval-mode batch norm into the preceding conv / linear weights (per output channel o):

        W'[o] = W[o] * gamma[o] / sqrt(var[o] + eps),   b'[o] = (b[o] - mean[o]) * gamma[o] / sqrt(var[o] + eps) + beta[o]
    so that bn(conv(x; W, b)) = conv(x; W', b'). Returns float32 (W', b').
    """
    gamma = _param(bn.weight) if getattr(bn, "weight", None) is not None else 1.0
    beta = _param(bn.bias) if getattr(bn, "bias", None) is not None else 0.0
    mean, var = _param(bn.running_mean), _param(bn.running_var)
    factor = (gamma / np.sqrt(var + bn.eps)).astype(np.float32)
    w = _param(weight) * factor.reshape((-1,) + (1,) * (_param(weight).ndim - 1))
    b = (0.0 if bias is None else _param(bias)) - mean
    return w.astype(np.float32), (b * factor + beta).astype(np.float32)


class QuantStub(nn.Module):
    """Marks where floats enter the quantized region; holds the observer (or FakeQuantize) of the input."""

    def __init__(self, activation_post_process):
        super().__init__()
        self.activation_post_process = activation_post_process

    def forward(self, x):
        return self.activation_post_process(x)


class DeQuantStub(nn.Module):
    """Marks where the quantized region ends (identity in float)."""

    def forward(self, x):
        return x


class _FusedLayer(nn.Module):
    """conv / linear (+ folded batch norm) (+ ReLU) followed by the observer of its output.

    In QAT mode the weight is fake-quantized (per-channel or per-tensor symmetric, range taken from the
    current weight) and ``activation_post_process`` is a FakeQuantize, so training sees the rounding.
    """

    def __init__(self, weight, bias, relu, activation_post_process, bits, per_channel, qat):
        super().__init__()
        self.weight = nn.Parameter(np.asarray(weight, dtype=np.float32))
        self.bias = None if bias is None else nn.Parameter(np.asarray(bias, dtype=np.float32))
        self.relu, self.bits, self.per_channel, self.qat = relu, bits, per_channel, qat
        self.activation_post_process = activation_post_process

    def weight_qparams(self):
        """(S2, Z2, qmin, qmax, axis) of the weight: symmetric signed, per channel along axis 0 or per tensor."""
        w = _param(self.weight)
        axis = 0 if self.per_channel else None
        scale, zero_point = qparams(*_minmax(w, axis), self.bits, symmetric=True, signed=True)
        return (scale, zero_point) + qrange(self.bits) + (axis,)

    def _weight(self):
        if not self.qat:
            return self.weight
        scale, zero_point, qmin, qmax, axis = self.weight_qparams()
        return fake_quantize(self.weight, scale, zero_point, qmin, qmax, axis)

    def forward(self, x):
        y = self._op(x, self._weight())
        if self.relu:
            y = F.relu(y)
        return self.activation_post_process(y)


class FusedLinear(_FusedLayer):
    def _op(self, x, w):
        return F.linear(x, w, self.bias)


class FusedConv2d(_FusedLayer):
    def __init__(self, weight, bias, relu, activation_post_process, bits, per_channel, qat, stride, padding):
        super().__init__(weight, bias, relu, activation_post_process, bits, per_channel, qat)
        self.stride, self.padding = stride, padding

    def _op(self, x, w):
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def _flatten_sequential(model, fn):
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"{fn}: static quantization and QAT need an nn.Sequential model (a chain of layers), "
                        f"got {type(model).__name__}; use quantize_dynamic for other models")
    layers = []
    for m in model:
        layers += _flatten_sequential(m, fn) if isinstance(m, nn.Sequential) else [m]
    return layers


_PASS_THROUGH = (nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.ReLU, nn.Dropout, nn.Identity)


def _prepare(model, make_observer, bits, per_channel, qat, fn, activation_bits):
    for name, b in (("bits", bits), ("activation_bits", activation_bits)):
        _check_bits(b, fn)
        if b > 8:
            raise ValueError(f"{fn}: integer-only layers support {name} <= 8 (int32 accumulation), got {b}")
    layers = _flatten_sequential(model, fn)
    out, i = [QuantStub(make_observer())], 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w, b = _param(m.weight).copy(), None if m.bias is None else _param(m.bias).copy()
            j = i + 1
            if j < len(layers) and isinstance(layers[j], (nn.BatchNorm1d, nn.BatchNorm2d)):
                w, b = fold_batch_norm(w, b, layers[j])
                j += 1
            relu = j < len(layers) and isinstance(layers[j], nn.ReLU)
            j += relu
            if isinstance(m, nn.Linear):
                out.append(FusedLinear(w, b, relu, make_observer(), bits, per_channel, qat))
            else:
                out.append(FusedConv2d(w, b, relu, make_observer(), bits, per_channel, qat,
                                       _pair(m.stride), _pair(m.padding)))
            i = j
        elif isinstance(m, _PASS_THROUGH):
            out.append(copy.deepcopy(m))
            i += 1
        else:
            raise TypeError(f"{fn}: layer {i} ({type(m).__name__}) cannot be quantized; supported: Linear, Conv2d "
                            f"(+ BatchNorm, ReLU), MaxPool2d, AvgPool2d, Flatten, ReLU, Dropout, Identity")
    out.append(DeQuantStub())
    prepared = nn.Sequential(*out)
    prepared.spec = getattr(model, "spec", None)
    return prepared


def prepare(model, bits=8, per_channel=True, observer=MinMaxObserver, activation_bits=None):
    """Static PTQ, step 1: a float copy of ``model`` (nn.Sequential) ready for calibration.

    Batch norm is folded into the preceding conv / linear, a following ReLU is fused into it, and an observer
    (``observer(bits=activation_bits)``, unsigned affine) watches the input and every fused layer's output. Run
    calibration batches through the result (``calibrate``), then ``convert``. Weights are quantized to ``bits``
    symmetric signed, per output channel (``per_channel``) or per tensor; activations to ``activation_bits``
    (default: ``bits``; "W4A8" is bits=4, activation_bits=8).
    """
    abits = bits if activation_bits is None else activation_bits
    prepared = _prepare(model, lambda: observer(bits=abits), bits, per_channel, qat=False, fn="prepare",
                        activation_bits=abits)
    return prepared.eval()


def calibrate(prepared, batches, num_batches=None):
    """Run float batches (arrays or (x, y) pairs from a DataLoader) through a prepared model so the observers
    record activation ranges. Returns the prepared model."""
    prepared.eval()
    with no_grad():
        for i, batch in enumerate(batches):
            if num_batches is not None and i >= num_batches:
                break
            prepared(batch[0] if isinstance(batch, (tuple, list)) else batch)
    return prepared


def convert(prepared):
    """Static PTQ / QAT, last step: an integer-only nn.Sequential from a calibrated or fine-tuned model.

    Weights: q_w = quantize(W, S2, 0) per channel; bias: q_b = round(b / (S1 * S2)) in int32; activations: the
    (S, Z) of each observer. Pass-through layers become their integer versions; Dropout / Identity vanish.
    """
    if not isinstance(prepared, nn.Sequential) or not isinstance(prepared[0], QuantStub):
        raise TypeError("convert: expects the output of prepare() or prepare_qat()")
    out, act = [], None
    for m in prepared:
        if isinstance(m, QuantStub):
            scale, zero_point = m.activation_post_process.calculate_qparams()
            obs = _observer_of(m.activation_post_process)
            act = (scale, zero_point, obs.qmin, obs.qmax)
            out.append(Quantize(*act))
        elif isinstance(m, _FusedLayer):
            s1, z1 = act[0], act[1]
            s2, z2, wmin, wmax, axis = m.weight_qparams()
            w = _param(m.weight)
            q_w = quantize(w, s2, z2, wmin, wmax, axis)
            bias_q = None
            if m.bias is not None:  # int32 bias with scale S1 * S2 and zero point 0
                bias_q = np.round(_param(m.bias).astype(np.float64) / (np.float64(s1) * s2)).astype(np.int32)
            s3, z3 = m.activation_post_process.calculate_qparams()
            obs = _observer_of(m.activation_post_process)
            args = (q_w, s2, z2, bias_q, s1, z1, s3, z3, obs.qmin, obs.qmax, m.relu, m.bits)
            if isinstance(m, FusedLinear):
                out.append(QuantizedLinear(*args))
            else:
                out.append(QuantizedConv2d(*args, stride=m.stride, padding=m.padding))
            act = (s3, z3, obs.qmin, obs.qmax)
        elif isinstance(m, nn.AvgPool2d):
            out.append(QuantizedAvgPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.MaxPool2d):
            out.append(QuantizedMaxPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.Flatten):
            out.append(QuantizedFlatten(getattr(m, "start_dim", 1)))
        elif isinstance(m, nn.ReLU):
            out.append(QuantizedReLU())
        elif isinstance(m, DeQuantStub):
            out.append(DeQuantize())
    converted = nn.Sequential(*out)
    converted.spec = getattr(prepared, "spec", None)
    return converted.eval()


def _observer_of(app):
    return app.observer if isinstance(app, FakeQuantize) else app


def quantize_static(model, batches, bits=8, per_channel=True, observer=MinMaxObserver, num_batches=None,
                    activation_bits=None):
    """prepare -> calibrate -> convert in one call; returns the integer-only model."""
    return convert(calibrate(prepare(model, bits, per_channel, observer, activation_bits), batches, num_batches))


# ====================================================================================================================
# 8. Quantization-aware training
# ====================================================================================================================


def prepare_qat(model, bits=8, per_channel=True, averaging_constant=0.01, activation_bits=None,
                init_batches=None, init_observer=MSEObserver):
    """A float copy of ``model`` that trains through the rounding: weights fake-quantized (symmetric, per
    channel by default) in every forward, activations fake-quantized with moving-average ranges
    (c = ``averaging_constant``). Batch norm is folded first (fine-tuning then trains the folded weights;
    PyTorch's ConvBn2d instead keeps updating the batch statistics). Fine-tune with any optimizer on
    ``parameters()``, then ``convert``. ``activation_bits`` as in ``prepare``.
    With ``init_batches``, activation ranges are instead calibrated once as in PTQ (``init_observer``, by
    default the MSE search) and frozen: training then only moves the weights onto the grid.
    """
    abits = bits if activation_bits is None else activation_bits

    def make():
        return FakeQuantize(MovingAverageMinMaxObserver(averaging_constant, bits=abits))

    qat = _prepare(model, make, bits, per_channel, qat=True, fn="prepare_qat", activation_bits=abits)
    if init_batches is not None:
        calibrated = calibrate(prepare(model, bits, per_channel, init_observer, abits), init_batches)
        for fq, obs in zip(_activation_modules(qat), _activation_modules(calibrated)):
            fq.freeze(*obs.calculate_qparams())
    return qat.train()


def _activation_modules(prepared):
    return [m.activation_post_process for m in prepared if hasattr(m, "activation_post_process")]


# ====================================================================================================================
# 9. Weight sharing (Han, Mao, Dally 2016, "Deep Compression")
# ====================================================================================================================


def kmeans_1d(w, k, iters=100):
    """1-D k-means of the values w with linear initialisation: c_j = min + j (max - min) / (k - 1).

    Lloyd iterations: assign each w to its nearest centroid (a sorted search over midpoints), move every
    centroid to the mean of its members (an empty cluster keeps its centroid). Stops when nothing moves.
    Returns (codebook float32 (k,), indices int64 like w).
    """
    w = np.asarray(_as_array(w), dtype=np.float64)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"kmeans_1d: k must be a positive integer, got {k!r}")
    if w.size == 0:
        raise ValueError("kmeans_1d: no weights to cluster")
    _check_finite(w, "kmeans_1d", "w")
    flat = w.ravel()
    codebook = np.linspace(flat.min(), flat.max(), k)
    idx = None
    for _ in range(iters):
        new_idx = np.searchsorted((codebook[1:] + codebook[:-1]) / 2, flat)
        if idx is not None and np.array_equal(new_idx, idx):
            break
        idx = new_idx
        counts = np.bincount(idx, minlength=k)
        sums = np.bincount(idx, weights=flat, minlength=k)
        codebook = np.where(counts > 0, sums / np.maximum(counts, 1), codebook)
        codebook.sort()  # Lloyd keeps the order in 1-D; sorting guards against float ties
    return codebook.astype(np.float32), idx.reshape(w.shape)


class SharedWeight(Function):
    """W = c[idx] (idx = -1 marks a pruned weight, W = 0).  dL/dc_j = sum over {i : idx_i = j} dL/dW_i:
    every weight of a cluster pushes its one shared value (Deep Compression's centroid fine-tuning)."""

    @staticmethod
    def forward(ctx, codebook, indices):
        ctx.indices, ctx.k = indices, codebook.shape[0]
        return np.where(indices >= 0, codebook[np.maximum(indices, 0)], 0).astype(codebook.dtype)

    @staticmethod
    def backward(ctx, grad):
        keep = ctx.indices >= 0
        g = np.bincount(ctx.indices[keep], weights=grad[keep], minlength=ctx.k).astype(grad.dtype)
        return g, None


def _share_weight_hook(module, inputs):
    module.weight = SharedWeight.apply(module.weight_codebook, _indices_of(module))


def share_weights(module, bits=5, name="weight"):
    """Cluster the surviving (non-zero) weights of ``module`` into k = 2^bits shared values, in place.

    As torch's pruning reparametrisation: the parameter ``weight`` is replaced by ``weight_codebook``
    (trainable, (k,)) and the buffer ``weight_indices`` (int64, -1 where the weight was pruned to zero); a
    forward pre-hook rebuilds weight = codebook[indices] before every forward. Returns the module.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"share_weights: bits must be an integer in [1, 16] (k = 2^bits), got {bits!r}")
    w = _param(getattr(module, name))
    alive = w != 0
    if not alive.any():
        raise ValueError(f"share_weights: {type(module).__name__}.{name} has no non-zero weight to cluster")
    k = min(2**bits, int(alive.sum()))
    codebook, idx_alive = kmeans_1d(w[alive], k)
    indices = np.full(w.shape, -1, dtype=np.int64)
    indices[alive] = idx_alive
    delattr(module, name)
    module.weight_codebook = nn.Parameter(codebook)
    module.register_buffer("weight_indices", indices)
    module.weight_bits = int(bits)
    module.register_forward_pre_hook(_share_weight_hook)
    _share_weight_hook(module, None)
    return module


def share_model_weights(model, bits=5, layers=(nn.Linear, nn.Conv2d)):
    """share_weights on every Linear / Conv2d of ``model`` (in place); ``bits`` may be a dict by layer type."""
    for _, m in model.named_modules():
        if isinstance(m, layers) and hasattr(m, "weight") and not hasattr(m, "weight_codebook"):
            share_weights(m, bits[type(m)] if isinstance(bits, dict) else bits)
    return model


def _indices_of(module):
    idx = module.weight_indices
    return np.asarray(idx.data if isinstance(idx, Tensor) else idx).astype(np.int64)


def export_shared(module):
    """The arrays that store a weight-shared layer: the float32 codebook, the indices of the surviving weights
    packed at ceil(log2 k) bits each, and (only if some weights are pruned) a 1-bit mask."""
    idx, codebook = _indices_of(module), _param(module.weight_codebook).astype(np.float32)
    bits = max(1, math.ceil(math.log2(codebook.size)))
    alive = idx >= 0
    arrays = {"codebook": codebook, "indices": pack_bits(idx[alive], bits)}
    if not alive.all():
        arrays["mask"] = np.packbits(alive.ravel())
    return arrays


def import_shared(arrays, shape):
    """Inverse of export_shared: the dense weight codebook[indices] (0 where pruned) of the given shape."""
    codebook = arrays["codebook"]
    n = int(np.prod(shape))
    alive = (np.unpackbits(arrays["mask"], count=n).astype(bool) if "mask" in arrays else np.ones(n, bool))
    bits = max(1, math.ceil(math.log2(codebook.size)))
    w = np.zeros(n, dtype=np.float32)
    w[alive] = codebook[unpack_bits(arrays["indices"], bits, int(alive.sum()))]
    return w.reshape(shape)


def shared_nbytes(module):
    """Bytes of a weight-shared layer's weight as stored by export_shared (indices + codebook (+ mask))."""
    return int(sum(a.nbytes for a in export_shared(module).values()))


def storage_ratio(n, k, b=32):
    """Deep Compression's ratio r = n b / (n log2(k) + k b): n weights of b bits vs n log2(k)-bit indices plus a
    k-entry codebook of b-bit values."""
    return n * b / (n * math.log2(k) + k * b)


# ====================================================================================================================
# 10. Sizes and lossless save / load
# ====================================================================================================================


def pack_bits(values, bits):
    """Pack non-negative integers < 2^bits into a uint8 stream, ``bits`` bits each (little-endian bit order):
    ceil(n * bits / 8) bytes for n values."""
    values = np.asarray(values).ravel().astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= 2**bits):
        raise ValueError(f"pack_bits: values must be in [0, 2^{bits} - 1], got [{values.min()}, {values.max()}]")
    planes = ((values[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little")


def unpack_bits(packed, bits, n):
    """Inverse of pack_bits: the first n ``bits``-bit integers of a uint8 stream (int64)."""
    planes = np.unpackbits(np.asarray(packed, np.uint8), count=n * bits, bitorder="little").reshape(n, bits)
    return planes.astype(np.int64) @ (np.int64(1) << np.arange(bits, dtype=np.int64))


def _export_module(module):
    """Arrays and config of one quantized module as stored: sub-byte integer weights are bit-packed."""
    arrays, config = module.to_arrays()
    if "weight_q" in arrays:  # signed weight codes [-2^(bits-1), 2^(bits-1) - 1], stored offset to [0, 2^bits)
        q = np.asarray(arrays.pop("weight_q"))
        bits = _weight_bits(module)
        arrays["weight_packed"] = pack_bits(q.astype(np.int64) + 2 ** (bits - 1), bits)
        config.update(weight_shape=list(q.shape), packed_bits=bits, weight_dtype=q.dtype.str)
    return arrays, config


def _weight_bits(module):
    return module.bits if isinstance(module, DynamicQuantizedLinear) else module.weight_bits


def _import_module(cls, arrays, config):
    if "weight_packed" in arrays:
        arrays = dict(arrays)
        bits, shape = config["packed_bits"], tuple(config["weight_shape"])
        q = unpack_bits(arrays.pop("weight_packed"), bits, int(np.prod(shape))) - 2 ** (bits - 1)
        arrays["weight_q"] = q.reshape(shape).astype(np.dtype(config["weight_dtype"]))
    config = {k: v for k, v in config.items() if k not in ("weight_shape", "packed_bits", "weight_dtype")}
    return cls.from_arrays(arrays, config)


_INTEGER_MODULES = {c.__name__: c for c in (Quantize, DeQuantize, QuantizedLinear, QuantizedConv2d,
                                            QuantizedMaxPool2d, QuantizedAvgPool2d, QuantizedReLU, QuantizedFlatten,
                                            DynamicQuantizedLinear)}


def export_arrays(qmodel):
    """(arrays, meta) exactly as ``save_quantized`` stores them: for a converted (integer-only) Sequential, every
    layer's arrays under "<i>.<name>"; for a quantize_dynamic model, the DynamicQuantizedLinear arrays under
    "<module name>.<name>" plus the remaining float parameters as float32."""
    arrays, layers = {}, []
    if getattr(qmodel, "quantized_layers", None):  # dynamic: zoo model with replaced Linear layers
        if not getattr(qmodel, "spec", None):
            raise ValueError("export_arrays: a dynamically quantized model needs .spec (a zoo model) to be saved")
        modules = dict(qmodel.named_modules())
        for name in qmodel.quantized_layers:
            a, c = _export_module(modules[name])
            arrays.update({f"{name}.{k}": v for k, v in a.items()})
            layers.append({"name": name, "type": "DynamicQuantizedLinear", "config": c})
        for name, p in qmodel.named_parameters():
            arrays[f"float.{name}"] = _param(p).astype(np.float32)
        for name, b in qmodel.named_buffers():
            arrays[f"float.{name}"] = _param(b)
        return arrays, {"mode": "dynamic", "spec": qmodel.spec, "layers": layers}
    for i, m in enumerate(qmodel):
        name = type(m).__name__
        if name not in _INTEGER_MODULES:
            raise TypeError(f"export_arrays: layer {i} ({name}) is not an integer-only module; convert() first")
        a, c = _export_module(m)
        arrays.update({f"{i}.{k}": v for k, v in a.items()})
        layers.append({"name": str(i), "type": name, "config": c})
    return arrays, {"mode": "integer", "spec": getattr(qmodel, "spec", None), "layers": layers}


def quantized_nbytes(qmodel):
    """Bytes of what is stored: packed integer weights, int32 biases, float32 scales, int32 zero points (and for
    dynamic models the float parameters left unquantized). Metadata (layer types, shapes) is not counted."""
    arrays, _ = export_arrays(qmodel)
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def float_nbytes(model):
    """Bytes of a model's parameters stored as dense float32."""
    return int(sum(4 * _param(p).size for p in model.parameters()))


def save_quantized(qmodel, path, overwrite=True):
    """Save a converted or dynamically quantized model losslessly (checkpoint.write_npz, kind="quantized")."""
    arrays, meta = export_arrays(qmodel)
    checkpoint.write_npz(path, arrays, meta | {"kind": "quantized"}, overwrite=overwrite)


def load_quantized(path):
    """Inverse of save_quantized: the same integer-only (or dynamic) model, bit for bit. A corrupt or crafted file
    raises checkpoint.CheckpointError naming the file and the field."""
    return checkpoint.load(path, kind="quantized")


_INT_DTYPES = ("|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "int8", "uint8", "int16", "uint16", "int32", "int64")


def _check_layer(layer, arrays, where):
    """Type and range of every field of one stored quantized layer, before it is built."""
    config = checkpoint.field(layer, "config", dict, where)
    c = checkpoint
    if "qmin" in config or "qmax" in config:
        qmin = c.int_field(config, "qmin", where, -2**31, 2**31 - 1)
        qmax = c.int_field(config, "qmax", where, -2**31, 2**31 - 1)
        if qmin > qmax:
            raise c.CheckpointError(f"{where}: qmin = {qmin} > qmax = {qmax}")
    for key in ("relu", "reduce_range"):
        if key in config:
            c.field(config, key, bool, where)
    for key in ("weight_bits", "bits"):
        if key in config:
            c.int_field(config, key, where, 2, 16)
    for key, lo in (("kernel_size", 1), ("stride", 1), ("padding", 0)):
        if key in config:
            v = c.field(config, key, list, where)
            if len(v) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and lo <= n <= 4096 for n in v):
                raise c.CheckpointError(f"{where}: metadata field {key!r} = {v!r} must be two ints >= {lo}")
    if "start_dim" in config:
        c.int_field(config, "start_dim", where, 0, 8)
    for key, a in arrays.items():
        if key.endswith("scale"):
            a = c.array(arrays, key, where, kinds="f")
            try:
                _check_qparams(a, 0, where)
            except ValueError as exc:
                raise c.CheckpointError(f"{where}: array {key!r}: {exc}") from None
        elif key.endswith("zero_point") or key in ("bias_q", "weight_q"):
            c.array(arrays, key, where, kinds="iu")
        elif key == "bias":
            c.array(arrays, key, where, kinds="f")
    if "weight_packed" in arrays:
        bits = c.int_field(config, "packed_bits", where, 1, 16)
        shape = c.shape_field(config, "weight_shape", where)
        if c.field(config, "weight_dtype", str, where) not in _INT_DTYPES:
            raise c.CheckpointError(f"{where}: weight_dtype {config['weight_dtype']!r} is not an integer dtype")
        declared = config.get("weight_bits", config.get("bits"))
        if declared != bits:
            raise c.CheckpointError(f"{where}: weights packed at {bits} bits but declared {declared!r}-bit")
        packed = c.array(arrays, "weight_packed", where, kinds="u", ndim=1)
        n = math.prod(shape) * bits
        if packed.dtype != np.uint8 or packed.size != -(-n // 8) or np.unpackbits(packed)[n:].any():
            raise c.CheckpointError(f"{where}: {packed.size} packed bytes do not hold {math.prod(shape)} "
                                    f"{bits}-bit weights")
    return config


def _build_quantized(arrays, meta, where):
    """checkpoint builder of kind "quantized" (see save_quantized)."""
    c = checkpoint

    def part(prefix):
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    mode = c.field(meta, "mode", str, where)
    layers = c.field(meta, "layers", list, where)
    if "spec" in meta:
        c.field(meta, "spec", str, where, allow_none=True)
    if mode == "dynamic":
        model, _ = c.build_zoo_model(meta.get("spec"), where)
        modules = dict(model.named_modules())
        state = {k[len("float."):]: v for k, v in arrays.items() if k.startswith("float.")}
        c.check_finite_arrays(state, where)
        for i, layer in enumerate(layers):
            at = f"{where}: layers[{i}]"
            name = c.field(layer, "name", str, at)
            if c.field(layer, "type", str, at) != "DynamicQuantizedLinear":
                raise c.CheckpointError(f"{at}: type {layer['type']!r}, expected 'DynamicQuantizedLinear'")
            linear = modules.get(name)
            if not isinstance(linear, nn.Linear) or not name:
                raise c.CheckpointError(f"{at}: {name!r} is not a Linear layer of {meta['spec']!r}")
            parts = part(name + ".")
            _check_layer(layer, parts, at)
            q = _import_module(DynamicQuantizedLinear, parts, layer["config"])
            if q.weight_q.shape != linear.weight.shape:
                raise c.CheckpointError(f"{at}: weight {q.weight_q.shape} does not fit {name} {linear.weight.shape}")
            parent, _, attr = name.rpartition(".")
            (modules[parent] if parent else model)._modules[attr] = q
        model.load_state_dict(state)
        model.quantized_layers = [layer["name"] for layer in layers]
        return model.eval()
    if mode != "integer":
        raise c.CheckpointError(f"{where}: metadata field 'mode' = {mode!r} must be 'dynamic' or 'integer'")
    mods, expected = [], None  # expected: the (S, Z, qmin, qmax) the next integer layer must have been built for
    for i, layer in enumerate(layers):
        at = f"{where}: layers[{i}]"
        kind = c.field(layer, "type", str, at)
        if kind not in _INTEGER_MODULES or kind == "DynamicQuantizedLinear":
            raise c.CheckpointError(f"{at}: unknown layer type {kind!r}")
        if c.field(layer, "name", str, at) != str(i):
            raise c.CheckpointError(f"{at}: name {layer['name']!r}, expected {str(i)!r}")
        parts = part(f"{i}.")
        _check_layer(layer, parts, at)
        m = _import_module(_INTEGER_MODULES[kind], parts, layer["config"])
        if isinstance(m, (Quantize, _IntegerLayer)):
            zero_point = m.zero_point if isinstance(m, Quantize) else m.output_zero_point
            if not m.qmin <= zero_point <= m.qmax:
                raise c.CheckpointError(f"{at}: zero point {zero_point} outside [{m.qmin}, {m.qmax}]")
        if isinstance(m, Quantize):
            expected = (m.scale, m.zero_point, m.qmin, m.qmax)
        elif isinstance(m, _IntegerLayer):
            if m.weight_scale.size not in (1, m.weight_q.shape[0]) or (
                    m.bias_q is not None and m.bias_q.shape != (m.weight_q.shape[0],)):
                raise c.CheckpointError(f"{at}: scales or bias do not match {m.weight_q.shape[0]} output channels")
            if expected is not None and expected[:2] != (m.input_scale, m.input_zero_point):
                raise c.CheckpointError(f"{at}: built for inputs (S={m.input_scale}, Z={m.input_zero_point}) but "
                                        f"the layer before outputs (S={expected[0]}, Z={expected[1]})")
            if expected is not None and expected[2:] != (m.qmin, m.qmax):
                raise c.CheckpointError(f"{at}: integer range [{m.qmin}, {m.qmax}] but the layer before outputs "
                                        f"[{expected[2]}, {expected[3]}]")
            expected = (m.output_scale, m.output_zero_point, m.qmin, m.qmax)
        mods.append(m)
    used = {k for k in arrays if k.split(".", 1)[0] in {str(i) for i in range(len(layers))}}
    if set(arrays) - used:
        raise c.CheckpointError(f"{where}: arrays {sorted(set(arrays) - used)[:5]} belong to no layer")
    model = nn.Sequential(*mods)
    model.spec = meta.get("spec")
    return model.eval()


checkpoint.register_kind("quantized", _build_quantized)
