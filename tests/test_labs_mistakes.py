"""The mistake catalogue: for every lab exercise, plausible wrong solutions a student writes, each of which the
check must report as failed with the hint for that very mistake (not a generic one)."""
import math

import numpy as np
import pytest

import minicompress as mc
from minicompress.labs import LABS, lab_module


def _mask_from_count(w, k, key=np.abs):
    order = np.argsort(key(w).ravel(), kind="stable")
    mask = np.ones(w.size)
    mask[order[:k]] = 0
    return mask.reshape(w.shape)


def _stable_softmax(z, T=1.0):
    e = np.exp(z / T - (z / T).max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kl(p, q):
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0.0).sum() / len(p)


def _ce(z, y):
    return -np.log(_stable_softmax(z)[np.arange(len(y)), y]).mean()


def _function(forward, backward):
    return type("StudentFunction", (mc.Function,), {"forward": staticmethod(forward),
                                                    "backward": staticmethod(backward)})


def _save_inputs(ctx, a, b):
    ctx.a, ctx.b = a, b
    return a * b


def _save_input(ctx, a):
    ctx.a = a
    return np.exp(a)


def _dfs(root, seen_check=True, reverse=False, constants=False):
    order, seen = [], set()

    def visit(node):
        if seen_check and id(node) in seen:
            return
        seen.add(id(node))
        for parent in node._inputs:
            if isinstance(parent, mc.Tensor) and (constants or parent.requires_grad):
                visit(parent)
        order.append(node)

    visit(root)
    return order[::-1] if reverse else order


def _affine(lo, hi, qmin, qmax, widen=True, sign=-1, eps=True):
    if widen:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    S = (hi - lo) / (qmax - qmin)
    if eps:
        S = max(S, np.finfo(np.float32).eps)
    return S, int(np.clip(qmin + sign * round(lo / S), qmin, qmax)) if eps else qmin + sign * round(lo / S)


def _int_linear(q_x, Z_x, q_w, q_b, M0, n, Z_y, qmin, qmax, zx=True, wide=True, rounding=True):
    x = (q_x.astype(np.int64) - (Z_x if zx else 0)) if wide else (q_x - np.uint8(Z_x)).astype(np.int64)
    acc = x @ q_w.astype(np.int64).T + q_b
    s = 31 + n
    return np.clip(Z_y + ((acc * M0 + ((1 << (s - 1)) if rounding else 0)) >> s), qmin, qmax)


def _huffman_shannon(symbols, alphabet_size):
    counts = np.bincount(symbols, minlength=alphabet_size)
    lengths = np.zeros(alphabet_size, dtype=int)
    present = counts > 0
    lengths[present] = np.ceil(-np.log2(counts[present] / len(symbols)))
    return lengths


def _huffman(symbols, alphabet_size, lone=1, absent=0):
    import heapq
    counts = np.bincount(symbols, minlength=alphabet_size)
    lengths = np.full(alphabet_size, absent)
    present = np.flatnonzero(counts)
    if len(present) == 1:
        lengths[present] = lone
        return lengths
    lengths[present] = 0
    heap = [(counts[s], i, [s]) for i, s in enumerate(present)]
    heapq.heapify(heap)
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        lengths[a[2] + b[2]] += 1
        heapq.heappush(heap, (a[0] + b[0], min(a[1], b[1]), a[2] + b[2]))
    return lengths


def _gaps(positions, gap_bits, store_raw=False, filler_at=None, start=-1):
    G = 2 ** gap_bits
    symbols, filler, previous = [], [], start
    for p in positions:
        g, previous = p - previous, p
        while (g >= G) if filler_at == "G" else (g > G):
            symbols.append(G - 1)
            filler.append(True)
            g -= G
        symbols.append(g if store_raw else g - 1)
        filler.append(False)
    return np.array(symbols, dtype=np.int64), np.array(filler, dtype=bool)


def _kmeans(w, k, init="linear", iterations=None):
    flat = w.ravel().astype(np.float64)
    c = np.linspace(flat.min(), flat.max(), k) if init == "linear" else np.quantile(flat, np.linspace(0, 1, k))
    idx, steps = None, 0
    while iterations is None or steps < iterations:
        new = np.abs(flat[:, None] - c[None, :]).argmin(axis=1)
        if idx is not None and np.array_equal(new, idx):
            break
        idx, steps = new, steps + 1
        for j in range(k):
            if (idx == j).any():
                c[j] = flat[idx == j].mean()
    return c.astype(np.float32), idx.reshape(w.shape)


