"""Quantization, section 10: sizes and lossless save / load.

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import math

import numpy as np

from .. import checkpoint, nn
from .arithmetic import _check_qparams
from .integer import DeQuantize, Quantize, QuantizedAvgPool2d, QuantizedConv2d, QuantizedFlatten, QuantizedLinear, QuantizedMaxPool2d, QuantizedReLU, _IntegerLayer, _param
from .dynamic import DynamicQuantizedLinear

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
