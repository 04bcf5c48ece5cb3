"""Lab 5, the Deep Compression pipeline: the checks of tutorials/labs/05_pipeline_lab.ipynb (answers:
minicompress.quantization's weight sharing, minicompress.huffman and minicompress.pipeline).

5.1 1-D k-means with linear initialisation     5.4 the entropy bound n * H
5.2 Huffman code lengths                       5.5 the storage ratio r = n b / (n log2 k + k b)
5.3 relative positions with filler entries
"""

import math

import numpy as np

from .. import huffman, pipeline
from .. import quantization as Q
from .checking import Check, Lab, Mistake, each, same

LAB = Lab(5, "Deep Compression: k-means, Huffman codes, relative positions, the ratio")
_rng = np.random.default_rng(5)


# --------------------------------------------------------------------------------------------------------------------
# 1. Weight sharing
# --------------------------------------------------------------------------------------------------------------------


def _lloyd(w, codebook, iters=100):
    flat, idx = w.ravel().astype(np.float64), None
    for _ in range(iters):
        new = np.abs(flat[:, None] - codebook[None, :]).argmin(axis=1)
        if idx is not None and np.array_equal(new, idx):
            break
        idx = new
        for j in range(len(codebook)):
            if (idx == j).any():
                codebook[j] = flat[idx == j].mean()
    return codebook.astype(np.float32), idx.reshape(w.shape)


@LAB.exercise("kmeans_1d")
def check_kmeans_1d():
    def quantile_init(w, k):
        return _lloyd(w, np.quantile(w.ravel().astype(np.float64), np.linspace(0, 1, k)))

    def one_step(w, k):
        return _lloyd(w, np.linspace(w.min(), w.max(), k).astype(np.float64), iters=1)

    tutorial = np.array([-1.0, -0.9, 0.1, 0.2, 0.95, 1.0], np.float32)
    skewed = np.concatenate([_rng.normal(0, 0.05, 40), _rng.normal(0.8, 0.05, 4)]).astype(np.float32)
    return Check(
        reference=Q.kmeans_1d, names=("w", "k"),
        compare=each(same(rtol=1e-5, atol=1e-7), same(exact=True), names=("codebook", "indices")),
        cases=[(tutorial, 3), (skewed, 4), (_rng.standard_normal((5, 6)).astype(np.float32), 4),
               (np.full(5, 0.3, np.float32), 3), (tutorial, 1)],
        hint="start from c_j = min + j (max - min) / (k - 1) (np.linspace(min, max, k)); repeat: assign each w "
             "to its nearest centroid, move each centroid to the mean of its members (an empty cluster keeps "
             "its centroid), until no assignment changes; indices have w's shape",
        mistakes=[Mistake(quantile_init, "initialise linearly between min and max, not at quantiles: Han et al. "
                                         "found linear keeps the rare large weights, which matter most"),
                  Mistake(one_step, "repeat assign / update until no assignment changes, not once")])


# --------------------------------------------------------------------------------------------------------------------
# 2. Huffman coding
# --------------------------------------------------------------------------------------------------------------------


def _valid_lengths(expected, obtained):
    """Any optimal prefix code is right: zero for absent symbols, Kraft sum <= 1, the fewest total bits."""
    lengths, counts = expected
    if obtained is None:
        return "your function returned None: is a `return` missing?"
    o = np.asarray(obtained)
    if o.shape != lengths.shape:
        return f"shape {o.shape} instead of {lengths.shape}: one length per symbol of the alphabet"
    if np.any((o > 0) & (counts == 0)):
        return "symbols that never occur get length 0 (no code)"
    if np.any((o <= 0) & (counts > 0)):
        lone = (counts > 0).sum() == 1
        return ("a lone symbol still needs 1 bit per occurrence" if lone else
                "every symbol that occurs needs a code of length >= 1")
    kraft = float((2.0 ** -o[counts > 0].astype(np.float64)).sum())
    if kraft > 1 + 1e-12:
        return f"sum of 2^-length is {kraft:g} > 1: no prefix code has these lengths"
    need, got = int((counts * lengths).sum()), int((counts * o).sum())
    if got != need:
        return (f"your code spends {got} bits, Huffman's {need}: merge the two least frequent subtrees "
                f"repeatedly (-log2 p rounded up is Shannon's code, not optimal)")
    return None


class _Lengths(tuple):
    def __repr__(self):
        return f"{self[0].tolist()} (or other lengths with the same total)"


