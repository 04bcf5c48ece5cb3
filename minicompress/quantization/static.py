"""Quantization, sections 7-8: static post-training quantization (fold batch norm, observe, convert) and
quantization-aware training.

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import copy

import numpy as np

from .. import nn
from .. import functional as F
from ..tensor import no_grad
from .arithmetic import _check_bits, _minmax, qparams, qrange, quantize
from .observers import MSEObserver, MinMaxObserver, MovingAverageMinMaxObserver
from .fake_quant import FakeQuantize, fake_quantize
from .integer import DeQuantize, Quantize, QuantizedAvgPool2d, QuantizedConv2d, QuantizedFlatten, QuantizedLinear, QuantizedMaxPool2d, QuantizedReLU, _pair, _param

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
