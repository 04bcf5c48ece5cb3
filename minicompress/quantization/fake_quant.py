"""Quantization, section 3: fake quantization, quantize-dequantize in float with a straight-through gradient
inside the range.

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import numpy as np

from .. import nn
from ..tensor import Function
from .arithmetic import _as_array, _check_axis, _check_finite, _check_qparams, _check_qrange, _round_and_shift
from .observers import MovingAverageMinMaxObserver

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
