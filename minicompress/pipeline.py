"""Deep Compression (Han, Mao, Dally 2016): the four stages in one pipeline, each one measured.

    dense model
      -> prune by I(w) = |w| and fine-tune                          (pruning.py)
      -> share weights: k-means codebook per layer, fine-tune it    (quantization/sharing.py)
      -> Huffman-code cluster indices and positions                 (huffman.py)
      -> one file on disk, loaded back and evaluated

How a pruned, weight-shared layer is stored. Its surviving weights, in row-major order, become two symbol streams:

* cluster indices c_i in [0, k): the weight is codebook[c_i];
* relative positions: the gap g_i = p_i - p_{i-1} between consecutive survivors (p_{-1} = -1), stored as g_i - 1
  in ``gap_bits`` bits. A gap larger than G = 2^gap_bits is bridged by *filler* entries: a step of G that holds
  no weight (cluster symbol k, one past the codebook), exactly the zero-valued filler of Deep Compression.

Both streams are Huffman-coded (canonical codes: only the code lengths are stored). What is stored, and counted
in ``payload_bytes``: the two bit streams, the two code-length tables, the float32 codebook, and every other
parameter (biases) as float32. The file adds the zip container and a JSON header; its size is reported apart.
"""

import math
import os

import numpy as np

from . import checkpoint, huffman, models, nn, pruning, quantization
from .optim import SGD, CosineAnnealingLR
from .train import evaluate, fit

FORMAT_KIND = "deep_compression"


# --------------------------------------------------------------------------------------------------------------------
# Relative positions with fillers
# --------------------------------------------------------------------------------------------------------------------


def relative_positions(positions, gap_bits):
    """Gaps between sorted flat positions, as symbols g - 1 in [0, 2^gap_bits), with fillers for long gaps.

    Returns (gap_symbols, is_filler): one entry per stored step; fillers carry no weight.
    """
    positions = np.asarray(positions, dtype=np.int64)
    G = 2**gap_bits
    gaps = np.diff(np.concatenate([[-1], positions]))
    n_fillers = (gaps - 1) // G  # full steps of G taken before the real entry
    steps = n_fillers + 1  # entries per survivor: its fillers, then itself
    total = int(steps.sum())
    gap_symbols = np.full(total, G - 1, dtype=np.int64)  # a filler steps exactly G
    is_filler = np.ones(total, dtype=bool)
    last = np.cumsum(steps) - 1  # the real entry closes each group
    gap_symbols[last] = gaps - n_fillers * G - 1
    is_filler[last] = False
    return gap_symbols, is_filler


def absolute_positions(gap_symbols, is_filler):
    """Inverse of ``relative_positions``: the flat positions of the real (non-filler) entries."""
    return (np.cumsum(np.asarray(gap_symbols, dtype=np.int64) + 1) - 1)[~np.asarray(is_filler, dtype=bool)]


# --------------------------------------------------------------------------------------------------------------------
# One layer <-> arrays
# --------------------------------------------------------------------------------------------------------------------


def _huffman_arrays(symbols, alphabet_size, prefix):
    lengths = huffman.code_lengths(symbols, alphabet_size)
    stream, n_bits = huffman.encode(symbols, lengths)
    return {f"{prefix}_lengths": lengths, f"{prefix}_stream": stream}, n_bits


def encode_layer(indices, codebook, max_gap_bits=8):
    """Arrays storing one weight-shared layer (indices: int, -1 where pruned; codebook: (k,) float32).

    Tries every gap width from 1 to ``max_gap_bits`` bits and keeps the one with the fewest bytes.
    Returns (arrays, info) where info holds the counts the decoder needs.
    """
    indices = np.asarray(indices, dtype=np.int64)
    k = len(codebook)
    positions = np.flatnonzero(indices.ravel() >= 0)
    best = None
    for gap_bits in range(1, max_gap_bits + 1):
        gap_symbols, is_filler = relative_positions(positions, gap_bits)
        clusters = np.full(len(gap_symbols), k, dtype=np.int64)  # symbol k marks a filler
        clusters[~is_filler] = indices.ravel()[positions]
        arrays = {"codebook": np.asarray(codebook, dtype=np.float32)}
        gap_arrays, gap_n_bits = _huffman_arrays(gap_symbols, 2**gap_bits, "gap")
        cluster_arrays, cluster_n_bits = _huffman_arrays(clusters, k + 1, "cluster")
        arrays.update(gap_arrays)
        arrays.update(cluster_arrays)
        info = dict(shape=list(indices.shape), gap_bits=gap_bits, entries=len(gap_symbols),
                    gap_n_bits=gap_n_bits, cluster_n_bits=cluster_n_bits)
        if best is None or payload_bytes(arrays) < payload_bytes(best[0]):
            best = (arrays, info)
    return best


