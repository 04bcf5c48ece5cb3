"""Lab 1, pruning: the checks of tutorials/labs/01_pruning_lab.ipynb (the library's answers: minicompress.pruning).

1.1 importance I(w) = |w|          1.4 an L2 filter mask (structured, dim 0)
1.2 the unstructured mask          1.5 the cubic AGP schedule of Zhu & Gupta
1.3 one global threshold           1.6 the bytes of a CSR matrix
"""

import math

import numpy as np

from .. import nn, pruning
from .checking import Check, Lab, Mistake, each, same

LAB = Lab(1, "Pruning: which weights to remove, how many, and what it saves")
_rng = np.random.default_rng(1)
_W6 = np.array([0.9, -0.05, 0.3, -1.2, 0.01, 0.4], dtype=np.float32)  # the tutorial's six numbers


def _random(*shape):
    return _rng.standard_normal(shape).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# 1. Importance and the unstructured mask
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("importance")
def check_importance():
    return Check(
        reference=pruning.importance, names=("w",),
        cases=[(_W6,), (_random(3, 4),), (np.zeros(4, np.float32),), (np.array([-0.0, 2.0, -2.0], np.float32),)],
        hint="I(w) = |w|, the magnitude of each weight, same shape as w",
        mistakes=[Mistake(lambda w: w, "I(w) = |w|: a weight of -1.2 matters more than one of 0.3, so take the "
                                       "absolute value"),
                  Mistake(lambda w: w ** 2, "the course's importance is the magnitude |w|, not w^2 (same ranking, "
                                            "other values)")])


def _count(amount, n):
    return round(amount * n) if isinstance(amount, float) else amount


@LAB.exercise("unstructured_mask")
def check_unstructured_mask():
    def reference(w, amount):
        return pruning.unstructured_mask(pruning.importance(w), amount)

    def by_value(w, amount):
        return pruning.unstructured_mask(w, amount)

    def truncated(w, amount):
        return pruning.unstructured_mask(np.abs(w), int(amount * w.size))

    def half_up(w, amount):
        return pruning.unstructured_mask(np.abs(w), math.floor(amount * w.size + 0.5))

    def threshold(w, amount):
        k = round(amount * w.size)
        return np.ones(w.shape) if k == 0 else (np.abs(w) > np.sort(np.abs(w).ravel())[k - 1]).astype(float)

    return Check(
        reference=reference, names=("w", "amount"),
        cases=[(_W6, 0.5), (_W6, 0.25), (np.arange(1, 11, dtype=np.float32), 0.25),
               (np.arange(1, 11, dtype=np.float32), 0.35), (_W6, 0.0), (_W6, 1.0),
               (np.array([0.5, -0.5, 0.5, 0.5], np.float32), 0.5), (_random(3, 4), 0.3), (_random(2, 5), 0.7)],
        hint="prune the round(amount * n) entries with the smallest |w| (Python's round, half to even); "
             "ties: lowest flat index first; the mask has w's shape, 1 = kept, 0 = pruned",
        mistakes=[
            Mistake(by_value, "rank by I(w) = |w|, not by w: a large negative weight is important"),
            Mistake(truncated, lambda w, a: f"the count is round(amount * n), not int(amount * n) which truncates: "
                                            f"{a} * {w.size} = {a * w.size:g} rounds to {_count(a, w.size)}"),
            Mistake(half_up, lambda w, a: f"Python's round (and PyTorch) rounds half to even: {a} * {w.size} = "
                                          f"{a * w.size:g} rounds to {_count(a, w.size)}, not up"),
            Mistake(threshold, "prune exactly round(amount * n) entries: with ties at the threshold, |w| <= t prunes "
                               "too many; sort (stable) and prune the first k, lowest index first")])


