"""Quantization, section 1: the arithmetic: qrange, qparams, quantize / dequantize, per tensor and per channel.

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import numpy as np

from ..tensor import Tensor


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