def check_layer(arrays, info, where):
    """Every field and array decode_layer relies on, checked for type and range (checkpoint.CheckpointError)."""
    c = checkpoint
    shape = c.shape_field(info, "shape", where)
    gap_bits = c.int_field(info, "gap_bits", where, 1, 16)
    entries = c.int_field(info, "entries", where, 0, c.MAX_ELEMENTS)
    codebook = c.array(arrays, "codebook", where, kinds="f", ndim=1)
    if codebook.size == 0:
        raise c.CheckpointError(f"{where}: empty codebook")
    for name, alphabet in (("gap", 2**gap_bits), ("cluster", codebook.size + 1)):
        n_bits = c.int_field(info, f"{name}_n_bits", where, entries, None)
        stream = c.array(arrays, f"{name}_stream", where, kinds="u", ndim=1)
        lengths = c.array(arrays, f"{name}_lengths", where, kinds="u", ndim=1)
        if lengths.size != alphabet or stream.dtype != np.uint8 or stream.size != -(-n_bits // 8):
            raise c.CheckpointError(f"{where}: {name} stream of {stream.size} bytes / {lengths.size} code lengths "
                                    f"does not fit {n_bits} bits of a {alphabet}-symbol alphabet")
        try:
            huffman.check_lengths(lengths, where)
        except ValueError as exc:
            raise c.CheckpointError(f"{where}: {name}_lengths: {exc}") from None
    if entries > math.prod(shape):
        raise c.CheckpointError(f"{where}: {entries} entries for a weight of {math.prod(shape)}")
    return shape


def decode_layer(arrays, info):
    """Inverse of ``encode_layer``: the dense float32 weight (0 where pruned)."""
    k = len(arrays["codebook"])
    entries = info["entries"]
    gaps = huffman.decode(arrays["gap_stream"], info["gap_n_bits"], arrays["gap_lengths"], entries)
    clusters = huffman.decode(arrays["cluster_stream"], info["cluster_n_bits"], arrays["cluster_lengths"], entries)
    is_filler = clusters == k
    weight = np.zeros(math.prod(info["shape"]), dtype=np.float32)
    positions = absolute_positions(gaps, is_filler)
    if positions.size and positions[-1] >= weight.size:
        raise ValueError(f"decode_layer: position {positions[-1]} past the {weight.size} weights")
    weight[positions] = arrays["codebook"][clusters[~is_filler]]
    return weight.reshape(info["shape"])


def payload_bytes(arrays):
    """Bytes of what is stored: the sum of the arrays' sizes (no container, no header)."""
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


# --------------------------------------------------------------------------------------------------------------------
# A whole model <-> a file
# --------------------------------------------------------------------------------------------------------------------


def _shared_layers(model):
    return {name: m for name, m in model.named_modules() if hasattr(m, "weight_codebook")}


def encode_model(model):
    """All arrays of a pruned, weight-shared model: Huffman-coded layers plus every other parameter as float32.

    Returns (arrays, layers_info) with array keys "<layer>.weight/<part>" and "<name>" for the rest.
    """
    if not hasattr(model, "spec"):
        raise ValueError("encode_model: the model has no .spec, so it could not be rebuilt; use a zoo model")
    shared = _shared_layers(model)
    if not shared:
        raise ValueError("encode_model: no weight-shared layer; run quantization.share_model_weights first")
    arrays, layers = {}, {}
    for name, module in shared.items():
        layer_arrays, info = encode_layer(module.weight_indices.data, module.weight_codebook.data)
        arrays.update({f"{name}.weight/{part}": a for part, a in layer_arrays.items()})
        layers[name] = info
    for key, value in model.state_dict().items():
        if not (key.endswith(".weight_codebook") or key.endswith(".weight_indices")):
            arrays[key] = value.astype(np.float32)
    return arrays, layers


def decode_model(arrays, meta):
    """Rebuild the zoo model of ``meta["spec"]`` with the decoded dense weights (zeros where pruned)."""
    model = models.from_spec(meta["spec"])
    state = {k: v for k, v in arrays.items() if "/" not in k}
    for name, info in meta["layers"].items():
        parts = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{name}.weight/")}
        state[f"{name}.weight"] = decode_layer(parts, info)
    model.load_state_dict(state)
    return model


def save_compressed(model, path, overwrite=True):
    """Write the Huffman-coded model to ``path`` (atomically). Returns (payload bytes, file bytes)."""
    arrays, layers = encode_model(model)
    path = checkpoint.write_npz(path, arrays, {"kind": FORMAT_KIND, "spec": model.spec, "layers": layers},
                                overwrite=overwrite)
    return payload_bytes(arrays), os.path.getsize(path)


def load_compressed(path):
    """Read a file written by ``save_compressed``; returns the model with its decoded weights. A corrupt or crafted
    file raises checkpoint.CheckpointError naming the file and the field."""
    return checkpoint.load(path, kind=FORMAT_KIND)


def _build(arrays, meta, where):
    """checkpoint builder of kind "deep_compression": every layer checked, then decode_model."""
    model, _ = checkpoint.build_zoo_model(meta.get("spec"), where)
    modules = dict(model.named_modules())
    layers = checkpoint.field(meta, "layers", dict, where)
    stray = [k for k in arrays if "/" in k and k.split(".weight/", 1)[0] not in layers]
    if stray:
        raise checkpoint.CheckpointError(f"{where}: arrays {stray[:5]} belong to no layer")
    for name, info in layers.items():
        at = f"{where}: layer {name!r}"
        target = modules.get(name)
        if not isinstance(target, (nn.Linear, nn.Conv2d)) or not isinstance(info, dict):
            raise checkpoint.CheckpointError(f"{at}: not a Linear / Conv2d layer of {meta['spec']!r}")
        parts = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{name}.weight/")}
        if check_layer(parts, info, at) != target.weight.shape:
            raise checkpoint.CheckpointError(f"{at}: shape {info['shape']} does not fit {target.weight.shape}")
    checkpoint.check_finite_arrays({k: v for k, v in arrays.items() if "/" not in k}, where)
    checkpoint.check_running_var(arrays, where)
    return decode_model(arrays, meta)


checkpoint.register_kind(FORMAT_KIND, _build)


# --------------------------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------------------------


def default_sparsity(model):
    """Per-layer sparsities in the spirit of Han et al. 2015: 92% for hidden layers, less for the layers that have
    few weights and carry every input or every output (a first convolution 40%, the output layer 75%)."""
    layers = [m for m, _ in pruning.prunable(model)]
    first_conv = isinstance(layers[0], nn.Conv2d)
    return [0.75 if i == len(layers) - 1 else 0.4 if i == 0 and first_conv else 0.92 for i in range(len(layers))]


def dense_bytes(model):
    """float32 bytes of every parameter: the baseline of every compression ratio."""
    return int(sum(p.size for p in model.parameters())) * 4


def prune_and_finetune(model, train_loader, sparsity, rounds=3, epochs_per_round=1, lr=0.01, progress=False):
    """Iterative magnitude pruning (Han et al. 2015): ``rounds`` times, prune every Linear / Conv2d layer a step
    closer to ``sparsity`` (a float, or one per layer) and fine-tune with SGD, the learning rate annealed from
    ``lr`` to 0 within each round (cosine); ``epochs_per_round=0`` prunes without fine-tuning. The masks stay in
    place."""
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"prune_and_finetune(rounds={rounds!r}): expected an integer >= 1")
    if isinstance(epochs_per_round, bool) or not isinstance(epochs_per_round, (int, np.integer)) \
            or epochs_per_round < 0:
        raise ValueError(f"prune_and_finetune(epochs_per_round={epochs_per_round!r}): expected an integer >= 0")
    layers = pruning.prunable(model)
    targets = [sparsity] * len(layers) if np.isscalar(sparsity) else list(sparsity)
    for r in range(1, rounds + 1):
        # equal steps in density (log space): each round keeps the same fraction of what is left
        step = [1 - (1 - s) ** (r / rounds) for s in targets]
        pruning.prune_to_sparsity(layers, step)
        if not epochs_per_round:
            continue
        opt = SGD(model.parameters(), lr=lr, momentum=0.9)
        fit(model, train_loader, epochs_per_round, opt, scheduler=CosineAnnealingLR(opt, epochs_per_round),
            progress=progress, desc=f"Deep Compression: prune round {r}/{rounds}, fine-tune")
    return model