@LAB.exercise("global_masks")
def check_global_masks():
    class Holder(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.weight = nn.Parameter(w)

    def reference(weights, amount):
        holders = [Holder(np.array(w)) for w in weights]
        pruning.global_unstructured([(h, "weight") for h in holders], amount)
        return [pruning.mask_of(h, "weight") for h in holders]

    def per_layer(weights, amount):
        return [pruning.unstructured_mask(np.abs(w), amount) for w in weights]

    def by_value(weights, amount):
        flat = pruning.unstructured_mask(np.concatenate([w.ravel() for w in weights]), amount)
        return np.split(flat, np.cumsum([w.size for w in weights])[:-1])

    layers = [np.array([[0.9, -0.05], [0.3, -1.2]], np.float32), np.array([0.01, 0.4, -0.6], np.float32)]
    lists = each(same(exact=True))
    return Check(
        reference=reference, names=("weights", "amount"), compare=lambda e, o: _masks(e, o, lists),
        cases=[(layers, 0.5), (layers, 0.0), (layers, 1.0), ([_random(2, 3), _random(4), _random(3, 3)], 0.6),
               ([np.array([1.0, 2.0], np.float32), np.array([0.1, 0.2, 0.3, 5.0], np.float32)], 0.5)],
        hint="one threshold for all layers: rank the |w| of every layer together and prune the round(amount * N) "
             "smallest (N = total number of weights); return one mask per layer, each of its layer's shape",
        mistakes=[Mistake(per_layer, "that is round(amount * n) per layer; global pruning ranks all layers "
                                     "together with one threshold, so some layers lose more than others"),
                  Mistake(by_value, "rank by I(w) = |w|, not by w")])


def _masks(expected, obtained, lists):
    if isinstance(obtained, np.ndarray):
        return "return a list with one mask per layer, not one array"
    if isinstance(obtained, (tuple, list)) and len(obtained) == len(expected):
        obtained = [np.asarray(m).reshape(np.shape(m)) for m in obtained]
    return lists(expected, obtained)


# --------------------------------------------------------------------------------------------------------------------
# 2. Structured pruning: whole filters
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("l2_filter_mask")
def check_l2_filter_mask():
    def reference(w, amount):
        return pruning.structured_mask(w, amount, 2, 0)

    def l1(w, amount):
        return pruning.structured_mask(w, amount, 1, 0)

    def channels(w, amount):
        return pruning.structured_mask(w, amount, 2, 1)

    def per_weight(w, amount):
        return pruning.unstructured_mask(np.abs(w), amount)

    same_filters = np.ones((3, 2), np.float32)
    return Check(
        reference=reference, names=("w", "amount"), compare=same(exact=True),
        cases=[(np.array([[3, 0], [2, 2], [1, 1]], np.float32), 0.6),
               (np.array([[3, 0], [2, 2], [1, 1]], np.float32), 0.3), (_random(4, 2, 3, 3), 0.5),
               (_random(5, 3), 0.3), (_random(4, 2, 2, 2), 0.0), (_random(4, 2, 2, 2), 1.0), (same_filters, 0.5)],
        hint="norm of filter i = sqrt(sum of w[i]^2) over all axes but 0; zero the whole filters with the "
             "round(amount * out_channels) smallest norms (ties: lowest index first); mask of w's shape",
        mistakes=[Mistake(l1, "rank the filters by their L2 norm sqrt(sum w^2); that was the L1 norm sum |w|"),
                  Mistake(channels, "a filter is a slice along dim 0 (out_channels): take the norm over every "
                                    "other axis and zero w[i] entirely"),
                  Mistake(per_weight, "structured pruning removes whole filters: the mask is constant along "
                                      "each w[i], not chosen weight by weight")])


# --------------------------------------------------------------------------------------------------------------------
# 3. When to prune: the cubic schedule
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("agp_sparsity")
def check_agp_sparsity():
    def linear(t, s_f, s_i, t0, n, dt):
        p = min(max((t - t0) / (n * dt), 0.0), 1.0)
        return s_f + (s_i - s_f) * (1 - p)

    def unclamped(t, s_f, s_i, t0, n, dt):
        return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3

    def without_dt(t, s_f, s_i, t0, n, dt):
        p = min(max((t - t0) / n, 0.0), 1.0)
        return s_f + (s_i - s_f) * (1 - p) ** 3

    return Check(
        reference=pruning.agp_sparsity, names=("t", "s_f", "s_i", "t0", "n", "dt"),
        cases=[(0, 0.9, 0.0, 0, 10, 1), (5, 0.9, 0.0, 0, 10, 1), (10, 0.9, 0.0, 0, 10, 1),
               (15, 0.9, 0.0, 0, 10, 1), (2, 0.8, 0.1, 4, 5, 2), (300, 0.95, 0.0, 100, 10, 100),
               (2000, 0.95, 0.0, 100, 10, 100), (7, 0.5, 0.5, 0, 10, 1)],
        hint="s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3, with the progress (t - t0) / (n * dt) "
             "clipped to [0, 1] (s_i before t0, s_f after t0 + n * dt)",
        mistakes=[Mistake(linear, "the schedule is cubic: (1 - progress)^3 prunes fast early, slowly at the end"),
                  Mistake(unclamped, "after t0 + n * dt the sparsity stays s_f (and before t0 it is s_i): clip "
                                     "the progress to [0, 1]"),
                  Mistake(without_dt, "progress = (t - t0) / (n * dt): pruning happens every dt steps")])


# --------------------------------------------------------------------------------------------------------------------
# 4. What it saves: a CSR matrix in bytes
# --------------------------------------------------------------------------------------------------------------------


def _uint_bytes(largest):
    return next(b for b in (1, 2, 4, 8) if largest < 256 ** b)


@LAB.exercise("csr_bytes")
def check_csr_bytes():
    def reference(w):
        return pruning.payload_bytes(pruning.sparse_candidates(w)["csr"])

    def int32_indices(w):
        nnz = np.count_nonzero(w)
        return nnz * w.itemsize + 4 * nnz + 4 * (w.shape[0] + 1)

    def rows_only(w):
        nnz, cols = np.count_nonzero(w), w.reshape(w.shape[0], -1).shape[1]
        return nnz * w.itemsize + nnz * _uint_bytes(cols - 1) + w.shape[0] * _uint_bytes(nnz)

    def every_entry(w):
        cols = w.reshape(w.shape[0], -1).shape[1]
        return w.size * (w.itemsize + _uint_bytes(cols - 1)) + (w.shape[0] + 1) * _uint_bytes(w.size)

    tutorial = np.array([[0, 0.5, 0, 0], [0, 0, 0, 0], [1.2, 0, 0, -0.3], [0, 0, 0.8, 0]], np.float32)
    sparse = _random(50, 40) * (_rng.random((50, 40)) < 0.1)
    half = _random(30, 30) * (_rng.random((30, 30)) < 0.5)
    wide = np.zeros((2, 300), np.float32)
    wide[0, 299], wide[1, 3] = 1.0, -2.0
    return Check(
        reference=reference, names=("w",), compare=same(exact=True),
        cases=[(tutorial,), (np.zeros((3, 4), np.float32),), (wide,), (sparse.astype(np.float32),),
               (half.astype(np.float32),)],
        hint="bytes = nnz * 4 (float32 values) + nnz * (bytes of a column index) + (rows + 1) * (bytes of a "
             "row pointer); an index takes the smallest unsigned type that holds its largest value (uint8 up to "
             "255, uint16 up to 65535, then uint32): cols - 1 for column indices, nnz for row pointers",
        mistakes=[Mistake(int32_indices, "minicompress stores indices in the smallest unsigned type that holds "
                                         "them (uint8 up to 255, uint16 up to 65535), not always int32"),
                  Mistake(rows_only, "row_ptr has rows + 1 entries: row i's entries are "
                                     "values[row_ptr[i]:row_ptr[i + 1]]"),
                  Mistake(every_entry, "CSR stores only the nonzero entries (nnz values and nnz column indices)")])
