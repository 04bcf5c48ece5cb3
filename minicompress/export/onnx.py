"""ONNX export: the same model as a graph of standard ONNX operators, run in ONNX Runtime.

ONNX is NCHW like minicompress, so no layout change is needed: weights go in as they are.

1. Float export: Conv, Gemm, Relu, MaxPool, AveragePool (count_include_pad=1, as minicompress), Flatten.
2. Integer export (opset 13): uint8 activations and int8 per-channel weights stay as minicompress stores them.

       QuantizeLinear      q = saturate(round(x / S) + Z)                    (float -> uint8)
       QLinearConv         acc = sum (q1 - Z1)(q2 - Z2) + q_bias             (int32, exact)
                           q3 = saturate(round(acc * (S1 S2 / S3)) + Z3)     (requantized in float)
       DequantizeLinear    r = S (q - Z)                                     (uint8 -> float)

   A Linear layer is a 1x1 QLinearConv on an (N, K, 1, 1) view: QLinearMatMul has no bias input. A fused ReLU
   is the clamp at Z3 (DequantizeLinear -> Relu -> QuantizeLinear when Z3 > 0). Average pooling runs on the
   dequantized values (DequantizeLinear -> AveragePool -> QuantizeLinear): there is no standard uint8 average.

   ONNX Runtime requantizes with a float32 multiplier and rounds half to even, where minicompress (and TFLite)
   multiply by the fixed-point M0 * 2^-n: each layer's codes may differ by one step. The exported file also
   returns those codes (second output ``codes``) so the difference can be measured.
"""
from __future__ import annotations

import numpy as np

from . import require
from .lowering import UnsupportedModelError, lower

OPSET = 13


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name, value, dtype):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, name, **attrs):
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name


def _pads(padding):
    ph, pw = padding
    return [ph, pw, ph, pw]


def _float_graph(g, steps):
    x = "input"
    for i, s in enumerate(steps):
        name, p = f"{i}.{s.kind}", s.params
        if s.kind == "conv":
            w = g.const(f"{name}/weight", p["weight"], np.float32)
            inputs = [x, w] + ([g.const(f"{name}/bias", p["bias"], np.float32)] if p["bias"] is not None else [])
            x = g.node("Conv", inputs, name + ("/conv" if p["relu"] else ""), strides=list(p["stride"]),
                       pads=_pads(p["padding"]), kernel_shape=list(p["weight"].shape[2:]))
        elif s.kind == "linear":
            w = g.const(f"{name}/weight", p["weight"], np.float32)
            inputs = [x, w] + ([g.const(f"{name}/bias", p["bias"], np.float32)] if p["bias"] is not None else [])
            x = g.node("Gemm", inputs, name + ("/gemm" if p["relu"] else ""), transB=1)
        elif s.kind == "relu":
            x = g.node("Relu", [x], name)
        elif s.kind in ("maxpool", "avgpool"):
            attrs = dict(kernel_shape=list(p["kernel"]), strides=list(p["stride"]), pads=_pads(p["padding"]))
            if s.kind == "avgpool":
                attrs["count_include_pad"] = 1
            x = g.node("MaxPool" if s.kind == "maxpool" else "AveragePool", [x], name, **attrs)
        elif s.kind == "flatten":
            x = g.node("Flatten", [x], name, axis=1)
        if s.kind in ("conv", "linear") and p["relu"]:
            x = g.node("Relu", [x], name)
    return x, None


def _qparams(g, name, scale, zero_point, zp_dtype=np.uint8):
    return g.const(f"{name}/scale", np.float32(scale), np.float32), g.const(f"{name}/zero_point", zero_point,
                                                                              zp_dtype)


