"""Quantization, section 6: dynamic quantization: int8 weights now, activations quantized on the fly.

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import copy

import numpy as np

from .. import nn
from ..tensor import Tensor
from .arithmetic import _as_array, _check_bits, _check_finite, qparams, qrange, quantize, quantize_tensor
from .integer import _param, int_matmul

# ====================================================================================================================
# 6. Dynamic quantization: int8 weights now, activations quantized on the fly
# ====================================================================================================================


class DynamicQuantizedLinear(nn.Module):
    """Linear with int8 weights (symmetric, per tensor by default as PyTorch's default_weight_observer) and float
    input/output. Each call quantizes the input with (S_x, Z_x) from its own min/max (unsigned, as PyTorch),
    accumulates in int32 and rescales:  y = (S_x * S_w) * sum_k (q_x - Z_x)(q_w - Z_w) + b  (float32).
    ``reduce_range`` uses 7-bit activations [0, 127], as PyTorch's fbgemm backend does to avoid overflow in
    its 16-bit intermediate products.
    """

    def __init__(self, weight_q, weight_scale, weight_zero_point, bias, bits=8, reduce_range=False):
        super().__init__()
        self.weight_q = np.asarray(weight_q)
        out = self.weight_q.shape[0]
        self.weight_scale = np.broadcast_to(np.asarray(weight_scale, np.float32), (out,)).copy()
        self.weight_zero_point = np.broadcast_to(np.asarray(weight_zero_point, np.int32), (out,)).copy()
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        self.bits, self.reduce_range = int(bits), bool(reduce_range)
        self.in_features, self.out_features = self.weight_q.shape[1], out
        act_bits = self.bits - 1 if self.reduce_range else self.bits
        self.act_qmin, self.act_qmax = qrange(act_bits, signed=False)
        w = self.weight_q.astype(np.int32) - self.weight_zero_point[:, None]
        self._w_bound = int(np.abs(w).max()) if w.size else 0
        self._w = w.astype(np.float32)

    @classmethod
    def from_float(cls, linear, bits=8, per_channel=False, reduce_range=False):
        w = _param(linear.weight).astype(np.float32)
        axis = 0 if per_channel else None
        qw = quantize_tensor(w, bits, symmetric=True, signed=True, axis=axis)
        bias = None if linear.bias is None else _param(linear.bias)
        return cls(qw.q, qw.scale, qw.zero_point, bias, bits, reduce_range)

    def forward(self, x):
        x = np.asarray(_as_array(x), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"DynamicQuantizedLinear(in_features={self.in_features}): input shape {x.shape}")
        _check_finite(x, "DynamicQuantizedLinear", "input")
        if x.size == 0:
            return Tensor(np.zeros((x.shape[0], self.out_features), np.float32))
        act_bits = self.bits - 1 if self.reduce_range else self.bits
        s_x, z_x = qparams(x.min(), x.max(), act_bits, signed=False)
        q_x = quantize(x, s_x, z_x, self.act_qmin, self.act_qmax)
        a = q_x.astype(np.float32) - np.float32(z_x)
        acc = int_matmul(a, self._w.T, a_bound=max(int(z_x) - self.act_qmin, self.act_qmax - int(z_x)),
                         b_bound=self._w_bound)
        y = acc.astype(np.float32) * (np.float32(s_x) * self.weight_scale)
        if self.bias is not None:
            y += self.bias
        return Tensor(y)

    def to_arrays(self):
        arrays = {"weight_q": self.weight_q, "weight_scale": self.weight_scale,
                  "weight_zero_point": self.weight_zero_point}
        if self.bias is not None:
            arrays["bias"] = self.bias
        return arrays, {"bits": self.bits, "reduce_range": self.reduce_range}

    @classmethod
    def from_arrays(cls, arrays, config):
        return cls(arrays["weight_q"], arrays["weight_scale"], arrays["weight_zero_point"], arrays.get("bias"),
                   config["bits"], config["reduce_range"])

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


def _replace_modules(module, types, make, prefix=""):
    """Replace, depth first, every child whose type is in ``types`` by make(child); returns the names replaced."""
    replaced = []
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, types):
            module._modules[name] = make(child)  # in place: setattr would move the child to the end of the order
            replaced.append(full)
        else:
            replaced += _replace_modules(child, types, make, full + ".")
    return replaced


def quantize_dynamic(model, bits=8, per_channel=False, reduce_range=False, inplace=False):
    """Replace every nn.Linear of ``model`` by a DynamicQuantizedLinear (as torch.ao.quantization.quantize_dynamic).

    Weights become ``bits``-bit symmetric integers now; activations are quantized batch by batch at run time.
    Convolutions stay float (PyTorch's default too). Returns the quantized model (a copy unless ``inplace``);
    ``model.quantized_layers`` lists the replaced module names.
    """
    _check_bits(bits, "quantize_dynamic")
    if isinstance(model, nn.Linear):
        return DynamicQuantizedLinear.from_float(model, bits, per_channel, reduce_range)
    qmodel = model if inplace else copy.deepcopy(model)
    qmodel.quantized_layers = _replace_modules(
        qmodel, (nn.Linear,), lambda m: DynamicQuantizedLinear.from_float(m, bits, per_channel, reduce_range))
    if not qmodel.quantized_layers:
        raise ValueError(f"quantize_dynamic: {type(model).__name__} has no nn.Linear layer to quantize")
    qmodel.eval()
    return qmodel
