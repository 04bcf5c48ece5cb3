"""One small file of every kind minicompress writes, built from untrained models in milliseconds, and the arrays
each loader must give back exactly (for the tampering / fuzzing tests of issue 13)."""
import gzip
import struct

import numpy as np

from minicompress import binary, checkpoint, models, pipeline, pruning, train
from minicompress import quantization as Q

KINDS = ("model", "pruned", "quantized", "dynamic", "compressed", "binary")


def _mlp(seed=0):
    train.set_seed(seed)
    return models.from_spec("mlp:784-12-10")


def build(kind, path):
    """Write a file of `kind` to `path`; returns the path."""
    rng = np.random.default_rng(0)
    if kind == "model":
        checkpoint.save(_mlp(), path)
    elif kind == "pruned":
        model = _mlp()
        for module, name in pruning.prunable(model):
            pruning.l1_unstructured(module, name, 0.7)
        pruning.save_sparse(model, path)
    elif kind == "quantized":
        batches = [rng.standard_normal((16, 1, 28, 28)).astype(np.float32)]
        Q.save_quantized(Q.quantize_static(_mlp().eval(), batches, bits=4, per_channel=True), path)
    elif kind == "dynamic":
        Q.save_quantized(Q.quantize_dynamic(_mlp().eval(), bits=8), path)
    elif kind == "compressed":
        model = _mlp()
        for module, name in pruning.prunable(model):
            pruning.l1_unstructured(module, name, 0.8)
            pruning.remove(module, name)
        Q.share_model_weights(model, 3)
        pipeline.save_compressed(model, path)
    elif kind == "binary":
        train.set_seed(0)
        net = binary.binary_mlp([784, 16, 10], binary_activations=True, xnor=True)
        binary.save(binary.pack_model(net.eval()), path)
    else:
        raise ValueError(kind)
    return path


def state(model):
    """Every array a loaded model computes with, by name (what must come back bit for bit)."""
    if isinstance(model, binary.PackedBinaryModel):
        out = {}
        for i, layer in enumerate(model.layers):
            arrays = layer.arrays() if isinstance(layer, binary._PackedLayer) else layer.state_dict()
            out.update({f"{i}.{k}": np.asarray(v) for k, v in arrays.items()})
        return out
    if getattr(model, "quantized_layers", None) or any(type(m).__name__ in Q._INTEGER_MODULES for m in model):
        return {k: np.asarray(v) for k, v in Q.export_arrays(model)[0].items()}
    return {k: np.asarray(v) for k, v in model.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


def rewrite(path, change):
    """A crafted file: the arrays and metadata of `path`, changed by change(arrays, meta), written back with a
    valid digest (as a hostile file would be): what the field checks must catch."""
    arrays, meta = checkpoint.read_npz(path)
    change(arrays, meta)
    checkpoint.write_npz(path, arrays, meta)
    return path


def idx_gz(path, images):
    """A gzip-compressed IDX file of uint8 images (N, 28, 28)."""
    header = bytes([0, 0, 8, images.ndim]) + struct.pack(f">{images.ndim}I", *images.shape)
    path.write_bytes(gzip.compress(header + images.tobytes(), mtime=0))
    return path
