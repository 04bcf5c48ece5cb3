"""Knowledge distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

A big *teacher* knows more than its top-1 answer: that this 2 looks a bit like a 7 and not at all like a 4 is
written in the small probabilities of its wrong classes ("dark knowledge"). A softmax at temperature T > 1 turns
those tiny numbers into visible ones, and a small *student* is trained to match them:

    soft targets   p_i = exp(v_i / T) / sum_j exp(v_j / T)      (teacher logits v = z_t)
    student        q_i = exp(z_i / T) / sum_j exp(z_j / T)      (student logits z = z_s)
    loss           L = alpha * T^2 * KL(p || q) + (1 - alpha) * CE(y, z_s)

KL is averaged over the batch (PyTorch's ``reduction="batchmean"``), CE is the usual cross-entropy at T = 1.

Transfer set. The teacher's soft targets need no label: Hinton et al. train the student on a *transfer set*,
which may be unlabelled or only partly labelled. ``distill(labeled=mask)`` says which training images' labels the
student may use; per sample the loss is then

    l_n = alpha * T^2 * KL(p_n || q_n) + (1 - alpha) * [n labelled] * CE(y_n, z_s,n),   L = (1/N) sum_n l_n

so an unlabelled image contributes its soft term only. This is where distillation clearly pays off for a small
student: given the labels of 1,000 of the 10,000 shipped MNIST images, the teacher's soft targets on all 10,000
lift a 784-30-30-10 student by 3 to 4.5 points over the 1,000 labels alone (3 seeds; with all 10,000 labels the
same student gains nothing from the teacher). `minicompress distill --labels 1000 --compare` shows it.
Why T^2: per sample, the soft term's gradient is dKL/dz_i = (1/T) (q_i - p_i), and for large T that is about
(z_i - v_i) / (N T^2) (N classes, logits of zero mean), so it shrinks like 1/T^2. Multiplying by T^2 keeps the
soft term on the same scale as the hard one whatever T is, and lets one change T without retuning alpha.
Hinton et al. do this; Intel's Distiller does not (its loss is alpha * KL + (1 - alpha) * CE at temperature T),
which is why ``kd_loss`` has ``scale_T2`` to switch it off and show the difference.
"""

import copy

import numpy as np

from . import functional as F
from .tensor import Tensor, no_grad
from .train import fit


# The soft term T^2 * KL(p || q) multiplies a KL of order 1 / T^2, computed in float32, by T^2: its rounding error
# grows like T^2. For logits of order 1 it is off by 0.2% at T = 100, 20% at T = 1000, and NaN at T = 1e30.
MAX_T = 100.0


def _check_T(T, op, max_T=None):
    if isinstance(T, bool) or not (np.isscalar(T) and np.isreal(T) and np.isfinite(T) and T > 0):
        raise ValueError(f"{op}: temperature T must be a finite number > 0, got T={T!r}")
    if max_T is not None and T > max_T:
        raise ValueError(f"{op}: temperature T={T!r} is too large: past T = {max_T:g} the soft term T^2 * KL is "
                         f"mostly float32 rounding error (Hinton et al. use T in [1, 20]); allowed: 0 < T <= {max_T:g}")


def _check_logits(z, who, T, op):
    """Logits must be finite, and z / T too (a tiny T overflows float32): NaN would spread through the loss."""
    z = z.data if isinstance(z, Tensor) else np.asarray(z)
    if not np.isfinite(z).all():
        row = int(np.argwhere(~np.isfinite(z))[0][0])
        raise ValueError(f"{op}: {who} logits hold NaN or Inf (first in row {row}: {z[row].tolist()}); "
                         "they must be finite")
    with np.errstate(over="ignore"):
        largest = np.abs(z).max(initial=0) / T
    if not np.isfinite(largest):
        raise ValueError(f"{op}: temperature T={T!r} is too small for {who} logits up to |z| = "
                         f"{np.abs(z).max():g}: z / T overflows float32")


def _check_alpha(alpha, op):
    if isinstance(alpha, bool) or not (np.isscalar(alpha) and np.isreal(alpha) and 0 <= alpha <= 1):
        raise ValueError(f"{op}: alpha weights the soft term and must be in [0, 1], got alpha={alpha!r}")


def softmax(z, T=1.0, axis=-1):
    """Softmax with temperature, p_i = exp(z_i / T) / sum_j exp(z_j / T), stable for any T > 0.

    z: logits, any shape (classes along ``axis``). Returns an ndarray for ndarray input and a differentiable
    Tensor for Tensor input. The max is subtracted before exp (``functional.softmax``), so logits of 1e4 or
    T = 1e-3 do not overflow. T -> 0 approaches one-hot on the argmax, T -> inf the uniform 1/N.
    """
    _check_T(T, "softmax")
    _check_logits(z, "the", T, "softmax")
    p = F.softmax(z, axis=axis, T=T)
    return p if isinstance(z, Tensor) else p.data


