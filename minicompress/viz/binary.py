"""Pictures for binary networks: sign and its straight-through gradients, latent weights moving during training
while their signs flip, and how many bits each layer needs. Every function returns a matplotlib Figure."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..binary import STE_VARIANTS, sign, sign_ste
from ..tensor import Tensor


def plot_sign_and_ste(variants=STE_VARIANTS, lim=2.0):
    """Left: sign(x) with sign(0) = +1. Right: the gradient each straight-through variant passes back,
    d sign_ste(x) / dx, obtained from ``sign_ste``'s own backward with an upstream gradient of ones."""
    x = np.linspace(-lim, lim, 801)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(x, sign(x), color="C0", lw=2)
    left.plot([0], [1], "o", color="C0")
    left.plot([0], [-1], "o", mfc="white", color="C0")
    left.set_title("forward: sign(x), sign(0) = +1")
    # the variants coincide on parts of the axis: wide pale lines behind, thin ones in front, so that none hides
    styles = [dict(lw=6, alpha=0.35), dict(lw=2.5, ls="--"), dict(lw=1.5), dict(lw=1, ls=":")]
    for i, variant in enumerate(variants):
        t = Tensor(x, requires_grad=True)
        sign_ste(t, variant).backward(np.ones_like(x))
        right.plot(x, t.grad, label=variant, color=f"C{i + 1}", zorder=2 + i, **styles[i % len(styles)])
    right.set_ylim(-0.1, 2.2)
    right.set_title("backward: gradient passed through")
    right.legend()
    for ax in (left, right):
        ax.axhline(0, color="gray", lw=0.6)
        ax.axvline(0, color="gray", lw=0.6)
        ax.set_xlabel("x")
    fig.tight_layout()
    return fig


def plot_latent_histograms(recorder, layer=None, snapshots=None):
    """Histograms of one binary layer's latent weights W at several snapshots of a ``LatentWeightRecorder``
    (0 = before training, e = after epoch e). Weights pile up at the clip bounds +-1 as training goes on;
    the ones near 0 are those whose sign can still flip."""
    layer = layer or next(iter(recorder.histograms))
    hists = recorder.histograms[layer]
    snapshots = sorted(set([0, len(hists) // 2, len(hists) - 1])) if snapshots is None else snapshots
    centers = (recorder.bins[:-1] + recorder.bins[1:]) / 2
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, s in enumerate(snapshots):
        ax.step(centers, hists[s], where="mid", color=plt.cm.viridis(i / max(len(snapshots) - 1, 1)),
                label="before training" if s == 0 else f"after epoch {s}")  # fmt: skip
    ax.set_xlabel("latent weight W (clipped to [-1, 1])")
    ax.set_ylabel("count")
    ax.set_title(f"latent weights of layer {layer}; forward uses sign(W)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_sign_flips(recorder):
    """Fraction of each binary layer's weights whose sign flipped during each epoch (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, flips in recorder.flips.items():
        epochs = np.arange(1, len(flips) + 1)
        ax.plot(epochs, np.maximum(np.asarray(flips) / recorder.n_weights[name], 1e-7), "o-", label=f"layer {name}")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("fraction of signs flipped")
    ax.set_title("sign flips per epoch")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_bits_per_layer(packed):
    """Bits of each binary layer's weights: float32 (32 per weight) against packed (1 per weight, rounded up to
    whole bytes per row), plus the float32 scales and biases the packed layer still keeps (log scale)."""
    rows = packed.size_report()
    names = [f"{r['layer']}\n{r['type'].replace('PackedBinary', '')}" for r in rows]
    pos = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    f32 = [8 * r["float32_bytes"] for r in rows]
    packed_bits = [8 * r["packed_bytes"] for r in rows]
    extra = [8 * r["scale_bias_bytes"] for r in rows]
    ax.bar(pos - 0.2, f32, 0.4, label="float32 weights", color="C7")
    ax.bar(pos + 0.2, packed_bits, 0.4, label="packed bits", color="C0")
    if any(extra):
        ax.bar(pos + 0.2, extra, 0.4, bottom=packed_bits, label="scales + bias (float32)", color="C1")
    for p, a, b in zip(pos, f32, packed_bits):
        ax.text(p + 0.2, b, f"{a / b:.0f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(pos, names)
    ax.set_yscale("log")
    ax.set_ylim(bottom=min(packed_bits) / 2)  # log axes would otherwise cut the smallest bar
    ax.set_ylabel("bits")
    ax.set_title("bits per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
