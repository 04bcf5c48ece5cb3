"""Lab 4, binary networks: the checks of tutorials/labs/04_binary_lab.ipynb (answers: minicompress.binary).

4.1 sign with sign(0) = +1           4.4 packing +-1 values into bits
4.2 the clipped STE backward          4.5 a . b = n - 2 popcount(a XOR b) on packed bits
4.3 XNOR-Net's alpha
"""

import numpy as np

from .. import binary
from ..tensor import Tensor
from .checking import Check, Lab, Mistake, same

LAB = Lab(4, "Binary networks: one bit per weight, XOR and popcount for a dot product")
_rng = np.random.default_rng(4)
_X = np.array([-1.5, -1.0, -0.3, 0.0, 0.3, 1.0, 2.0], dtype=np.float32)  # the tutorial's numbers
_A = np.array([1, -1, 1, 1, -1, -1, 1, -1])
_B = np.array([1, 1, -1, 1, -1, 1, 1, 1])


def _signs(*shape):
    return binary.sign(_rng.standard_normal(shape)).astype(np.int64)


@LAB.exercise("sign")
def check_sign():
    return Check(
        reference=binary.sign, names=("x",), compare=same(exact=True),
        cases=[(_X,), (np.array([-0.0, 0.0, 1e-30, -1e-30], np.float32),), (_rng.standard_normal((3, 4)),),
               (np.zeros(3),)],
        hint="sign(x) = +1 if x >= 0 else -1: a binary value is never 0",
        mistakes=[Mistake(np.sign, "np.sign(0) is 0, but a binary weight must be +-1: sign(0) = +1 (BinaryNet, Larq)"),
                  Mistake(lambda x: np.where(x > 0, 1.0, -1.0), "x >= 0 gives +1: 0 maps to +1, not -1")])


@LAB.exercise("ste_backward")
def check_ste_backward():
    def reference(x, g):
        t = Tensor(x, requires_grad=True)
        binary.sign_ste(t).backward(g)
        return t.grad

    return Check(
        reference=reference, names=("x", "g"), compare=same(exact=True),
        cases=[(_X, np.ones_like(_X)), (_X, _rng.standard_normal(7).astype(np.float32)),
               (np.array([[1.0, -1.0], [1.0001, -0.9999]], np.float32), np.array([[2.0, 3.0], [4.0, 5.0]], np.float32))],
        hint="dL/dx = g * 1[|x| <= 1]: the derivative of hardtanh(x) = clip(x, -1, 1), edges included",
        mistakes=[Mistake(lambda x, g: g, "the clipped STE cuts the gradient where |x| > 1 (the identity STE passes it "
                                          "everywhere, and latent weights then grow without bound)"),
                  Mistake(lambda x, g: g * (np.abs(x) < 1), "the edges pass: 1[|x| <= 1], with <="),
                  Mistake(lambda x, g: (np.abs(x) <= 1).astype(x.dtype), "multiply the mask by the upstream "
                                                                          "gradient g")])


@LAB.exercise("xnor_alpha")
def check_xnor_alpha():
    tutorial = np.array([[0.5, -1.0, 0.0, 0.25], [-0.2, -0.2, 0.2, 0.2]], np.float32)
    return Check(
        reference=binary.xnor_alpha, names=("W",), compare=same(rtol=1e-6),
        cases=[(tutorial,), (_rng.standard_normal((3, 2, 2, 2)).astype(np.float32),), (np.zeros((2, 3), np.float32),)],
        hint="alpha_c = mean(|W[c]|) = ||W[c]||_1 / n per output channel c (axis 0): shape (out_channels,)",
        mistakes=[Mistake(lambda W: W.reshape(len(W), -1).mean(axis=1), "alpha = mean(|W|): take absolute values, "
                                                                          "or positive and negative weights cancel"),
                  Mistake(lambda W: np.full(len(W), np.abs(W).mean(), W.dtype), "one alpha per output channel "
                                                                                  "(axis 0), not one per tensor"),
                  Mistake(lambda W: np.abs(W).reshape(len(W), -1).max(axis=1), "alpha is the mean of |W| "
                                                                               "(the best L2 fit), not the max")])


@LAB.exercise("pack_signs")
def check_pack_signs():
    return Check(
        reference=binary.pack_signs, names=("v",), compare=same(exact=True),
        cases=[(_A,), (_signs(13),), (_signs(3, 16),), (-np.ones(5, np.int64),)],
        hint="bit 1 for +1 and bit 0 for -1, 8 per byte, first value in the most significant bit "
             "(np.packbits along the last axis); the last byte is padded with 0 bits",
        mistakes=[Mistake(lambda v: np.packbits(v != 0, axis=-1),
                          "pack v > 0 (bit 1 = +1, bit 0 = -1): -1 is nonzero, so packing v itself sets every bit"),
                  Mistake(lambda v: np.packbits(v > 0, axis=-1, bitorder="little"),
                          "np.packbits' default order: the first value goes in the most significant bit"),
                  Mistake(lambda v: np.packbits(v < 0, axis=-1), "+1 is bit 1 and -1 is bit 0")])


@LAB.exercise("xnor_dot")
def check_xnor_dot():
    def reference(a_bits, b_bits, n):
        return binary.popcount_matmul(a_bits[None], b_bits[None], n)[0, 0]

    def pc(x):
        return int(np.unpackbits(x).sum())

    def packed(a, b):
        return binary.pack_signs(a), binary.pack_signs(b), len(a)

    a13, b13 = _signs(13), _signs(13)
    a70 = _signs(70)
    return Check(
        reference=reference, names=("a_bits", "b_bits", "n"), compare=same(exact=True),
        cases=[packed(_A, _B), packed(a13, b13), packed(a70, a70), packed(a70, -a70), packed(_signs(64), _signs(64))],
        hint="a . b = n - 2 * popcount(a XOR b): agreeing positions add +1, differing ones -1; the 0 padding bits "
             "agree, so XOR leaves them out",
        mistakes=[Mistake(lambda a, b, n: n - pc(a ^ b), "each differing position counts -1 instead of +1, so "
                                                          "a . b = n - 2 * popcount(a XOR b)"),
                  Mistake(lambda a, b, n: 2 * pc(~(a ^ b)) - 8 * len(a),
                          "XNOR sets the padding bits of the last byte (0 XNOR 0 = 1): count only n positions, or "
                          "use n - 2 popcount(XOR)"),
                  Mistake(lambda a, b, n: pc(a ^ b), "popcount(a XOR b) counts the differing positions; the dot "
                                                     "product is (agreeing) - (differing) = n - 2 popcount")])
