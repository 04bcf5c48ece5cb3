"""Pictures for knowledge distillation: soft targets at several temperatures, why the loss is scaled by T^2,
and how the student's accuracy depends on T and alpha."""

import matplotlib.pyplot as plt
import numpy as np

from ..distillation import kd_loss, softmax
from ..tensor import Tensor


def plot_soft_targets(teacher_logits, Ts=(1, 2, 5, 20), image=None, label=None):
    """Bar charts of one sample's teacher distribution softmax(z_t / T), one panel per T.

    teacher_logits: (C,) logits of one sample; image: optional (28, 28) picture shown in a first panel;
    label: optional true class, highlighted. At T = 1 the wrong classes are invisible; as T grows their
    relative sizes (the "dark knowledge") appear, and for very large T everything tends to 1/C.
    Returns the Figure.
    """
    z_t = np.asarray(teacher_logits, dtype=np.float64).reshape(-1)
    C = z_t.size
    panels = len(Ts) + (image is not None)
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 2.6), squeeze=False)
    axes = list(axes[0])
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(np.asarray(image).reshape(28, 28), cmap="gray_r")
        ax.set_title("input" if label is None else f"input (label {label})")
        ax.axis("off")
    for ax, T in zip(axes, Ts):
        p = softmax(z_t, T)
        colors = ["C3" if c == label else "C0" for c in range(C)]
        ax.bar(range(C), p, color=colors)
        ax.axhline(1 / C, color="gray", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(C))
        ax.set_title(f"T = {T:g}")
        ax.set_xlabel("class")
    axes[0].set_ylabel("softmax(z_t / T)")
    fig.tight_layout()
    return fig


def soft_gradient_magnitude(student_logits, teacher_logits, T, scale_T2=True):
    """Mean |d(soft term)/dz_s| over the batch's logits: the soft term is kd_loss with alpha = 1."""
    z_s = Tensor(np.asarray(student_logits, dtype=np.float64), requires_grad=True)
    kd_loss(z_s, teacher_logits, None, T, alpha=1.0, scale_T2=scale_T2).backward()
    return float(np.abs(z_s.grad).mean())


def plot_gradient_vs_T(student_logits, teacher_logits, targets, Ts=None):
    """Gradient magnitude of the soft term against T, with and without the T^2 factor (log-log axes).

    The hard term's gradient magnitude, mean |d CE / dz_s|, is drawn as a reference line: with T^2 the soft
    term stays on its scale for every T; without it, the soft gradient falls like 1/T^2.
    student_logits, teacher_logits: (N, C); targets: int (N,). Returns the Figure.
    """
    Ts = np.geomspace(0.5, 50, 25) if Ts is None else np.asarray(Ts, dtype=np.float64)
    with_T2 = [soft_gradient_magnitude(student_logits, teacher_logits, T, True) for T in Ts]
    without = [soft_gradient_magnitude(student_logits, teacher_logits, T, False) for T in Ts]
    z_s = Tensor(np.asarray(student_logits, dtype=np.float64), requires_grad=True)
    kd_loss(z_s, teacher_logits, targets, 1.0, alpha=0.0).backward()
    hard = float(np.abs(z_s.grad).mean())

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(Ts, with_T2, "o-", ms=3, label="soft term x T^2 (Hinton)")
    ax.loglog(Ts, without, "s-", ms=3, label="soft term, no T^2 (Distiller)")
    ax.axhline(hard, color="gray", ls="--", label="hard term CE(y, z_s)")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("mean |dL / dz_s|")
    ax.set_title("Soft-target gradient against T")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_T_alpha(Ts, alphas, accuracy, student_alone=None, teacher=None):
    """Student test accuracy (drawn in %) against T, one line per alpha.

    accuracy: array (len(alphas), len(Ts)) of fractions in [0, 1]; student_alone and teacher: optional accuracies drawn as
    horizontal reference lines. Returns the Figure.
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if accuracy.shape != (len(alphas), len(Ts)):
        raise ValueError(f"plot_accuracy_vs_T_alpha: accuracy has shape {accuracy.shape}, expected "
                         f"(len(alphas), len(Ts)) = ({len(alphas)}, {len(Ts)})")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for alpha, row in zip(alphas, accuracy):
        ax.plot(Ts, 100 * row, "o-", label=f"alpha = {alpha:g}")
    if student_alone is not None:
        ax.axhline(100 * student_alone, color="gray", ls="--", label="student on labels alone")
    if teacher is not None:
        ax.axhline(100 * teacher, color="black", ls=":", label="teacher")
    ax.set_xscale("log")
    ax.set_xticks(Ts)
    ax.set_xticklabels([f"{T:g}" for T in Ts])
    ax.set_xlabel("temperature T")
    ax.set_ylabel("student test accuracy (%)")
    ax.set_title("Distilled student: accuracy against T and alpha")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
