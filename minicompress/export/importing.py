"""Import: bring a network trained elsewhere into minicompress, so it can be pruned, quantized and exported.

1. From ONNX (``from_onnx``): a chain of Conv, Gemm (or MatMul + Add), Relu, MaxPool, AveragePool, Flatten /
   Reshape(N, -1), with Identity and Dropout skipped: what ``torch.onnx.export`` writes for a LeNet built from
   torch.nn.Conv2d / Linear / ReLU / MaxPool2d / Flatten. Anything else (another operator, a branch, dilation,
   groups, ceil_mode, transposed weights a Linear cannot hold) is refused with the node and operator named.
2. From safetensors (``from_safetensors``): a model spec (``models.from_spec``: "lenet5", "mlp:784-300-10", ...)
   plus a file of weights whose names are the spec's state-dict names ("0.weight", "0.bias", ...; an
   nn.Sequential in PyTorch uses the same names).
3. ``zoo_spec``: the zoo spec an imported network matches, so ``checkpoint.save`` can store it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import models, nn
from . import require
from .lowering import UnsupportedModelError

# ====================================================================================================================
# 1. From ONNX
# ====================================================================================================================

ONNX_OPS = ("Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "AveragePool", "Flatten", "Reshape", "Identity",
            "Dropout")


def _attrs(node):
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _int_pair(values, node, what):
    values = [int(v) for v in values]
    if len(values) != 2:
        raise UnsupportedModelError(f"{node}: {what} {values}: only 2-D windows are supported")
    return tuple(values)


def _symmetric_pads(pads, node):
    pads = [int(p) for p in (pads or [0, 0, 0, 0])]
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise UnsupportedModelError(f"{node}: pads {pads}: only symmetric padding (top = bottom, left = right) "
                                    "is supported")
    return pads[0], pads[1]


def _check_plain_window(a, node):
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedModelError(f"{node}: auto_pad={a['auto_pad']!r} is not supported (export with explicit "
                                    "pads)")
    if any(int(d) != 1 for d in a.get("dilations", [1, 1])):
        raise UnsupportedModelError(f"{node}: dilations {list(a['dilations'])} are not supported")


def _window(cls, a, node):
    _check_plain_window(a, node)
    if int(a.get("ceil_mode", 0)):
        raise UnsupportedModelError(f"{node}: ceil_mode=1 is not supported")
    if cls is nn.AvgPool2d and a.get("pads") and any(a["pads"]) and not int(a.get("count_include_pad", 0)):
        raise UnsupportedModelError(f"{node}: padded AveragePool with count_include_pad=0 is not supported "
                                    "(minicompress counts the padding, as PyTorch's default)")
    k = _int_pair(a["kernel_shape"], node, "kernel_shape")
    s = _int_pair(a.get("strides", k), node, "strides")
    p = _symmetric_pads(a.get("pads"), node)
    square = k[0] == k[1] and s[0] == s[1] and p[0] == p[1]
    return cls(k[0] if square else k, s[0] if square else s, p[0] if square else p)


def _linear(w, b, where):
    layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    layer.weight.data = np.ascontiguousarray(w, dtype=np.float32)
    if b is not None:
        if b.shape != (w.shape[0],):
            raise UnsupportedModelError(f"{where}: bias of shape {b.shape} for {w.shape[0]} outputs")
        layer.bias.data = b.astype(np.float32)
    return layer


def from_onnx(source):
    """A float minicompress nn.Sequential from an ONNX model (path, bytes or ModelProto); ``.spec`` is set when
    the network is one of the zoo's (see ``zoo_spec``)."""
    onnx = require("onnx", "from_onnx")
    from onnx import numpy_helper

    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"from_onnx({str(source)!r}): no such file")
        try:
            proto = onnx.load(str(source))
        except Exception as exc:  # protobuf raises its own DecodeError
            raise UnsupportedModelError(f"from_onnx({str(source)!r}): not a readable ONNX file ({exc})") from None
    elif isinstance(source, bytes):
        proto = onnx.load_from_string(source)
    else:
        proto = source
    graph = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedModelError(f"from_onnx: need one input and one output, got inputs {inputs} and outputs "
                                    f"{[o.name for o in graph.output]}")
    current, layers, pending = inputs[0], [], None  # pending: a MatMul waiting for its bias Add
    for i, node in enumerate(graph.node):
        where = f"from_onnx: node {i} {node.name!r} (op {node.op_type})"
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
            continue
        if node.op_type not in ONNX_OPS:
            raise UnsupportedModelError(f"{where} is not supported; supported operators: {', '.join(ONNX_OPS)}")
        data_in = [n for n in node.input if n and n not in consts]
        if data_in != [current]:
            raise UnsupportedModelError(f"{where}: reads {data_in}, but only a chain of layers is supported (each "
                                        f"node reads the previous one's output {current!r})")
        a, params = _attrs(node), [consts[n] for n in node.input[1:] if n in consts]
        op = node.op_type
        if op != "Add" and pending is not None:
            layers.append(_linear(*pending, where))
            pending = None
        if op == "Conv":
            _check_plain_window(a, where)
            if int(a.get("group", 1)) != 1:
                raise UnsupportedModelError(f"{where}: group={a['group']} (grouped / depthwise) is not supported")
            w = params[0].astype(np.float32)
            if w.ndim != 4:
                raise UnsupportedModelError(f"{where}: weight of shape {w.shape}: only 2-D convolutions")
            conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]),
                             _int_pair(a.get("strides", [1, 1]), where, "strides"),
                             _symmetric_pads(a.get("pads"), where), bias=len(params) > 1)
            conv.weight.data = w
            if len(params) > 1:
                conv.bias.data = params[1].astype(np.float32)
            layers.append(conv)
        elif op == "Gemm":
            if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0 or int(a.get("transA", 0)):
                raise UnsupportedModelError(f"{where}: only alpha = beta = 1 and transA = 0 are supported")
            w = params[0] if int(a.get("transB", 0)) else params[0].T
            layers.append(_linear(w, params[1].reshape(-1) if len(params) > 1 else None, where))
        elif op == "MatMul":
            pending = (params[0].T, None)
        elif op == "Add":
            if pending is None or pending[1] is not None:
                raise UnsupportedModelError(f"{where}: Add is supported only as the bias right after a MatMul")
            pending = (pending[0], params[0].reshape(-1))
        elif op == "Relu":
            layers.append(nn.ReLU())
        elif op in ("MaxPool", "AveragePool"):
            layers.append(_window(nn.MaxPool2d if op == "MaxPool" else nn.AvgPool2d, a, where))
        elif op == "Flatten":
            if int(a.get("axis", 1)) != 1:
                raise UnsupportedModelError(f"{where}: axis={a['axis']}: only Flatten(axis=1) is supported")
            layers.append(nn.Flatten())
        elif op == "Reshape":
            shape = [int(v) for v in params[0]]
            if len(shape) != 2 or shape[0] not in (0, -1) and shape[1] != -1:
                raise UnsupportedModelError(f"{where}: shape {shape}: only a reshape to (N, -1) (a flatten) is "
                                            "supported")
            layers.append(nn.Flatten())
        current = node.output[0]
    if pending is not None:
        layers.append(_linear(*pending, "from_onnx: last MatMul"))
    if current != graph.output[0].name:
        raise UnsupportedModelError(f"from_onnx: the chain ends at {current!r}, not at the output "
                                    f"{graph.output[0].name!r}")
    if not layers:
        raise UnsupportedModelError("from_onnx: the graph has no layers")
    model = nn.Sequential(*layers).eval()
    model.spec = zoo_spec(model)
    return model


