"""Quantization, section 2: observers: watch the data, then calculate_qparams() as PyTorch.

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import numpy as np

from .. import nn
from .arithmetic import _as_array, _check_finite, _minmax, dequantize, qparams, qrange, quantize

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
