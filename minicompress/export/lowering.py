"""What an exported graph is made of: a model walked into a flat list of steps.

Both writers (``tflite``, ``onnx``) start here, so the rules of what can be exported live in one place.

1. Steps: one ``Step`` per operator of the exported graph, with its input and output shapes (no batch axis).
2. Float models: nn.Sequential of Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, Flatten (BatchNorm folded into the
   layer before it, Dropout and Identity dropped, a ReLU right after Conv2d / Linear fused into it).
3. Integer-only models (the output of ``quantization.convert``): minicompress stores activations as uint8 codes
   q in [0, 255] with zero point Z; TFLite's int8 scheme stores q - 128 with zero point Z - 128. The map is
   exact: r = S (q - Z) = S ((q - 128) - (Z - 128)), and every sum (q1 - Z1)(q2 - Z2) is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import nn
from .. import quantization as Q
from ..tensor import no_grad


class UnsupportedModelError(ValueError):
    """A layer, operator or layout that the exporter / importer cannot express; the message names it."""


# ====================================================================================================================
# 1. Steps
# ====================================================================================================================


@dataclass
class Step:
    """One operator: ``kind`` in {"conv", "linear", "relu", "maxpool", "avgpool", "flatten", "quantize",
    "dequantize"}, shapes without the batch axis ((C, H, W) or (F,)), and the operator's parameters."""

    kind: str
    in_shape: tuple
    out_shape: tuple
    params: dict = field(default_factory=dict)


def _pool_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _window(kind, shape, kernel, stride, padding, where):
    if len(shape) != 3:
        raise UnsupportedModelError(f"{where}: {kind} needs a (C, H, W) input, got shape {shape}")
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = _pool_out(shape[1], kh, sh, ph), _pool_out(shape[2], kw, sw, pw)
    if ho < 1 or wo < 1:
        raise UnsupportedModelError(f"{where}: {kind} window {kernel} does not fit the input {shape}")
    return ho, wo


def _pool_step(kind, m, shape, where):
    kernel = Q._pair(m.kernel_size)
    stride = kernel if m.stride is None else Q._pair(m.stride)
    padding = Q._pair(m.padding)
    ho, wo = _window(kind, shape, kernel, stride, padding, where)
    return Step(kind, shape, (shape[0], ho, wo), dict(kernel=kernel, stride=stride, padding=padding))


def _flatten_step(shape):
    return Step("flatten", shape, (int(np.prod(shape)),))


def _layers(model, fn):
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModelError(f"{fn}: can export an nn.Sequential (a chain of layers), got "
                                    f"{type(model).__name__}")
    return Q._flatten_sequential(model, fn)


def check_input_shape(input_shape, fn):
    """(C, H, W) or (F,) of positive ints."""
    shape = tuple(input_shape)
    if len(shape) not in (1, 3) or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(f"{fn}(input_shape={input_shape!r}): need (C, H, W) or (F,) of positive ints")
    return tuple(int(d) for d in shape)


# ====================================================================================================================
# 2. Float models
# ====================================================================================================================

FLOAT_LAYERS = "Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, Flatten, BatchNorm1d/2d (folded), Dropout, Identity"


