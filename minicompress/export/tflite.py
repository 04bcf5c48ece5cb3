"""TensorFlow Lite export: the same model, the same integers, in the file format phones run.

A ``.tflite`` file is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs): a list of buffers (raw bytes of
the constant tensors), a list of tensors (shape, type, buffer, quantization), and a list of operators that read
and write tensors by index. The ``tflite`` package (PyPI) is the Python code generated from that schema; we build
the file with it and the ``flatbuffers`` runtime, never by hand-writing bytes.

1. Layout: TFLite is NHWC (batch, height, width, channels), minicompress is NCHW. Convolution weights become
   OHWI; the first Linear after a Flatten gets its columns permuted, because flattening (H, W, C) lists the
   same numbers in another order than flattening (C, H, W).
2. Float export: CONV_2D / FULLY_CONNECTED with the ReLU fused, MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE, RELU.
3. Integer export, TFLite's int8 scheme (the one its converter writes for full-integer quantization):
   weights int8 symmetric per output channel (zero point 0), activations int8 asymmetric, biases int32 with
   scale S1 * S2[o] and zero point 0, float in and out through QUANTIZE and DEQUANTIZE. Each layer then runs

       acc = sum_k (q1 - Z1) q2[o, k] + q_bias[o]                          (int32)
       q3  = clamp(Z3 + MultiplyByQuantizedMultiplier(acc, M0[o], shift[o]), lo, 127)

   with M = S1 S2[o] / S3 = M0 * 2^(shift - 31), computed by the runtime from the scales stored in the file:
   the very formula of ``quantization.requantize``.
4. Running it: ``run_tflite`` runs a file in LiteRT (``ai-edge-litert``) and returns the float outputs, and for
   integer models the int8 codes the last layer wrote (before DEQUANTIZE).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from . import require
from .lowering import UnsupportedModelError, lower

# ====================================================================================================================
# 1. Layout: NCHW -> NHWC
# ====================================================================================================================


def nhwc_shape(shape):
    """(C, H, W) -> (H, W, C); (F,) stays."""
    return tuple(shape[1:]) + (shape[0],) if len(shape) == 3 else tuple(shape)


def nhwc_columns(weight, chw):
    """Columns of a Linear weight (O, C*H*W) reordered for an input flattened from NHWC: column (h, w, c)."""
    c, h, w = chw
    return weight.reshape(weight.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _same_padding(in_size, k, s, p):
    """True if TFLite's SAME padding equals an explicit padding p: same output size and p pixels before."""
    out_same = -(-in_size // s)
    total = max((out_same - 1) * s + k - in_size, 0)
    return out_same == (in_size + 2 * p - k) // s + 1 and total // 2 == p


# ====================================================================================================================
# 2-3. The graph: tensors, buffers, operators
# ====================================================================================================================

_OP_VERSIONS = {  # (builtin operator name, int8?) -> operator version (as TFLite's converter writes them)
    "CONV_2D": (1, 3), "FULLY_CONNECTED": (1, 4), "MAX_POOL_2D": (1, 2), "AVERAGE_POOL_2D": (1, 2),
    "RESHAPE": (1, 1), "RELU": (1, 2), "PAD": (1, 2), "TRANSPOSE": (1, 2), "QUANTIZE": (1, 2), "DEQUANTIZE": (1, 2),
}


class _Graph:
    """Tensors, buffers and operators collected in plain Python, serialised at the end by ``to_bytes``."""

    def __init__(self, integer):
        self.integer = integer
        self.tensors, self.buffers, self.ops, self.opcodes = [], [b""], [], []  # buffer 0: the empty buffer

    def tensor(self, name, shape, dtype, data=None, scale=None, zero_point=None, axis=0, batch=True):
        """Add a tensor; ``data`` makes it a constant. Returns its index."""
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data, dtype=dtype).tobytes())
            buffer = len(self.buffers) - 1
        quant = None
        if scale is not None:
            quant = (np.atleast_1d(np.asarray(scale, np.float32)),
                     np.atleast_1d(np.asarray(zero_point, np.int64)), axis)
        self.tensors.append(dict(name=name, shape=tuple(int(d) for d in shape), dtype=np.dtype(dtype),
                                 buffer=buffer, quant=quant, batch=batch and data is None))
        return len(self.tensors) - 1

    def activation(self, name, shape, qparams=None):
        """A batch of activations (N, ...): float32, or int8 with (scale, zero_point)."""
        if qparams is None or not self.integer:
            return self.tensor(name, (1,) + nhwc_shape(shape), np.float32)
        return self.tensor(name, (1,) + nhwc_shape(shape), np.int8, scale=qparams[0], zero_point=qparams[1])

    def op(self, name, inputs, outputs, options=None):
        if name not in self.opcodes:
            self.opcodes.append(name)
        self.ops.append((self.opcodes.index(name), list(inputs), list(outputs), options))