def _logits(x, who):
    """Logits as (Tensor or ndarray, shape); checks they are a 2-D (N, classes) batch."""
    shape = x.shape if isinstance(x, Tensor) else np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"kd_loss: {who} logits must be 2-D (batch, classes), got shape {tuple(shape)}")
    return shape


def kd_loss(student_logits, teacher_logits, targets, T, alpha, scale_T2=True, labeled=None):
    """L = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(y, z_s).

    student_logits z_s: Tensor (N, C), differentiated. teacher_logits z_t: (N, C) ndarray or Tensor, treated
    as constants (the teacher is frozen). targets y: int (N,) true labels; may be None when alpha = 1.
    0 < T <= MAX_T (100): temperature of both softmaxes in the soft term. alpha in [0, 1]: weight of the soft term.
    scale_T2: multiply the soft term by T^2 (Hinton et al.); False gives Distiller's alpha * KL + (1-alpha) * CE.
    KL is summed over classes and averaged over the N samples. Returns a scalar Tensor.
    labeled: optional bool (N,), the samples whose label counts: the hard term is then
    (1 - alpha) * (1/N) * sum over labelled n of CE_n (an unlabelled sample keeps only its soft term; its
    entry in targets is not read). None means every sample is labelled.
    Per sample, d(soft term)/dz_s = (1/T) (q - p) (times T^2 if scaled), divided by N for the batch mean.
    """
    _check_T(T, "kd_loss", MAX_T)
    _check_alpha(alpha, "kd_loss")
    s_shape, t_shape = _logits(student_logits, "student"), _logits(teacher_logits, "teacher")
    if s_shape[1] != t_shape[1]:
        raise ValueError(f"kd_loss: teacher has {t_shape[1]} classes but student has {s_shape[1]} "
                         f"(teacher logits {tuple(t_shape)}, student logits {tuple(s_shape)}); they must match")
    if s_shape[0] != t_shape[0]:
        raise ValueError(f"kd_loss: teacher logits are for {t_shape[0]} samples but student logits for "
                         f"{s_shape[0]} (shapes {tuple(t_shape)} and {tuple(s_shape)}); they must match")
    if targets is None and alpha != 1:
        raise ValueError(f"kd_loss: targets (true labels) are needed when alpha < 1, got alpha={alpha}")
    if labeled is not None:
        labeled = np.asarray(labeled)
        if labeled.dtype != bool or labeled.shape != (s_shape[0],):
            raise ValueError(f"kd_loss: labeled must be a bool mask of shape ({s_shape[0]},), one entry per sample, "
                             f"got {labeled.dtype} {labeled.shape}")
    _check_logits(student_logits, "student", T, "kd_loss")
    _check_logits(teacher_logits, "teacher", T, "kd_loss")
    z_s = student_logits if isinstance(student_logits, Tensor) else Tensor(np.asarray(student_logits))
    z_t = teacher_logits.data if isinstance(teacher_logits, Tensor) else np.asarray(teacher_logits)

    loss = 0.0
    if alpha > 0:
        p = softmax(z_t, T)                                   # soft targets, constants
        log_q = F.log_softmax(z_s, T=T)                       # student at the same temperature
        soft = F.kl_div(log_q, p, reduction="batchmean")      # KL(p || q), averaged over the batch
        loss = alpha * (T * T if scale_T2 else 1.0) * soft
    if alpha < 1 and labeled is None:
        loss = loss + (1 - alpha) * F.cross_entropy(z_s, targets)
    elif alpha < 1 and labeled.any():
        # unlabelled rows get label 0 (any valid class) and weight 0; divide by N, not by the labelled count,
        # so each labelled image weighs the same whatever the batch holds
        y = np.where(labeled, np.asarray(targets), 0)
        per_sample = F.cross_entropy(z_s, y, reduction="none")
        loss = loss + (1 - alpha) * (per_sample * labeled.astype(np.float32)).sum() / s_shape[0]
    return loss


def precompute_teacher_logits(teacher, loader):
    """Run the frozen teacher once over the images of ``loader`` (a data.DataLoader), in order, in eval mode
    under no_grad: logits ndarray (N, C), row n for loader.images[n]. The teacher's mode is restored after.

    Distillation on a fixed transfer set only ever needs these numbers, so computing them once saves a
    teacher forward pass per batch and epoch.
    """
    ordered = copy.copy(loader)
    ordered.shuffle, ordered.drop_last = False, False
    was_training = teacher.training
    teacher.eval()
    try:
        with no_grad():
            return np.concatenate([teacher(x).data for x, _ in ordered])
    finally:
        teacher.train(was_training)