def lower_float(model, input_shape=(1, 28, 28), fn="export"):
    """The float steps of ``model`` for inputs of ``input_shape`` (no batch axis). Weights are float32 copies.

    One forward pass on zeros (in eval mode) comes first: a pruned layer recomputes weight = weight_orig * mask
    in its forward pre-hook, so the exported weight is the masked one."""
    shape = check_input_shape(input_shape, fn)
    layers, steps, i = _layers(model, fn), [], 0
    training = model.training
    try:
        with no_grad():
            model.eval()(np.zeros((1,) + shape, np.float32))
    finally:
        model.train(training)
    while i < len(layers):
        m, where = layers[i], f"{fn}: layer {i} ({type(layers[i]).__name__})"
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = Q._param(m.weight).astype(np.float32)
            b = None if m.bias is None else Q._param(m.bias).astype(np.float32)
            j = i + 1
            if j < len(layers) and isinstance(layers[j], (nn.BatchNorm1d, nn.BatchNorm2d)):
                w, b = Q.fold_batch_norm(w, b, layers[j])
                j += 1
            relu = j < len(layers) and isinstance(layers[j], nn.ReLU)
            params = dict(weight=w, bias=b, relu=relu)
            if isinstance(m, nn.Conv2d):
                if len(shape) != 3 or shape[0] != w.shape[1]:
                    raise UnsupportedModelError(f"{where}: expects {w.shape[1]} input channels, gets shape {shape}")
                params.update(stride=Q._pair(m.stride), padding=Q._pair(m.padding))
                ho, wo = _window("conv", shape, w.shape[2:], params["stride"], params["padding"], where)
                steps.append(Step("conv", shape, (w.shape[0], ho, wo), params))
            else:
                if len(shape) != 1 or shape[0] != w.shape[1]:
                    raise UnsupportedModelError(f"{where}: expects ({w.shape[1]},) inputs, gets shape {shape} "
                                                "(put a Flatten in front)")
                steps.append(Step("linear", shape, (w.shape[0],), params))
            shape, i = steps[-1].out_shape, j + relu
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            i += 1
        elif isinstance(m, nn.ReLU):
            steps.append(Step("relu", shape, shape))
            i += 1
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            steps.append(_pool_step("maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool", m, shape, where))
            shape, i = steps[-1].out_shape, i + 1
        elif isinstance(m, nn.Flatten):
            steps.append(_flatten_step(shape))
            shape, i = steps[-1].out_shape, i + 1
        else:
            raise UnsupportedModelError(f"{where} cannot be exported; supported: {FLOAT_LAYERS}")
    return steps


# ====================================================================================================================
# 3. Integer-only models: uint8 codes -> int8 codes
# ====================================================================================================================


def _int8_offset(qmin, qmax, where):
    """What to add to minicompress's activation codes to get TFLite's int8 codes: -128 for [0, 255], 0 for
    [-128, 127]. Fewer bits have no int8 equivalent (TFLite clamps only to the int8 range or a fused ReLU)."""
    if (qmin, qmax) == (0, 255):
        return -128
    if (qmin, qmax) == (-128, 127):
        return 0
    raise UnsupportedModelError(f"{where}: activations in [{qmin}, {qmax}]; TFLite's int8 scheme needs 8-bit "
                                "activations ([0, 255] or [-128, 127]), quantize with activation_bits=8")