# lab -> exercise -> [(plausible wrong solution, words the hint must contain)]
WRONG = {
    "autograd": {
        "mul_function": [
            (_function(_save_inputs, lambda ctx, g: (g * ctx.a, g * ctx.b)), "times the *other* input"),
            (_function(_save_inputs, lambda ctx, g: (ctx.b, ctx.a)), "multiply by the upstream gradient"),
        ],
        "exp_function": [
            (_function(_save_input, lambda ctx, g: (g * ctx.a,)), "not by the input a"),
            (_function(_save_input, lambda ctx, g: (np.exp(ctx.a),)), "multiply exp(a) by the upstream"),
        ],
        "unbroadcast": [
            (lambda g, shape: g.sum(axis=tuple(range(g.ndim - len(shape)))), "size 1 (broadcast from 1 to n)"),
            (lambda g, shape: np.squeeze(g.sum(axis=tuple(range(g.ndim - len(shape))), keepdims=False)
                                         .sum(axis=tuple(i for i, n in enumerate(shape) if n == 1),
                                              keepdims=False)) if any(n == 1 for n in shape) else
             g.sum(axis=tuple(range(g.ndim - len(shape)))), "keepdims=True"),
        ],
        "topological_order": [
            (lambda root: _dfs(root, seen_check=False), "remember the visited nodes"),
            (lambda root: _dfs(root, reverse=True), "must come after all of its inputs"),
            (lambda root: _dfs(root, constants=True), "skip inputs that are constants"),
        ],
        "cross_entropy_grad": [
            (lambda z, y: _stable_softmax(z) - np.eye(z.shape[1])[y], "divide the gradient by N"),
            (lambda z, y: _stable_softmax(z) / len(y), "subtract the one-hot target"),
            (lambda z, y: (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) - np.eye(z.shape[1])[y]) / len(y),
             "subtract each row's max"),
        ],
    },
    "pruning": {
        "importance": [(lambda w: w.copy(), "absolute value"), (lambda w: w * w, "not w^2")],
        "unstructured_mask": [
            (lambda w, a: _mask_from_count(w, round(a * w.size), key=lambda x: x), "not by w"),
            (lambda w, a: _mask_from_count(w, int(a * w.size)), "not int(amount * n)"),
            (lambda w, a: _mask_from_count(w, int(a * w.size + 0.5)), "rounds half to even"),
            (lambda w, a: (np.abs(w) > np.sort(np.abs(w).ravel())[round(a * w.size) - 1]).astype(float)
             if round(a * w.size) else np.ones(w.shape), "ties at the threshold"),
        ],
        "global_masks": [
            (lambda ws, a: [_mask_from_count(w, round(a * w.size)) for w in ws], "one threshold"),
            (lambda ws, a: np.split(_mask_from_count(np.concatenate([w.ravel() for w in ws]),
                                                     round(a * sum(w.size for w in ws)), key=lambda x: x),
                                    np.cumsum([w.size for w in ws])[:-1]), "not by w"),
        ],
        "l2_filter_mask": [
            (lambda w, a: np.broadcast_to(_mask_from_count(np.abs(w).reshape(len(w), -1).sum(axis=1),
                                                           round(a * len(w))).reshape(-1, *[1] * (w.ndim - 1)),
                                          w.shape), "L1 norm"),
            (lambda w, a: _mask_from_count(w, round(a * w.size)), "not chosen weight by weight"),
            (lambda w, a: np.broadcast_to(
                _mask_from_count(np.sqrt((np.moveaxis(w, 1, 0) ** 2).reshape(w.shape[1], -1).sum(axis=1)),
                                 round(a * w.shape[1])).reshape(1, -1, *[1] * (w.ndim - 2)), w.shape),
             "slice along dim 0"),
        ],
        "agp_sparsity": [
            (lambda t, s_f, s_i, t0, n, dt: s_f + (s_i - s_f) * (1 - min(max((t - t0) / (n * dt), 0), 1)),
             "cubic"),
            (lambda t, s_f, s_i, t0, n, dt: s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3, "clip"),
            (lambda t, s_f, s_i, t0, n, dt: s_f + (s_i - s_f) * (1 - min(max((t - t0) / n, 0), 1)) ** 3,
             "every dt steps"),
        ],
        "csr_bytes": [
            (lambda w: np.count_nonzero(w) * 8 + 4 * (len(w) + 1), "smallest unsigned type"),
            (lambda w: np.count_nonzero(w) * 5 + len(w) * 1, "rows + 1 entries"),
        ],
    },
    "quantization": {
        "quantize_course": [
            (lambda w, s: (w * s).astype(int), "always goes down"),
            (lambda w, s: np.floor(w * s + 0.5), "rounds half up"),
        ],
        "affine_qparams": [
            (lambda lo, hi, qmin, qmax: _affine(lo, hi, qmin, qmax, widen=False), "include 0"),
            (lambda lo, hi, qmin, qmax: _affine(lo, hi, qmin, qmax, sign=+1), "sign of round(min' / S)"),
            (lambda lo, hi, qmin, qmax: _affine(lo, hi, qmin, qmax, eps=False), "S = max(..., eps)"),
        ],
        "symmetric_scale": [
            (lambda lo, hi, bits: max(hi / ((2 ** bits - 1) / 2), np.finfo(np.float32).eps), "max(-min', max')"),
            (lambda lo, hi, bits: max(max(abs(lo), abs(hi)) / (2 ** (bits - 1) - 1), np.finfo(np.float32).eps),
             "narrow range"),
        ],
        "quantize": [
            (lambda x, S, Z, qmin, qmax: np.round(x / S) + Z, "clamp to [qmin, qmax]"),
            (lambda x, S, Z, qmin, qmax: np.clip(np.round(x / S) - Z, qmin, qmax), "add Z"),
            (lambda x, S, Z, qmin, qmax: np.clip(np.floor(x / S + 0.5) + Z, qmin, qmax), "round half to even"),
        ],
        "dequantize": [
            (lambda q, S, Z: S * (q - Z), "wraps around"),
            (lambda q, S, Z: q * S - Z, "subtract the zero point before scaling"),
        ],
        "per_channel_scales": [
            (lambda w: np.full(len(w), np.abs(w).max() / 127.5), "one scale per output channel"),
            (lambda w: np.abs(w).max(axis=0) / 127.5, "reduce over axes 1, 2"),
        ],
        "ste_mask": [
            (lambda x, S, Z, qmin, qmax: np.ones_like(x, dtype=bool), "passing it everywhere"),
            (lambda x, S, Z, qmin, qmax: (np.round(x / S) + Z > qmin) & (np.round(x / S) + Z < qmax),
             "inclusive"),
            (lambda x, S, Z, qmin, qmax: (x >= (qmin - Z) * S) & (x <= (qmax - Z) * S), "rounded code"),
        ],
        "quantize_multiplier": [
            (lambda M: (int(math.frexp(M)[0] * 2 ** 31), -math.frexp(M)[1]), "truncating"),
            (lambda M: (round(M / 2 ** math.floor(math.log2(M)) * 2 ** 31), -math.floor(math.log2(M))),
             "[0.5, 1)"),
            (lambda M: (round(math.frexp(M)[0] * 2 ** 31), -math.frexp(M)[1]), "does not fit in int32"),
        ],
        "integer_linear": [
            (lambda *a: _int_linear(*a, zx=False), "subtract the input zero point"),
            (lambda *a: _int_linear(*a, wide=False), "wraps around"),
            (lambda *a: _int_linear(*a, rounding=False), "add 2^(s-1) before the right shift"),
        ],
    },
    "distillation": {
        "softmax_T": [
            (lambda z, T: np.exp(z / T) / np.exp(z / T).sum(axis=-1, keepdims=True), "subtract the max"),
            (lambda z, T: _stable_softmax(z), "divide the logits by the temperature"),
            (lambda z, T: _stable_softmax(z * T), "do not multiply"),
        ],
        "kl_divergence": [
            (lambda p, q: _kl(q, p), "the teacher's p"),
            (lambda p, q: _kl(p, q) * len(p), "batchmean"),
            (lambda p, q: (p * np.log(p / q)).sum() / len(p), "0 * log 0"),
        ],
        "cross_entropy": [
            (lambda z, y: -np.log((np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))[np.arange(len(y)), y]).mean(),
             "log-sum-exp"),
            (lambda z, y: -np.log(_stable_softmax(z)[np.arange(len(y)), y]).sum(), "do not sum"),
        ],
        "kd_loss": [
            (lambda zs, zt, y, T, a: a * _kl(_stable_softmax(zt, T), _stable_softmax(zs, T)) + (1 - a) * _ce(zs, y),
             "T^2"),
            (lambda zs, zt, y, T, a: a * T * T * _kl(_stable_softmax(zs, T), _stable_softmax(zt, T))
             + (1 - a) * _ce(zs, y), "teacher's distribution comes first"),
            (lambda zs, zt, y, T, a: (1 - a) * T * T * _kl(_stable_softmax(zt, T), _stable_softmax(zs, T))
             + a * _ce(zs, y), "alpha weights the soft"),
        ],
        "soft_gradient": [
            (lambda zs, zt, T: _stable_softmax(zs, T) - _stable_softmax(zt, T), "factor 1/T"),
            (lambda zs, zt, T: (_stable_softmax(zt, T) - _stable_softmax(zs, T)) / T, "student minus teacher"),
        ],
    },
    "binary": {
        "sign": [(np.sign, "sign(0) = +1"), (lambda x: np.where(x > 0, 1.0, -1.0).astype(x.dtype), "0 maps to +1")],
        "ste_backward": [
            (lambda x, g: g.copy(), "cuts the gradient where |x| > 1"),
            (lambda x, g: np.where(np.abs(x) < 1, g, 0), "with <="),
        ],
        "xnor_alpha": [
            (lambda W: W.reshape(len(W), -1).mean(axis=1), "take absolute values"),
            (lambda W: np.abs(W).mean() * np.ones(len(W)), "not one per tensor"),
        ],
        "pack_signs": [
            (lambda v: np.packbits(v.astype(bool), axis=-1), "-1 is nonzero"),
            (lambda v: np.packbits(v == 1, axis=-1, bitorder="little"), "most significant bit"),
        ],
        "xnor_dot": [
            (lambda a, b, n: n - int(np.bitwise_count(a ^ b).sum()), "n - 2 * popcount"),
            (lambda a, b, n: 2 * int(np.bitwise_count(~(a ^ b)).sum()) - 8 * len(a), "padding bits"),
        ],
    },
    "pipeline": {
        "kmeans_1d": [
            (lambda w, k: _kmeans(w, k, init="quantile"), "initialise linearly"),
            (lambda w, k: _kmeans(w, k, iterations=1), "not once"),
        ],
        "huffman_lengths": [
            (_huffman_shannon, "merge the two least frequent"),
            (lambda s, a: _huffman(s, a, lone=0), "lone symbol"),
            (lambda s, a: _huffman(s, a, absent=1), "never occur get length 0"),
        ],
        "relative_positions": [
            (lambda p, b: _gaps(p, b, store_raw=True), "store g - 1"),
            (lambda p, b: _gaps(p, b, filler_at="G"), "exactly G"),
            (lambda p, b: _gaps(p, b, start=0), "p_(-1) = -1"),
        ],
        "entropy_bits": [
            (lambda s, a: float(-(lambda p: (p * np.log2(p)).sum())(np.bincount(s)[np.bincount(s) > 0] / len(s))),
             "n * H"),
            (lambda s, a: len(s) * math.log2(a), "fixed-width"),
        ],
        "storage_ratio": [
            (lambda n, k, b: n * b / (n * math.log2(k)), "add the codebook"),
            (lambda n, k, b: n * b / (n * math.log(k) + k * b), "base 2"),
        ],
    },
}

CASES = [(lab, name, wrong, hint) for lab, exercises in WRONG.items() for name, mistakes in exercises.items()
         for wrong, hint in mistakes]


def test_catalogue_covers_every_exercise_twice():
    for lab in LABS.values():
        exercises = lab_module(lab).LAB.exercises
        assert set(WRONG[lab]) == set(exercises), lab
        assert all(len(WRONG[lab][name]) >= 2 for name in exercises), lab


@pytest.mark.parametrize("lab, name, wrong, hint", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_each_mistake_gets_its_own_hint(lab, name, wrong, hint, capsys):
    getattr(lab_module(lab), f"check_{name}")(wrong)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[failed] {lab_module(lab).LAB.exercises[name]} {name}: "), line
    assert "\n" not in line
    # the hint follows "Hint:", or is the reason given after the obtained value where the check reasons about the
    # answer itself (a topological order, Huffman lengths: any valid answer passes, so no single one is wrong)
    message = line.split(", got ", 1)[-1] if ", got " in line else line.split("your code raised", 1)[1]
    assert hint in message, line