@LAB.exercise("huffman_lengths")
def check_huffman_lengths():
    def reference(symbols, alphabet_size):
        counts = np.bincount(np.asarray(symbols), minlength=alphabet_size)
        return _Lengths((huffman.code_lengths(symbols, alphabet_size).astype(np.int64), counts))

    tutorial = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    return Check(
        reference=reference, names=("symbols", "alphabet_size"), compare=_valid_lengths,
        cases=[(tutorial, 4), (np.array([0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]), 5), (np.array([2, 2, 2]), 4),
               (_rng.integers(0, 8, 60) * (_rng.random(60) < 0.6), 8), (np.repeat(np.arange(6), [40, 20, 10, 5, 3, 2]), 6)],
        hint="count each symbol; repeatedly merge the two least frequent subtrees (heapq); every merge adds one bit "
             "to each symbol below it; absent symbols get 0, a lone symbol 1",
        summary="any optimal code is accepted")


# --------------------------------------------------------------------------------------------------------------------
# 3. Relative positions and the bound they are measured against
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("relative_positions")
def check_relative_positions():
    def gaps_stored_raw(positions, gap_bits):
        s, f = pipeline.relative_positions(positions, gap_bits)
        return np.where(f, s, s + 1), f

    def filler_at_G(positions, gap_bits):
        G = 2 ** gap_bits
        symbols, filler = [], []
        for g in np.diff(np.concatenate([[-1], positions])):
            while g >= G:
                symbols.append(G - 1)
                filler.append(True)
                g -= G
            symbols.append(g - 1)
            filler.append(False)
        return np.array(symbols, np.int64), np.array(filler, bool)

    def from_zero(positions, gap_bits):
        return pipeline.relative_positions(np.asarray(positions) - 1, gap_bits) if len(positions) else \
            pipeline.relative_positions(positions, gap_bits)

    return Check(
        reference=pipeline.relative_positions, names=("positions", "gap_bits"),
        compare=each(same(exact=True), names=("gap symbols", "is_filler")),
        cases=[(np.array([1, 4, 5, 30]), 3), (np.array([0, 8, 17]), 3), (np.array([0, 1, 2]), 1),
               (np.array([100]), 2), (np.array([], np.int64), 3), (np.sort(_rng.choice(200, 12, replace=False)), 4)],
        hint="gap g_i = p_i - p_(i-1) with p_(-1) = -1, stored as g - 1 in [0, G) with G = 2^gap_bits; while "
             "g > G, emit a filler (symbol G - 1, is_filler True) and take G off g",
        mistakes=[Mistake(gaps_stored_raw, "store g - 1, so that gaps 1..G fit in gap_bits bits (0..G-1)"),
                  Mistake(filler_at_G, "a gap of exactly G = 2^gap_bits still fits (as G - 1): fillers only while "
                                       "g > G"),
                  Mistake(from_zero, "the first gap counts from p_(-1) = -1: position p_0 is gap p_0 + 1")])


def _per_symbol(symbols, alphabet_size):
    counts = np.bincount(symbols, minlength=alphabet_size)
    p = counts[counts > 0] / len(symbols)
    return float(-(p * np.log2(p)).sum())


@LAB.exercise("entropy_bits")
def check_entropy_bits():
    return Check(
        reference=huffman.entropy_bits, names=("symbols", "alphabet_size"), compare=same(rtol=1e-9, atol=1e-9),
        cases=[(np.array([0, 0, 0, 0, 1, 1, 2, 3]), 4), (np.array([3, 3, 3]), 5), (_rng.integers(0, 6, 50), 6)],
        hint="n * H with H = -sum_s p(s) log2 p(s) over the symbols that occur, p(s) = count(s) / n",
        mistakes=[Mistake(_per_symbol, "the bound for the whole stream is n * H bits (H is per symbol)"),
                  Mistake(lambda s, a: len(s) * math.log2(a), "that is the fixed-width cost n log2(alphabet); "
                                                              "the entropy uses the symbol frequencies")])


# --------------------------------------------------------------------------------------------------------------------
# 4. What it all buys
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("storage_ratio")
def check_storage_ratio():
    return Check(
        reference=Q.storage_ratio, names=("n", "k", "b"), compare=same(rtol=1e-9),
        cases=[(1000, 32, 32), (266200, 64, 32), (10, 256, 32), (5000, 2, 16), (100, 5, 32)],
        hint="r = n b / (n log2(k) + k b): n weights of b bits, against n indices of log2(k) bits plus a codebook "
             "of k values of b bits",
        mistakes=[Mistake(lambda n, k, b: n * b / (n * math.log2(k)), "add the codebook: k shared values of b bits "
                                                                      "each (it dominates for small n)"),
                  Mistake(lambda n, k, b: n * b / (n * math.log(k) + k * b), "an index takes log2(k) bits "
                                                                             "(base 2), not ln(k)"),
                  Mistake(lambda n, k, b: n * b / (n * math.ceil(math.log2(k)) + k * b),
                          "Deep Compression's formula uses log2(k) itself, not rounded up to whole bits")])