# ====================================================================================================================
# 2. From safetensors weights and a model spec
# ====================================================================================================================


def from_safetensors(path, spec):
    """The zoo model ``spec`` with the weights of a .safetensors file (names as its state dict: "0.weight", ...).

    Float16 / float64 weights are cast to float32; a missing, extra or misshapen tensor is an error naming it."""
    require("safetensors", "from_safetensors")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    model = models.from_spec(spec)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"from_safetensors({str(path)!r}): no such file")
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UnsupportedModelError(f"from_safetensors({str(path)!r}): not a readable safetensors file "
                                    f"({exc})") from None
    state = model.state_dict()
    missing, extra = sorted(set(state) - set(arrays)), sorted(set(arrays) - set(state))
    if missing or extra:
        raise UnsupportedModelError(f"from_safetensors: the file does not hold the weights of {spec!r}: missing "
                                    f"{missing[:6]}, unexpected {extra[:6]} (expected names: "
                                    f"{list(state)[:4]}...)")
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise UnsupportedModelError(f"from_safetensors: tensor {name!r} has dtype {value.dtype}; weights must "
                                        "be floating point")
        if value.shape != state[name].shape:
            raise UnsupportedModelError(f"from_safetensors: tensor {name!r} has shape {value.shape}, {spec!r} "
                                        f"needs {state[name].shape}")
    model.load_state_dict({k: v.astype(np.float32) for k, v in arrays.items()}, strict=True)
    return model.eval()


# ====================================================================================================================
# 3. Which zoo network is it?
# ====================================================================================================================


def _signature(model):
    return repr(model), [getattr(m, "padding", None) for m in model]


def zoo_spec(model):
    """The spec of the zoo network with exactly this structure ("lenet5", "mlp:784-100-10", ...) or None."""
    candidates = ["lenet5", "lenet5_caffe", "lenet300_100"]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if linears and isinstance(model[0], nn.Flatten):
        candidates.append("mlp:" + "-".join(str(n) for n in [linears[0].in_features]
                                             + [m.out_features for m in linears]))
    for spec in candidates:
        if _signature(models.from_spec(spec)) == _signature(model):
            return spec
    return None