def share_and_finetune(model, train_loader, bits, epochs=1, lr=0.001, progress=False):
    """Make the pruning permanent, cluster each layer's survivors into 2^bits shared values (``bits`` an int or
    a dict by layer type), then fine-tune the codebooks (and biases) with SGD, annealed as above."""
    for module, name in pruning.prunable(model):
        if pruning.is_pruned(module):
            pruning.remove(module, name)
    quantization.share_model_weights(model, bits)
    if epochs:
        opt = SGD(model.parameters(), lr=lr, momentum=0.9)
        fit(model, train_loader, epochs, opt, scheduler=CosineAnnealingLR(opt, epochs), progress=progress,
            desc="Deep Compression: weight sharing, fine-tune codebooks")
    return model


def deep_compression(model, train_loader, test_loader, path, sparsity=None, bits=None, prune_rounds=3,
                     prune_epochs=1, share_epochs=1, lr=0.01, progress=False, overwrite=True):
    """Run every stage on a trained zoo model and return a list of stage reports (dicts with "stage",
    "accuracy", "bytes", "ratio"), ending with the file loaded back from ``path`` and evaluated.

    Defaults: ``default_sparsity(model)``; 8-bit codebooks for convolutions, 5-bit for linear layers (the paper's).
    """
    sparsity = default_sparsity(model) if sparsity is None else sparsity
    bits = {nn.Conv2d: 8, nn.Linear: 5} if bits is None else bits
    baseline = dense_bytes(model)
    stages = []

    def record(stage, m, nbytes, note=""):
        accuracy = evaluate(m, test_loader, progress=False)
        stages.append(dict(stage=stage, accuracy=accuracy, bytes=int(nbytes), ratio=baseline / nbytes, note=note))
        return accuracy

    record("dense float32", model, baseline)
    prune_and_finetune(model, train_loader, sparsity, prune_rounds, prune_epochs, lr, progress)
    record("pruned + fine-tuned", model, pruning.sparse_size(model)[-1]["bytes"],
           f"{_density(model):.1%} of weights left, best sparse format per layer")
    share_and_finetune(model, train_loader, bits, share_epochs, lr / 10, progress)
    record("weight sharing + fine-tuned", model,
           fixed_width_bytes(model), "fixed-width indices and positions, before entropy coding")
    payload, file_bytes = save_compressed(model, path, overwrite=overwrite)
    record("Huffman coded", model, payload, f"file on disk: {file_bytes} bytes")
    loaded = load_compressed(path)
    record("loaded back from file", loaded, payload, str(path))
    return stages


def _density(model):
    kept = total = 0
    for module, name in pruning.prunable(model):
        mask = pruning.mask_of(module, name)
        kept, total = kept + int(mask.sum()), total + mask.size
    return kept / total


def fixed_width_bytes(model, max_gap_bits=8):
    """Bytes with fixed-width codes instead of Huffman: per layer, ceil(log2(k + 1))-bit cluster symbols and
    g-bit gaps for each stored entry (the best g from 1 to ``max_gap_bits`` for fixed widths), plus the float32
    codebook; every other parameter float32. The fair baseline for what Huffman coding adds."""
    total = sum(v.nbytes for k, v in model.state_dict().items()
                if not (k.endswith(".weight_codebook") or k.endswith(".weight_indices")))
    for module in _shared_layers(model).values():
        k = len(module.weight_codebook.data)
        positions = np.flatnonzero(module.weight_indices.data.ravel() >= 0)
        cluster_bits = math.ceil(math.log2(k + 1))
        bits = min(len(relative_positions(positions, g)[0]) * (g + cluster_bits) for g in range(1, max_gap_bits + 1))
        total += math.ceil(bits / 8) + 4 * k
    return total
