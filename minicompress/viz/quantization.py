"""Pictures of quantization: the integer grid over a weight histogram, the error as bits shrink (per tensor
against per channel), and the staircase of fake quantization with its straight-through gradient.
Every function draws on `ax` (a new figure if None) and returns the axes (a pair for the staircase)."""
import matplotlib.pyplot as plt
import numpy as np

from minicompress import quantization as Q
from minicompress.tensor import Tensor


def _np(x):
    return np.asarray(getattr(x, "data", x), dtype=np.float32)


def _axes(ax, figsize=(5, 3.2)):
    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def plot_weight_histogram(w, bits=4, symmetric=True, bins=120, ax=None, title=None):
    """Histogram of w with the 2^bits values S * (q - Z) it can be rounded to drawn over it.

    (S, Z) come from w's own min and max (``qparams``); the outermost grid lines mark the clipping range.
    With more than 64 levels only the range is drawn (the lines would fill the plot).
    """
    ax = _axes(ax)
    w = _np(w).reshape(-1)
    scale, zero_point = Q.qparams(w.min(), w.max(), bits, symmetric=symmetric, signed=True)
    qmin, qmax = Q.qrange(bits)
    ax.hist(w, bins=bins, color="0.6")
    grid = Q.dequantize(np.arange(qmin, qmax + 1), scale, zero_point)
    shown = grid if grid.size <= 64 else grid[[0, -1]]
    for g in shown:
        ax.axvline(g, color="C0", lw=0.6, alpha=0.8)
    ax.axvline(0.0, color="C3", lw=1.0, label=f"real 0 = integer Z = {int(zero_point)}")
    ax.set_xlabel("w")
    ax.set_ylabel("count")
    ax.set_title(title or f"{bits}-bit grid over the weights: S = {float(scale):.3g}")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def quantization_errors(w, bits_range=range(2, 9), symmetric=True):
    """Mean squared error of w - dequantize(quantize(w)) for each bit width, per tensor and per channel (axis 0).
    Returns {"per-tensor": [...], "per-channel": [...]} in the order of ``bits_range``."""
    w = _np(w)
    errors = {"per-tensor": [], "per-channel": []}
    for bits in bits_range:
        for key, axis in (("per-tensor", None), ("per-channel", 0)):
            qt = Q.quantize_tensor(w, bits, symmetric=symmetric, axis=axis)
            errors[key].append(float(np.mean((qt.dequantize() - w) ** 2)))
    return errors


def plot_error_vs_bits(w, bits_range=range(2, 9), ax=None, title=None):
    """The quantization MSE of w against bits, per tensor and per channel (log scale): every bit divides the
    step by two, so the error falls about 4x (6 dB) per bit; per channel starts lower when channels differ."""
    ax = _axes(ax)
    bits_range = list(bits_range)
    for key, err in quantization_errors(w, bits_range).items():
        ax.semilogy(bits_range, err, marker="o", label=key)
    ax.set_xlabel("bits")
    ax.set_ylabel("mean squared error")
    ax.set_title(title or "quantization error against bits")
    ax.legend(fontsize=8)
    return ax


def plot_fake_quant_staircase(scale=0.25, zero_point=0, qmin=-4, qmax=3, lo=None, hi=None, axes=None):
    """Left: x_hat = fake_quantize(x), the staircase, against the identity. Right: the straight-through
    gradient d x_hat / d x used in training: 1 inside the range, 0 where x was clamped."""
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(9, 3.2))[1]
    lo = scale * (qmin - zero_point - 2) if lo is None else lo
    hi = scale * (qmax - zero_point + 2) if hi is None else hi
    x = Tensor(np.linspace(lo, hi, 801, dtype=np.float32), requires_grad=True)
    y = Q.fake_quantize(x, np.float32(scale), zero_point, qmin, qmax)
    y.backward(np.ones_like(x.data))
    axes[0].plot(x.data, x.data, color="0.7", lw=1, label="identity")
    axes[0].plot(x.data, y.data, color="C0", label="S * (clamp(round(x / S) + Z) - Z)")
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("x_hat")
    axes[0].set_title(f"fake quantization, S = {scale}, [{qmin}, {qmax}]")
    axes[0].legend(fontsize=8)
    axes[1].plot(x.data, x.grad, color="C1")
    axes[1].set_ylim(-0.1, 1.1)
    axes[1].set_xlabel("x")
    axes[1].set_ylabel("gradient passed back")
    axes[1].set_title("STE: 1[qmin <= round(x/S)+Z <= qmax]")
    return axes