def _qp(step):
    return (step.params["scale"], step.params["zero_point"]) if "scale" in step.params else None


def _add_pad(g, x, shape, padding, qparams, name):
    """Explicit padding (PAD): zeros in float, the zero point in int8 (TFLite's PAD default), i.e. real 0."""
    (ph, pw), padded = padding, (shape[0], shape[1] + 2 * padding[0], shape[2] + 2 * padding[1])
    pads = g.tensor(f"{name}/paddings", (4, 2), np.int32, data=[[0, 0], [ph, ph], [pw, pw], [0, 0]])
    y = g.activation(f"{name}/padded", padded, qparams)
    g.op("PAD", [x, pads], [y])
    return y


def _window_options(step, g, x, qparams, name, pool):
    """(input tensor, padding enum) for a windowed op: VALID, SAME where it equals the explicit padding, else an
    explicit PAD first (average pooling always pads explicitly: TFLite's SAME does not count padded pixels)."""
    from tflite.Padding import Padding

    kernel = step.params["weight"].shape[2:] if not pool else step.params["kernel"]
    (ph, pw), (sh, sw) = step.params["padding"], step.params["stride"]
    if (ph, pw) == (0, 0):
        return x, Padding.VALID
    h, w = step.in_shape[1:]
    same = _same_padding(h, kernel[0], sh, ph) and _same_padding(w, kernel[1], sw, pw)
    if same and step.kind != "avgpool":
        return x, Padding.SAME
    if step.kind == "maxpool":
        raise UnsupportedModelError(f"to_tflite: {name}: max pooling padding {step.params['padding']} is not "
                                    "TFLite's SAME padding for this input size")
    return _add_pad(g, x, step.in_shape, (ph, pw), qparams, name), Padding.VALID


def _conv_options(b, step, padding):
    opt = _schema("Conv2DOptions")

    opt.Start(b)
    opt.AddPadding(b, padding)
    opt.AddStrideH(b, step.params["stride"][0])
    opt.AddStrideW(b, step.params["stride"][1])
    opt.AddDilationHFactor(b, 1)
    opt.AddDilationWFactor(b, 1)
    opt.AddFusedActivationFunction(b, 1 if step.params["relu"] else 0)
    return "Conv2DOptions", opt.End(b)


def _fc_options(b, step):
    opt = _schema("FullyConnectedOptions")

    opt.Start(b)
    opt.AddFusedActivationFunction(b, 1 if step.params["relu"] else 0)
    return "FullyConnectedOptions", opt.End(b)


def _pool_options(b, step, padding):
    opt = _schema("Pool2DOptions")

    opt.Start(b)
    opt.AddPadding(b, padding)
    opt.AddStrideH(b, step.params["stride"][0])
    opt.AddStrideW(b, step.params["stride"][1])
    opt.AddFilterHeight(b, step.params["kernel"][0])
    opt.AddFilterWidth(b, step.params["kernel"][1])
    return "Pool2DOptions", opt.End(b)


