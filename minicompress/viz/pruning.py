"""Pictures of pruning: where the threshold cuts the weight histogram, what a mask looks like, and how
accuracy falls with sparsity. Every function draws on `ax` (a new figure if None) and returns the axes."""
import matplotlib.pyplot as plt
import numpy as np

from minicompress import pruning


def _np(x):
    return np.asarray(getattr(x, "data", x))


def _axes(ax, figsize=(5, 3.2)):
    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def plot_weight_histogram(w, amount=None, mask=None, bins=100, ax=None, title=None):
    """Histogram of the weights w with the magnitude threshold drawn at +-t.

    t is the largest |w| that is pruned: taken from `mask` (mask == 0 entries) if given, else from
    pruning round(amount * n) entries of w by I(w) = |w|.
    """
    ax = _axes(ax)
    w = _np(w).reshape(-1)
    if mask is None and amount is not None:
        mask = pruning.unstructured_mask(pruning.importance(w), amount)
    ax.hist(w, bins=bins, color="0.6")
    if mask is not None:
        pruned = pruning.importance(w)[_np(mask).reshape(-1) == 0]
        if pruned.size:
            t = float(pruned.max())
            for x in (-t, t):
                ax.axvline(x, color="C3", lw=1.2)
            ax.axvspan(-t, t, color="C3", alpha=0.12, label=f"pruned: |w| <= {t:.3g} ({pruned.size} of {w.size})")
            ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("w")
    ax.set_ylabel("count")
    ax.set_title(title or "weights and the pruning threshold")
    return ax


def plot_mask(mask, ax=None, title=None):
    """A 0/1 mask as an image (black = pruned); conv masks (out, in, kh, kw) are shown as (out, in*kh*kw)."""
    ax = _axes(ax, figsize=(6, 3))
    mask = _np(mask)
    grid = mask.reshape(mask.shape[0], -1) if mask.ndim > 1 else mask.reshape(1, -1)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xlabel("input (flattened)")
    ax.set_ylabel("output unit")
    ax.set_title(title or f"mask: {100 * grid.mean():.1f}% kept")
    return ax


def plot_sensitivity(rows, ax=None, title="sensitivity: each layer pruned alone"):
    """Accuracy (%) against sparsity (%), one line per layer, from `pruning.sensitivity_analysis` rows."""
    ax = _axes(ax)
    for layer in dict.fromkeys(r["layer"] for r in rows):
        points = sorted((100 * r["sparsity"], 100 * r["accuracy"]) for r in rows if r["layer"] == layer)
        ax.plot(*zip(*points), marker="o", label=f"layer {layer.split('.')[0]} ({layer})")
    ax.set_xlabel("sparsity of the layer (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_accuracy_vs_sparsity(curves, ax=None, title="accuracy against sparsity"):
    """curves: dict label -> list of (sparsity, accuracy) points as fractions, e.g. one-shot vs iterative vs gradual;
    drawn in percent."""
    ax = _axes(ax)
    for label, points in curves.items():
        ax.plot(*zip(*sorted((100 * s, 100 * a) for s, a in points)), marker="o", label=label)
    ax.set_xlabel("sparsity (% of weights pruned)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax
