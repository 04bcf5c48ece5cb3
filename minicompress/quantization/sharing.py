"""Quantization, section 9: weight sharing (Han, Mao, Dally 2016, "Deep Compression").

Part of the chapter minicompress.quantization: its docstring gives the whole story and the formulas.
"""
import math

import numpy as np

from .. import nn
from ..tensor import Function, Tensor
from .arithmetic import _as_array, _check_finite
from .integer import _param
from .files import pack_bits, unpack_bits

# ====================================================================================================================
# 9. Weight sharing (Han, Mao, Dally 2016, "Deep Compression")
# ====================================================================================================================


def kmeans_1d(w, k, iters=100):
    """1-D k-means of the values w with linear initialisation: c_j = min + j (max - min) / (k - 1).

    Lloyd iterations: assign each w to its nearest centroid (a sorted search over midpoints), move every
    centroid to the mean of its members (an empty cluster keeps its centroid). Stops when nothing moves.
    Returns (codebook float32 (k,), indices int64 like w).
    """
    w = np.asarray(_as_array(w), dtype=np.float64)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"kmeans_1d: k must be a positive integer, got {k!r}")
    if w.size == 0:
        raise ValueError("kmeans_1d: no weights to cluster")
    _check_finite(w, "kmeans_1d", "w")
    flat = w.ravel()
    codebook = np.linspace(flat.min(), flat.max(), k)
    idx = None
    for _ in range(iters):
        new_idx = np.searchsorted((codebook[1:] + codebook[:-1]) / 2, flat)
        if idx is not None and np.array_equal(new_idx, idx):
            break
        idx = new_idx
        counts = np.bincount(idx, minlength=k)
        sums = np.bincount(idx, weights=flat, minlength=k)
        codebook = np.where(counts > 0, sums / np.maximum(counts, 1), codebook)
        codebook.sort()  # Lloyd keeps the order in 1-D; sorting guards against float ties
    return codebook.astype(np.float32), idx.reshape(w.shape)


class SharedWeight(Function):
    """W = c[idx] (idx = -1 marks a pruned weight, W = 0).  dL/dc_j = sum over {i : idx_i = j} dL/dW_i:
    every weight of a cluster pushes its one shared value (Deep Compression's centroid fine-tuning)."""

    @staticmethod
    def forward(ctx, codebook, indices):
        ctx.indices, ctx.k = indices, codebook.shape[0]
        return np.where(indices >= 0, codebook[np.maximum(indices, 0)], 0).astype(codebook.dtype)

    @staticmethod
    def backward(ctx, grad):
        keep = ctx.indices >= 0
        g = np.bincount(ctx.indices[keep], weights=grad[keep], minlength=ctx.k).astype(grad.dtype)
        return g, None


def _share_weight_hook(module, inputs):
    module.weight = SharedWeight.apply(module.weight_codebook, _indices_of(module))


def share_weights(module, bits=5, name="weight"):
    """Cluster the surviving (non-zero) weights of ``module`` into k = 2^bits shared values, in place.

    As torch's pruning reparametrisation: the parameter ``weight`` is replaced by ``weight_codebook``
    (trainable, (k,)) and the buffer ``weight_indices`` (int64, -1 where the weight was pruned to zero); a
    forward pre-hook rebuilds weight = codebook[indices] before every forward. Returns the module.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"share_weights: bits must be an integer in [1, 16] (k = 2^bits), got {bits!r}")
    w = _param(getattr(module, name))
    alive = w != 0
    if not alive.any():
        raise ValueError(f"share_weights: {type(module).__name__}.{name} has no non-zero weight to cluster")
    k = min(2**bits, int(alive.sum()))
    codebook, idx_alive = kmeans_1d(w[alive], k)
    indices = np.full(w.shape, -1, dtype=np.int64)
    indices[alive] = idx_alive
    delattr(module, name)
    module.weight_codebook = nn.Parameter(codebook)
    module.register_buffer("weight_indices", indices)
    module.weight_bits = int(bits)
    module.register_forward_pre_hook(_share_weight_hook)
    _share_weight_hook(module, None)
    return module


def share_model_weights(model, bits=5, layers=(nn.Linear, nn.Conv2d)):
    """share_weights on every Linear / Conv2d of ``model`` (in place); ``bits`` may be a dict by layer type."""
    for _, m in model.named_modules():
        if isinstance(m, layers) and hasattr(m, "weight") and not hasattr(m, "weight_codebook"):
            share_weights(m, bits[type(m)] if isinstance(bits, dict) else bits)
    return model


def _indices_of(module):
    idx = module.weight_indices
    return np.asarray(idx.data if isinstance(idx, Tensor) else idx).astype(np.int64)


def export_shared(module):
    """The arrays that store a weight-shared layer: the float32 codebook, the indices of the surviving weights
    packed at ceil(log2 k) bits each, and (only if some weights are pruned) a 1-bit mask."""
    idx, codebook = _indices_of(module), _param(module.weight_codebook).astype(np.float32)
    bits = max(1, math.ceil(math.log2(codebook.size)))
    alive = idx >= 0
    arrays = {"codebook": codebook, "indices": pack_bits(idx[alive], bits)}
    if not alive.all():
        arrays["mask"] = np.packbits(alive.ravel())
    return arrays


def import_shared(arrays, shape):
    """Inverse of export_shared: the dense weight codebook[indices] (0 where pruned) of the given shape."""
    codebook = arrays["codebook"]
    n = int(np.prod(shape))
    alive = (np.unpackbits(arrays["mask"], count=n).astype(bool) if "mask" in arrays else np.ones(n, bool))
    bits = max(1, math.ceil(math.log2(codebook.size)))
    w = np.zeros(n, dtype=np.float32)
    w[alive] = codebook[unpack_bits(arrays["indices"], bits, int(alive.sum()))]
    return w.reshape(shape)


def shared_nbytes(module):
    """Bytes of a weight-shared layer's weight as stored by export_shared (indices + codebook (+ mask))."""
    return int(sum(a.nbytes for a in export_shared(module).values()))


def storage_ratio(n, k, b=32):
    """Deep Compression's ratio r = n b / (n log2(k) + k b): n weights of b bits vs n log2(k)-bit indices plus a
    k-entry codebook of b-bit values."""
    return n * b / (n * math.log2(k) + k * b)