def lower_integer(qmodel, input_shape=(1, 28, 28), fn="export"):
    """The int8 steps of an integer-only model (``quantization.convert``): Quantize first, DeQuantize last.

    Activation zero points and clamps are moved to the int8 domain; weights must be symmetric (Z2 = 0) int8
    codes, per channel or per tensor; a missing bias becomes int32 zeros."""
    shape = check_input_shape(input_shape, fn)
    layers = _layers(qmodel, fn)
    if not layers or not isinstance(layers[0], Q.Quantize) or not isinstance(layers[-1], Q.DeQuantize):
        raise UnsupportedModelError(f"{fn}: an integer-only model starts with Quantize and ends with DeQuantize "
                                    "(the output of quantization.convert)")
    steps, act = [], None
    for i, m in enumerate(layers):
        where = f"{fn}: layer {i} ({type(m).__name__})"
        if isinstance(m, Q.Quantize):
            if i != 0:
                raise UnsupportedModelError(f"{where}: Quantize may only come first")
            off = _int8_offset(m.qmin, m.qmax, where)
            act = (np.float32(m.scale), int(m.zero_point) + off)
            steps.append(Step("quantize", shape, shape, dict(scale=act[0], zero_point=act[1])))
        elif isinstance(m, (Q.QuantizedConv2d, Q.QuantizedLinear)):
            if np.any(m.weight_zero_point != 0) or m.weight_q.min() < -128 or m.weight_q.max() > 127:
                raise UnsupportedModelError(f"{where}: TFLite needs symmetric int8 weights (zero point 0, codes "
                                            "in [-128, 127])")
            off = _int8_offset(m.qmin, m.qmax, where)
            zin = int(m.input_zero_point) + off
            if (np.float32(m.input_scale), zin) != act:
                raise UnsupportedModelError(f"{where}: input quantized with (S={act[0]}, Z={act[1]}) but the layer "
                                            f"expects (S={m.input_scale}, Z={zin})")
            bias = np.zeros(m.weight_q.shape[0], np.int32) if m.bias_q is None else m.bias_q.astype(np.int32)
            zout = int(m.output_zero_point) + off
            params = dict(weight=m.weight_q.astype(np.int8), weight_scale=m.weight_scale.astype(np.float32),
                          bias=bias, input_scale=act[0], input_zero_point=zin,
                          output_scale=np.float32(m.output_scale), output_zero_point=zout, relu=m.relu)
            w = m.weight_q
            if isinstance(m, Q.QuantizedConv2d):
                if len(shape) != 3 or shape[0] != w.shape[1]:
                    raise UnsupportedModelError(f"{where}: expects {w.shape[1]} input channels, gets shape {shape}")
                params.update(stride=m.stride, padding=m.padding)
                ho, wo = _window("conv", shape, w.shape[2:], m.stride, m.padding, where)
                steps.append(Step("conv", shape, (w.shape[0], ho, wo), params))
            else:
                if len(shape) != 1 or shape[0] != w.shape[1]:
                    raise UnsupportedModelError(f"{where}: expects ({w.shape[1]},) inputs, gets shape {shape}")
                steps.append(Step("linear", shape, (w.shape[0],), params))
            act, shape = (params["output_scale"], zout), steps[-1].out_shape
        elif isinstance(m, (Q.QuantizedMaxPool2d, Q.QuantizedAvgPool2d)):
            kind = "avgpool" if isinstance(m, Q.QuantizedAvgPool2d) else "maxpool"
            steps.append(_pool_step(kind, m, shape, where))
            steps[-1].params.update(scale=act[0], zero_point=act[1])
            shape = steps[-1].out_shape
        elif isinstance(m, Q.QuantizedReLU):
            steps.append(Step("relu", shape, shape, dict(scale=act[0], zero_point=act[1])))
        elif isinstance(m, Q.QuantizedFlatten):
            if m.start_dim != 1:
                raise UnsupportedModelError(f"{where}: only start_dim=1 can be exported, got {m.start_dim}")
            steps.append(_flatten_step(shape))
            steps[-1].params.update(scale=act[0], zero_point=act[1])
            shape = steps[-1].out_shape
        elif isinstance(m, Q.DeQuantize):
            if i != len(layers) - 1:
                raise UnsupportedModelError(f"{where}: DeQuantize may only come last")
            steps.append(Step("dequantize", shape, shape, dict(scale=act[0], zero_point=act[1])))
        else:
            raise UnsupportedModelError(f"{where} cannot be exported; supported: Quantize, QuantizedConv2d, "
                                        "QuantizedLinear, QuantizedMaxPool2d, QuantizedAvgPool2d, QuantizedReLU, "
                                        "QuantizedFlatten, DeQuantize")
    return steps


def is_integer_model(model):
    """True for the output of quantization.convert (an nn.Sequential whose first layer is Quantize)."""
    return isinstance(model, nn.Sequential) and len(model) > 0 and isinstance(model[0], Q.Quantize)


def lower(model, input_shape=(1, 28, 28), fn="export"):
    """lower_integer for integer-only models, lower_float otherwise."""
    return (lower_integer if is_integer_model(model) else lower_float)(model, input_shape, fn)