def _integer_graph(g, steps):
    """uint8 graph: minicompress's codes are kept as they are (the lowering's int8 zero points + 128)."""
    x, act = "input", None
    for i, s in enumerate(steps):
        name, p = f"{i}.{s.kind}", s.params
        if s.kind == "quantize":
            act = _qparams(g, name, p["scale"], p["zero_point"] + 128)
            x = g.node("QuantizeLinear", [x, *act], name)
        elif s.kind in ("conv", "linear"):
            w = p["weight"] if s.kind == "conv" else p["weight"][:, :, None, None]
            if s.kind == "linear":
                x = g.node("Reshape", [x, g.const(f"{name}/nk11", [0, -1, 1, 1], np.int64)], f"{name}/nk11_view")
            wq = g.const(f"{name}/weight", w, np.int8)
            ws = g.const(f"{name}/weight_scale", p["weight_scale"], np.float32)
            wz = g.const(f"{name}/weight_zero_point", np.zeros(len(p["weight_scale"])), np.int8)
            out = _qparams(g, name, p["output_scale"], p["output_zero_point"] + 128)
            bias = g.const(f"{name}/bias", p["bias"], np.int32)
            attrs = dict(kernel_shape=list(w.shape[2:]))
            if s.kind == "conv":
                attrs.update(strides=list(p["stride"]), pads=_pads(p["padding"]))
            relu_clamp = p["relu"] and p["output_zero_point"] + 128 > 0
            y = g.node("QLinearConv", [x, *act, wq, ws, wz, *out, bias],
                       name + ("/conv" if s.kind == "linear" or relu_clamp else ""), **attrs)
            if s.kind == "linear":
                y = g.node("Flatten", [y], name + ("/flat" if relu_clamp else ""), axis=1)
            if relu_clamp:
                y = _through_float(g, "Relu", y, out, name)
            x, act = y, out
        elif s.kind == "relu":
            x = _through_float(g, "Relu", x, act, name)
        elif s.kind == "maxpool":
            x = g.node("MaxPool", [x], name, kernel_shape=list(p["kernel"]), strides=list(p["stride"]),
                       pads=_pads(p["padding"]))
        elif s.kind == "avgpool":
            x = _through_float(g, "AveragePool", x, act, name, kernel_shape=list(p["kernel"]),
                               strides=list(p["stride"]), pads=_pads(p["padding"]), count_include_pad=1)
        elif s.kind == "flatten":
            x = g.node("Flatten", [x], name, axis=1)
        elif s.kind == "dequantize":
            codes = x
            x = g.node("DequantizeLinear", [x, *act], name)
    return x, codes


def _through_float(g, op, x, act, name, **attrs):
    """uint8 -> DequantizeLinear -> op -> QuantizeLinear with the same (S, Z)."""
    r = g.node("DequantizeLinear", [x, *act], f"{name}/real")
    r = g.node(op, [r], f"{name}/{op.lower()}", **attrs)
    return g.node("QuantizeLinear", [r, *act], name)


def to_onnx(model, input_shape=(1, 28, 28)):
    """The ONNX ModelProto (serialise with .SerializeToString()) of a float or integer-only model.

    Input "input": float32 (N, C, H, W) as minicompress; output "output": float32. Integer models also return
    "codes", the uint8 codes of the last integer layer."""
    onnx = require("onnx", "to_onnx")
    from onnx import TensorProto, helper

    steps = lower(model, input_shape, fn="to_onnx")
    g = _Graph()
    integer = steps[0].kind == "quantize"
    out, codes = (_integer_graph if integer else _float_graph)(g, steps)
    g.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *steps[0].in_shape])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *steps[-1].out_shape])]
    if codes is not None:
        g.nodes.append(helper.make_node("Identity", [codes], ["codes"], name="codes"))
        outputs.append(helper.make_tensor_value_info("codes", TensorProto.UINT8, ["N", *steps[-1].out_shape]))
    graph = helper.make_graph(g.nodes, f"minicompress_{getattr(model, 'spec', None) or 'model'}", inputs, outputs,
                              g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="minicompress")
    proto.ir_version = 8  # readable by ONNX Runtime releases from 1.14 on
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - a bug in this writer, not the user's input
        raise UnsupportedModelError(f"to_onnx: the graph is not valid ONNX ({exc})") from exc
    return proto


def save_onnx(model, path, input_shape=(1, 28, 28), overwrite=True):
    """to_onnx, written atomically to ``path``; returns the number of bytes."""
    from .tflite import write_atomic

    content = to_onnx(model, input_shape).SerializeToString()
    write_atomic(path, content, overwrite)
    return len(content)


def run_onnx(proto_or_bytes, x, return_codes=False):
    """Run an exported model in ONNX Runtime (CPU, one thread) on x (N, C, H, W): float32 outputs, and with
    return_codes=True also the uint8 codes of the last integer layer."""
    ort = require("onnxruntime", "run_onnx")
    content = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    names = ["output", "codes"] if return_codes else ["output"]
    if return_codes and len(session.get_outputs()) < 2:
        raise ValueError("run_onnx(return_codes=True): the model has no 'codes' output (a float model?)")
    result = session.run(names, {"input": np.asarray(x, dtype=np.float32)})
    return tuple(result) if return_codes else result[0]