def _layer(g, step, x, name, flat_chw):
    """Add the tensors and operator(s) of one weighted layer; returns the output tensor."""
    p, integer = step.params, g.integer
    w = p["weight"]
    if step.kind == "conv":
        w = w.transpose(0, 2, 3, 1)  # OIHW -> OHWI
    elif flat_chw is not None:
        w = nhwc_columns(w, flat_chw)
    out_q = (p["output_scale"], p["output_zero_point"]) if integer else None
    if integer:
        scales = p["weight_scale"]
        wt = g.tensor(f"{name}/weight", w.shape, np.int8, data=w, scale=scales, zero_point=np.zeros(len(scales)))
        bias_scale = (np.float64(p["input_scale"]) * scales.astype(np.float64)).astype(np.float32)
        bt = g.tensor(f"{name}/bias", (w.shape[0],), np.int32, data=p["bias"], scale=bias_scale,
                      zero_point=np.zeros(len(scales)))
    else:
        wt = g.tensor(f"{name}/weight", w.shape, np.float32, data=w)
        bias = np.zeros(w.shape[0], np.float32) if p["bias"] is None else p["bias"]
        bt = g.tensor(f"{name}/bias", (w.shape[0],), np.float32, data=bias)
    in_q = (p["input_scale"], p["input_zero_point"]) if integer else None
    if step.kind == "conv":
        x, padding = _window_options(step, g, x, in_q, name, pool=False)
        y = g.activation(name, step.out_shape, out_q)
        g.op("CONV_2D", [x, wt, bt], [y], lambda b: _conv_options(b, step, padding))
    else:
        y = g.activation(name, step.out_shape, out_q)
        g.op("FULLY_CONNECTED", [x, wt, bt], [y], lambda b: _fc_options(b, step))
    return y


def _build(steps, integer):
    g = _Graph(integer)
    x = g.tensor("input", (1,) + nhwc_shape(steps[0].in_shape), np.float32)
    inputs, flat_chw = [x], None
    for i, step in enumerate(steps):
        name, qp = f"{i}.{step.kind}", _qp(step)
        if step.kind == "quantize":
            y = g.activation(name, step.out_shape, qp)
            g.op("QUANTIZE", [x], [y])
        elif step.kind == "dequantize":
            y = g.tensor(name, (1,) + nhwc_shape(step.out_shape), np.float32)
            g.op("DEQUANTIZE", [x], [y])
        elif step.kind in ("conv", "linear"):
            y = _layer(g, step, x, name, flat_chw if step.kind == "linear" else None)
            flat_chw = None
        elif step.kind == "relu":
            y = g.activation(name, step.out_shape, qp)
            g.op("RELU", [x], [y])
        elif step.kind in ("maxpool", "avgpool"):
            x, padding = _window_options(step, g, x, qp, name, pool=True)
            y = g.activation(name, step.out_shape, qp)
            g.op("MAX_POOL_2D" if step.kind == "maxpool" else "AVERAGE_POOL_2D", [x], [y],
                 lambda b, s=step, pd=padding: _pool_options(b, s, pd))
        elif step.kind == "flatten":
            chw = step.in_shape if len(step.in_shape) == 3 and step.in_shape[1] * step.in_shape[2] > 1 else None
            if chw is not None and not _linear_follows(steps, i):
                # nothing to absorb the NHWC order: transpose back to NCHW so the numbers come out in
                # minicompress's order
                perm = g.tensor(f"{name}/perm", (4,), np.int32, data=[0, 3, 1, 2])
                t = g.tensor(f"{name}/nchw", (1,) + tuple(step.in_shape), g.tensors[x]["dtype"],
                             scale=_scale_of(g, x), zero_point=_zp_of(g, x))
                g.op("TRANSPOSE", [x, perm], [t])
                x, chw = t, None
            shape = g.tensor(f"{name}/shape", (2,), np.int32, data=[-1, step.out_shape[0]])
            y = g.activation(name, step.out_shape, qp)
            g.op("RESHAPE", [x, shape], [y])
            flat_chw = chw
        else:  # pragma: no cover - lowering only makes the kinds above
            raise UnsupportedModelError(f"to_tflite: no TFLite operator for step {step.kind!r}")
        x = y
    return g, inputs, [x]


def _linear_follows(steps, i):
    for s in steps[i + 1:]:
        if s.kind == "linear":
            return True
        if s.kind != "relu":
            return False
    return False


def _scale_of(g, t):
    q = g.tensors[t]["quant"]
    return None if q is None else q[0]


def _zp_of(g, t):
    q = g.tensors[t]["quant"]
    return None if q is None else q[1]


# ====================================================================================================================
# Serialisation with the schema bindings
# ====================================================================================================================