class _TeacherBatches:
    """Yields the (x, y) batches of a DataLoader, same order and shuffling, and keeps the teacher's logits of
    the batch just yielded in ``z_t`` for the loss: rows of precomputed logits, or the frozen teacher run on x."""

    def __init__(self, loader, teacher=None, logits=None, labeled=None):
        self.labels, self.teacher, self.logits, self.z_t = loader.labels, teacher, logits, None
        self.labeled, self.known = labeled, None  # known: the labeled mask of the batch just yielded
        # a shallow copy whose "labels" are sample indices; it shares the loader's generator, so the
        # shuffling is exactly the one the loader itself would have produced
        self.indexed = copy.copy(loader)
        self.indexed.labels = np.arange(len(loader.images))

    def __len__(self):
        return len(self.indexed)

    def __iter__(self):
        for x, idx in self.indexed:
            if self.logits is not None:
                self.z_t = self.logits[idx]
            else:
                with no_grad():
                    self.z_t = self.teacher(x).data
            self.known = None if self.labeled is None else self.labeled[idx]
            yield x, self.labels[idx]


def distill(student, teacher, train_loader, epochs, optimizer, T=4.0, alpha=0.9, scale_T2=True,
            teacher_logits=None, precompute=True, test_loader=None, callbacks=(), progress=True,
            scheduler=None, seed=None, labeled=None, desc="distill"):
    """Train ``student`` on ``kd_loss(student(x), teacher(x), y, T, alpha, scale_T2)``; returns train.History.

    The teacher is frozen: it runs in eval mode under no_grad and its parameters are never updated (its mode
    is restored at the end). Its logits on the training images are computed once up front when ``precompute``
    is True, or passed in as ``teacher_logits`` (N, C), row n for train_loader.images[n] (then ``teacher``
    may be None); with precompute=False the teacher runs on every batch, which a loader with max_shift > 0
    (jitter) requires, so that teacher and student see the same shifted images.
    labeled: optional bool (N,) over train_loader.images: the images whose label the student may use (the
    others are a transfer set that only the teacher's soft targets cover; see the module docstring). The
    History's training "accuracy" is still measured against every label: a figure to watch, not to learn from.
    train_loader: a data.DataLoader. The rest is as in ``train.fit``, which runs the loop (progress bar named
    ``desc``, History with loss / accuracy / test_accuracy per epoch, callbacks, scheduler, seed).
    """
    _check_T(T, "distill", MAX_T)
    _check_alpha(alpha, "distill")
    n = len(train_loader.images)
    if getattr(train_loader, "max_shift", 0) and (teacher_logits is not None or precompute):
        raise ValueError(f"distill: train_loader shifts its images (max_shift={train_loader.max_shift}), so "
                         "logits computed once on the unshifted images would not match what the student sees; "
                         "pass the teacher with precompute=False (it then runs on each shifted batch)")
    if teacher_logits is None:
        if teacher is None:
            raise ValueError("distill: give a teacher model or its precomputed teacher_logits")
        if precompute:
            teacher_logits = precompute_teacher_logits(teacher, train_loader)
    teacher_logits = None if teacher_logits is None else np.asarray(teacher_logits)
    if teacher_logits is not None and (teacher_logits.ndim != 2 or len(teacher_logits) != n):
        raise ValueError(f"distill: teacher_logits must have shape ({n}, classes), one row per training image, "
                         f"got {teacher_logits.shape}")

    if labeled is not None:
        labeled = np.asarray(labeled)
        if labeled.dtype != bool or labeled.shape != (n,):
            raise ValueError(f"distill: labeled must be a bool mask of shape ({n},), one entry per training image, "
                             f"got {labeled.dtype} {labeled.shape}")
    batches = _TeacherBatches(train_loader, teacher, teacher_logits, labeled)
    was_training = None if teacher is None else teacher.training
    if teacher is not None:
        teacher.eval()
    try:
        return fit(student, batches, epochs, optimizer,
                   loss_fn=lambda z_s, y: kd_loss(z_s, batches.z_t, y, T, alpha, scale_T2, batches.known),
                   test_loader=test_loader, callbacks=callbacks, progress=progress, scheduler=scheduler,
                   seed=seed, desc=desc)
    finally:
        if teacher is not None:
            teacher.train(was_training)
