"""Lab 3, distillation: the checks of tutorials/labs/03_distillation_lab.ipynb (answers: minicompress.distillation
and minicompress.functional).

3.1 softmax with temperature T            3.4 the distillation loss with T^2
3.2 KL(p || q), averaged over the batch   3.5 the soft term's gradient (1/T)(q - p)
3.3 a stable cross-entropy
"""

import numpy as np

from .. import distillation
from .. import functional as F
from ..tensor import Tensor
from .checking import Check, Lab, Mistake, same

LAB = Lab(3, "Distillation: a student learns from a teacher's softened outputs")
_rng = np.random.default_rng(3)
_Z_S = np.array([[2.0, 1.0, 0.5]])   # the tutorial's student logits
_Z_T = np.array([[4.0, 0.5, -1.0]])  # and teacher logits


def _softmax(z, T=1.0):
    e = np.exp(z / T - (z / T).max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _naive_softmax(z, T=1.0):
    e = np.exp(z / T)
    return e / e.sum(axis=-1, keepdims=True)


def _kl(p, q):
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0).sum() / len(p)


def _ce(z, y):
    return -np.log(_softmax(z)[np.arange(len(y)), y]).mean()


# --------------------------------------------------------------------------------------------------------------------
# 1. Softening the teacher
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("softmax_T")
def check_softmax_T():
    return Check(
        reference=lambda z, T: distillation.softmax(z, T), names=("z", "T"), compare=same(rtol=1e-6, atol=1e-12),
        cases=[(np.array([5.0, 2.0, -1.0]), 1.0), (np.array([5.0, 2.0, -1.0]), 5.0),
               (np.array([5.0, 2.0, -1.0]), 20.0), (np.array([1000.0, 999.0, 0.0]), 1.0),
               (np.array([1000.0, 999.0, 0.0]), 0.01), (_rng.normal(size=(3, 4)), 2.0), (np.zeros(4), 3.0)],
        hint="p_i = exp(z_i / T - m) / sum_j exp(z_j / T - m) with m the max of z / T along the last axis",
        mistakes=[Mistake(_naive_softmax, "exp(1000) overflows to inf and inf / inf is NaN: subtract the max of "
                                          "z / T before exp (the result does not change)"),
                  Mistake(lambda z, T: _softmax(z), "divide the logits by the temperature: softmax(z / T)"),
                  Mistake(lambda z, T: _softmax(z * T), "divide by T, do not multiply: a high T must soften"),
                  Mistake(lambda z, T: np.exp(z / T - (z / T).max(axis=0)) / np.exp(z / T - (z / T).max(axis=0))
                          .sum(axis=0), "normalise along the last axis (the classes), one distribution per row")])


@LAB.exercise("kl_divergence")
def check_kl_divergence():
    def reference(p, q):
        return F.kl_div(np.log(q), p, reduction="batchmean").item()

    p3, q3 = np.array([[0.7, 0.2, 0.1]]), np.array([[0.5, 0.3, 0.2]])
    batch_p, batch_q = _softmax(_rng.normal(size=(4, 5)) * 2), _softmax(_rng.normal(size=(4, 5)))
    return Check(
        reference=reference, names=("p", "q"), compare=same(rtol=1e-7, atol=1e-12),
        cases=[(p3, q3), (batch_p, batch_q), (np.array([[1.0, 0.0, 0.0]]), q3), (q3, q3)],
        hint="KL(p || q) = sum_i p_i log(p_i / q_i) per row (0 where p_i = 0), averaged over the N rows",
        mistakes=[Mistake(lambda p, q: _kl(q, p), "KL(p || q) weights the log ratio by the teacher's p: "
                                                  "sum p log(p / q), not sum q log(q / p)"),
                  Mistake(lambda p, q: _kl(p, q) * len(p), "average over the N samples (batchmean), do not sum"),
                  Mistake(lambda p, q: _kl(p, q) / p.shape[1], "sum over the classes, then average over the "
                                                              "samples (not the mean over all N * C entries)"),
                  Mistake(lambda p, q: (p * np.log(p / q)).sum() / len(p),
                          "0 * log 0 is NaN in NumPy but 0 in KL: take the terms with p_i = 0 as 0")])


_LOG0 = ("softmax(z)[y] of large logits is 0 in floating point and log(0) = -inf: use log-sum-exp, "
         "-log p_y = m + log sum exp(z - m) - z_y")