def _schema(table):
    """The generated module of one schema table (``tflite.<table>`` as an attribute is the class, not the
    module with the builder functions)."""
    return importlib.import_module(f"tflite.{table}")


def _type_enum(dtype):
    from tflite.TensorType import TensorType

    return {np.dtype(np.float32): TensorType.FLOAT32, np.dtype(np.int8): TensorType.INT8,
            np.dtype(np.int32): TensorType.INT32}[np.dtype(dtype)]


def _to_bytes(g, inputs, outputs, description):
    import flatbuffers
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.BuiltinOptions import BuiltinOptions

    TB, TM, TO, TOC, TQ, TS, TT = (_schema(n) for n in ("Buffer", "Model", "Operator", "OperatorCode",
                                                         "QuantizationParameters", "SubGraph", "Tensor"))
    b = flatbuffers.Builder(1024)

    def ivec(values, dtype=np.int32):
        return b.CreateNumpyVector(np.asarray(values, dtype=dtype).reshape(-1))

    def table_vector(offsets):
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    # buffers: constant data, 16-byte aligned as the schema asks (force_align: 16)
    buffers = []
    for data in g.buffers:
        vec = None
        if data:
            b.StartVector(1, len(data), 16)
            b.head -= len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            vec = b.EndVector()
        TB.Start(b)
        if vec is not None:
            TB.AddData(b, vec)
        buffers.append(TB.End(b))

    tensors = []
    for t in g.tensors:
        name, shape = b.CreateString(t["name"]), ivec(t["shape"])
        signature = ivec((-1,) + t["shape"][1:]) if t["batch"] else None
        quant = None
        if t["quant"] is not None:
            scale, zp = b.CreateNumpyVector(t["quant"][0]), b.CreateNumpyVector(t["quant"][1])
            TQ.Start(b)
            TQ.AddScale(b, scale)
            TQ.AddZeroPoint(b, zp)
            TQ.AddQuantizedDimension(b, t["quant"][2])
            quant = TQ.End(b)
        TT.Start(b)
        TT.AddShape(b, shape)
        if signature is not None:
            TT.AddShapeSignature(b, signature)
        TT.AddType(b, _type_enum(t["dtype"]))
        TT.AddBuffer(b, t["buffer"])
        TT.AddName(b, name)
        if quant is not None:
            TT.AddQuantization(b, quant)
        tensors.append(TT.End(b))

    ops = []
    for opcode, ins, outs, options in g.ops:
        opts = options(b) if options is not None else None
        iv, ov = ivec(ins), ivec(outs)
        TO.Start(b)
        TO.AddOpcodeIndex(b, opcode)
        TO.AddInputs(b, iv)
        TO.AddOutputs(b, ov)
        if opts is not None:
            TO.AddBuiltinOptionsType(b, getattr(BuiltinOptions, opts[0]))
            TO.AddBuiltinOptions(b, opts[1])
        ops.append(TO.End(b))

    codes = []
    for name in g.opcodes:
        code = getattr(BuiltinOperator, name)
        TOC.Start(b)
        TOC.AddDeprecatedBuiltinCode(b, min(code, 127))
        TOC.AddBuiltinCode(b, code)
        TOC.AddVersion(b, _OP_VERSIONS[name][1 if g.integer else 0])
        codes.append(TOC.End(b))

    tv, opv, iv, ov, sname = table_vector(tensors), table_vector(ops), ivec(inputs), ivec(outputs), \
        b.CreateString("main")
    TS.Start(b)
    TS.AddTensors(b, tv)
    TS.AddInputs(b, iv)
    TS.AddOutputs(b, ov)
    TS.AddOperators(b, opv)
    TS.AddName(b, sname)
    subgraph = TS.End(b)

    codes_v, subgraphs_v, buffers_v = table_vector(codes), table_vector([subgraph]), table_vector(buffers)
    desc = b.CreateString(description)
    TM.Start(b)
    TM.AddVersion(b, 3)
    TM.AddOperatorCodes(b, codes_v)
    TM.AddSubgraphs(b, subgraphs_v)
    TM.AddDescription(b, desc)
    TM.AddBuffers(b, buffers_v)
    b.Finish(TM.End(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# ====================================================================================================================
# Public API
# ====================================================================================================================


def to_tflite(model, input_shape=(1, 28, 28)):
    """The .tflite FlatBuffer (bytes) of a float model or of an integer-only model (``quantization.convert``).

    The file takes float32 inputs (N, H, W, C) (NHWC: for one-channel images simply (N, 28, 28, 1)) and returns
    float32 outputs; an integer model computes in int8 in between. ``input_shape`` is minicompress's (C, H, W)
    (or (F,)) without the batch axis.
    """
    require("flatbuffers", "to_tflite")
    require("tflite", "to_tflite")
    steps = lower(model, input_shape, fn="to_tflite")
    integer = steps[0].kind == "quantize"
    g, inputs, outputs = _build(steps, integer)
    what = "int8 (per-channel weights, int32 biases)" if integer else "float32"
    return _to_bytes(g, inputs, outputs, f"minicompress {getattr(model, 'spec', None) or 'model'} {what}")


def write_atomic(path, content: bytes, overwrite: bool = True):
    """Write bytes to ``path`` the way every minicompress file is written (checkpoint.atomic_write: a temporary
    file in the same folder, moved into place; overwrite=False never replaces an existing file)."""
    from minicompress.checkpoint import atomic_write

    return atomic_write(path, lambda f: f.write(content), overwrite=overwrite)


def save_tflite(model, path, input_shape=(1, 28, 28), overwrite=True):
    """to_tflite, written atomically to ``path``; returns the number of bytes."""
    content = to_tflite(model, input_shape)
    write_atomic(path, content, overwrite)
    return len(content)


# ====================================================================================================================
# 4. Running a file in LiteRT
# ====================================================================================================================


def interpreter(content, reference=True, preserve=False, num_threads=1, xnnpack=False):
    """A LiteRT interpreter for a .tflite file's bytes (or path). reference=True uses TFLite's reference
    kernels (BUILTIN_REF: the plain C++ loops that define the arithmetic); False its optimized kernels
    without the XNNPACK delegate, or with it (LiteRT's default) when xnnpack=True. preserve keeps intermediate
    tensors readable (for the int8 codes)."""
    require("ai_edge_litert", "interpreter")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if isinstance(content, (str, Path)):
        content = Path(content).read_bytes()
    kind = (OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO if xnnpack
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return Interpreter(model_content=content, experimental_op_resolver_type=kind,
                       experimental_preserve_all_tensors=preserve, num_threads=num_threads)


def to_nhwc(x):
    """(N, C, H, W) -> (N, H, W, C) float32, as the exported file expects; (N, F) stays."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def tflite_predictor(content, reference=False, xnnpack=False):
    """predict(x (N, C, H, W)) -> float32 outputs, with one interpreter kept across calls (resized when the batch
    size changes): for timing. Kernels as in ``interpreter`` (default: optimized, without XNNPACK)."""
    interp = interpreter(content, reference=reference, xnnpack=xnnpack)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    shape = [None]

    def predict(x):
        xin = to_nhwc(x)
        if shape[0] != xin.shape:
            interp.resize_tensor_input(inp["index"], xin.shape)
            interp.allocate_tensors()
            shape[0] = xin.shape
        interp.set_tensor(inp["index"], xin)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return predict


def run_tflite(content, x, reference=True, return_codes=False):
    """Run an exported file on minicompress-layout inputs x (N, C, H, W): float32 outputs (N, ...).

    return_codes=True (integer models) also returns the int8 codes of the tensor DEQUANTIZE reads, i.e. the
    integers the last integer layer wrote."""
    interp = interpreter(content, reference=reference, preserve=return_codes)
    xin = to_nhwc(x)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], xin.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], xin)
    interp.invoke()
    y = interp.get_tensor(out["index"])
    if not return_codes:
        return y
    codes = out["index"] - 1  # _build creates the tensor DEQUANTIZE reads right before its output
    if interp.get_tensor_details()[codes]["dtype"] != np.int8:
        raise ValueError("run_tflite(return_codes=True): the file has no int8 activations (a float model?)")
    return y, interp.get_tensor(codes)


__all__ = ["to_tflite", "save_tflite", "run_tflite", "tflite_predictor", "interpreter", "to_nhwc", "nhwc_columns"]