@LAB.exercise("cross_entropy")
def check_cross_entropy():
    def reference(z, y):
        return F.cross_entropy(Tensor(z), y).item()

    return Check(
        reference=reference, names=("z", "y"), compare=same(rtol=1e-7),
        cases=[(_Z_S, np.array([0])), (_rng.normal(size=(6, 4)), _rng.integers(0, 4, 6)),
               (np.zeros((2, 5)), np.array([0, 4])), (np.array([[1000.0, 0.0]]), np.array([1]))],
        hint="CE = mean over samples of -log softmax(z)[y] = logsumexp(z) - z[y], with logsumexp(z) = "
             "m + log sum exp(z - m), m = the row max",
        mistakes=[Mistake(lambda z, y: -np.log(_naive_softmax(z)[np.arange(len(y)), y]).mean(),
                          _LOG0),
                  Mistake(_ce, _LOG0),
                  Mistake(lambda z, y: _ce(z, y) * len(y), "average over the samples, do not sum"),
                  Mistake(lambda z, y: -_ce(z, y), "cross-entropy is -log p_y, a positive number")])


# --------------------------------------------------------------------------------------------------------------------
# 2. The loss and its gradient
# --------------------------------------------------------------------------------------------------------------------


@LAB.exercise("kd_loss")
def check_kd_loss():
    def reference(z_s, z_t, y, T, alpha):
        return distillation.kd_loss(Tensor(z_s), z_t, y, T, alpha).item()

    def loss(T2=True, reverse=False, swap=False, ce_at_T=False):
        def kd(z_s, z_t, y, T, alpha):
            p, q = _softmax(z_t, T), _softmax(z_s, T)
            soft = (_kl(q, p) if reverse else _kl(p, q)) * (T * T if T2 else 1)
            hard = _ce(z_s / T if ce_at_T else z_s, y)
            a = 1 - alpha if swap else alpha
            return a * soft + (1 - a) * hard
        return kd

    y1 = np.array([0])
    batch = (_rng.normal(size=(5, 4)), _rng.normal(scale=3, size=(5, 4)), _rng.integers(0, 4, 5))
    return Check(
        reference=reference, names=("z_s", "z_t", "y", "T", "alpha"), compare=same(rtol=1e-6),
        cases=[(_Z_S, _Z_T, y1, 3.0, 1.0), (_Z_S, _Z_T, y1, 3.0, 0.7), (_Z_S, _Z_T, y1, 3.0, 0.0),
               (*batch, 4.0, 0.9), (*batch, 1.0, 0.5), (np.array([[500.0, 0.0]]), np.array([[0.0, 800.0]]),
                                                         np.array([1]), 2.0, 0.5)],
        hint="L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(y, z_s), KL and CE "
             "averaged over the batch, CE at T = 1",
        mistakes=[Mistake(loss(T2=False), "multiply the soft term by T^2 (Hinton et al.): its gradient shrinks "
                                          "like 1/T^2 and T^2 restores the scale (Distiller omits it)"),
                  Mistake(loss(reverse=True), "KL(p || q) with p = the teacher's softmax(z_t / T): the teacher's "
                                              "distribution comes first"),
                  Mistake(loss(swap=True), "alpha weights the soft (teacher) term, 1 - alpha the hard labels"),
                  Mistake(loss(ce_at_T=True), "the hard term is the ordinary cross-entropy at T = 1")])


@LAB.exercise("soft_gradient")
def check_soft_gradient():
    def reference(z_s, z_t, T):
        t = Tensor(z_s, requires_grad=True)
        distillation.kd_loss(t, z_t, None, T, alpha=1.0, scale_T2=False).backward()
        return t.grad * len(z_s)  # per sample: undo the batch mean

    return Check(
        reference=reference, names=("z_s", "z_t", "T"), compare=same(rtol=1e-6, atol=1e-12),
        cases=[(_Z_S, _Z_T, 3.0), (_Z_S, _Z_T, 1.0), (_Z_S, _Z_T, 20.0),
               (_rng.normal(size=(3, 5)), _rng.normal(scale=3, size=(3, 5)), 4.0),
               (np.array([[900.0, 0.0, 10.0]]), np.array([[0.0, 700.0, 5.0]]), 1.0)],
        hint="per sample, d KL(p || q) / d z_s = (1/T) (q - p) with q = softmax(z_s / T) (student) and "
             "p = softmax(z_t / T) (teacher), stable softmaxes",
        mistakes=[Mistake(lambda z_s, z_t, T: _softmax(z_s, T) - _softmax(z_t, T),
                          "the chain rule through z_s / T brings a factor 1/T"),
                  Mistake(lambda z_s, z_t, T: (_softmax(z_t, T) - _softmax(z_s, T)) / T,
                          "sign: the gradient is (1/T)(q - p), student minus teacher"),
                  Mistake(lambda z_s, z_t, T: T * (_softmax(z_s, T) - _softmax(z_t, T)),
                          "this is the soft term alone, without the T^2 factor: (1/T)(q - p)"),
                  Mistake(lambda z_s, z_t, T: (_naive_softmax(z_s, T) - _naive_softmax(z_t, T)) / T,
                          "large logits overflow exp: subtract the max before exp in both softmaxes")])
