"""Each technique as a process: frames recorded from a real run, written as a GIF and as small multiples.

1. ``Animation``: a list of frames (dicts of values recorded during a run) and a function that draws one frame on a
   row of panels. ``gif()`` writes every frame with matplotlib's Pillow writer; ``key_frames()`` draws a few frames
   as rows of one static picture, for where animations do not play (GitHub, a handout, a slide).
2. Recorders: ``fit`` callbacks (``on_step_end`` / ``on_epoch_end``, see ``minicompress.train``) that copy the
   library's real intermediate values while it trains. Nothing is recomputed for the picture.
3. One animation per technique:
   pruning (the AGP schedule during training), quantization (the grid at fewer and fewer bits; QAT), distillation
   (one digit's teacher distribution as T grows; the student's distribution over training), binary (latent weights
   and sign flips per epoch), Deep Compression (the bytes stage by stage; the survivors before and after sharing),
   and the autograd backward pass (``minicompress.viz.graph``).
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import PillowWriter

from .. import pruning
from ..distillation import softmax
from ..tensor import no_grad
from ..train import evaluate
from . import graph

# ====================================================================================================================
# 1. Animation: frames, a GIF, and small multiples
# ====================================================================================================================


class Animation:
    """``frames``: list of dicts recorded from a run; ``draw(axes, frame, k, frames)`` draws frame k on ``panels`` axes
    and returns nothing. ``panel_size``: (width, height) in inches of one panel."""

    def __init__(self, frames, draw, panels=1, panel_size=(3.6, 2.8), title=""):
        if not frames:
            raise ValueError(f"Animation({title!r}): no frames were recorded; did the run call the recorder?")
        self.frames, self._draw, self.panels, self.panel_size, self.title = list(frames), draw, panels, panel_size, title

    def __len__(self):
        return len(self.frames)

    def _figure(self, rows):
        w, h = self.panel_size
        fig, axes = plt.subplots(rows, self.panels, figsize=(w * self.panels, h * rows), squeeze=False)
        return fig, axes

    def figure(self, k):
        """Frame k alone, as a Figure (one row of panels)."""
        fig, axes = self._figure(1)
        self._draw(list(axes[0]), self.frames[k], k, self.frames)
        fig.suptitle(self.title, fontsize=10)
        fig.tight_layout()
        return fig

    def key_frame_indices(self, n=4):
        """n frames evenly spread from the first to the last (all of them if there are fewer)."""
        return sorted(set(np.linspace(0, len(self.frames) - 1, min(n, len(self.frames))).round().astype(int)))

    def key_frames(self, n=4):
        """The static version: ``n`` key frames, one per row, as one Figure."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"Animation.key_frames(n={n!r}): the number of frames to show must be an int >= 1")
        keys = self.key_frame_indices(n)
        fig, axes = self._figure(len(keys))
        for row, k in zip(axes, keys):
            self._draw(list(row), self.frames[k], k, self.frames)
        fig.suptitle(f"{self.title} (frames {', '.join(str(k) for k in keys)} of {len(self.frames)})", fontsize=10)
        fig.tight_layout()
        return fig

    def gif(self, path, fps=2, dpi=50, overwrite=False):
        """Write every frame to the GIF ``path`` (to a temporary file first, then moved into place); an existing file
        is replaced only with ``overwrite=True``. ``fps``: frames per second; ``dpi``: dots per inch (size)."""
        for name, value in (("fps", fps), ("dpi", dpi)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < 1000:
                raise ValueError(f"Animation.gif({name}={value!r}): must be a number in (0, 1000)")
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"Animation.gif: {path} exists; pass overwrite=True to replace it")
        fig, axes = self._figure(1)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(suffix=".gif", dir=folder)
        os.close(fd)
        try:
            writer = PillowWriter(fps=fps)
            with writer.saving(fig, tmp, dpi):
                for k, frame in enumerate(self.frames):
                    for ax in axes[0]:
                        ax.clear()
                    self._draw(list(axes[0]), frame, k, self.frames)
                    if k == 0:  # one layout for all frames: faster, and the panels do not jump between frames
                        fig.suptitle(self.title, fontsize=10)
                        fig.tight_layout()
                    writer.grab_frame()
            os.replace(tmp, path)
        finally:
            plt.close(fig)
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def gif_bytes(self, fps=2, dpi=50):
        """The GIF as bytes (for ``IPython.display.Image(data=...)``)."""
        with tempfile.TemporaryDirectory() as folder:
            path = self.gif(os.path.join(folder, "animation.gif"), fps, dpi)
            with open(path, "rb") as f:
                return f.read()

    def show(self, fps=2, dpi=50, key_frames=4):
        """In a notebook: the GIF, then the key frames as a static picture (``key_frames`` of them; 0 for none)."""
        from IPython.display import Image, display

        data = self.gif_bytes(fps, dpi)
        display(Image(data=data, format="gif"))
        if key_frames:
            fig = self.key_frames(key_frames)
            display(fig)
            plt.close(fig)


# ====================================================================================================================
# 2. Pruning: the AGP schedule during training
# ====================================================================================================================


class PruningRecorder:
    """``fit`` callback, placed after a ``pruning.GradualPruning``: at every step where ``gradual`` pruned, record the
    schedule's s_t, the measured sparsity of ``layer`` (a module), its weights and mask, and the test accuracy.

    frames: dicts with "step", "scheduled" (s_t from ``gradual.history``), "sparsity" (measured on ``layer``'s mask),
    "weights" (weight_orig, the values the threshold is applied to), "mask", "accuracy" (on ``test_loader``).
    """

    def __init__(self, gradual, layer, test_loader, name="layer"):
        self.gradual, self.layer, self.test_loader, self.name = gradual, layer, test_loader, name
        self.frames = []

    def on_step_end(self, model, step, loss):
        if not self.gradual.history or self.gradual.history[-1][0] != step:
            return
        s_t = self.gradual.history[-1][1]
        mask = pruning.mask_of(self.layer, "weight")
        weights = getattr(self.layer, "weight_orig", self.layer.weight).data
        self.frames.append(dict(step=step, scheduled=float(np.ravel(s_t)[0]), sparsity=float(1 - mask.mean()),
                                weights=weights.copy(), mask=mask.astype(bool).copy(),
                                accuracy=evaluate(model, self.test_loader, progress=False)))


def pruning_animation(recorder):
    """Four panels per frame: sparsity against step (the cubic schedule and where we are), the weight histogram with
    the moving threshold, the layer's mask (black = pruned), test accuracy (%) against step."""
    frames = recorder.frames
    g = recorder.gradual
    t_all = np.arange(g.t0, g.t0 + g.n * g.dt + 1)
    schedule = [100 * pruning.agp_sparsity(t, g.s_f[0], g.s_i[0], g.t0, g.n, g.dt) for t in t_all]
    bins = np.linspace(frames[0]["weights"].min(), frames[0]["weights"].max(), 60)

    def draw(axes, f, k, frames):
        a_s, a_h, a_m, a_a = axes
        steps = [x["step"] for x in frames[:k + 1]]
        a_s.plot(t_all, schedule, color="0.7", lw=1, label="AGP schedule")
        a_s.plot(steps, [100 * x["sparsity"] for x in frames[:k + 1]], "o", color="C3", ms=4, label="measured")
        a_s.set(xlabel="training step", ylabel="sparsity (%)", ylim=(0, 100),
                title=f"step {f['step']}: sparsity {100 * f['sparsity']:.1f}%")
        a_s.legend(fontsize=7, loc="lower right")
        w = f["weights"].reshape(-1)
        a_h.hist(w, bins=bins, color="0.6", histtype="stepfilled")
        pruned = np.abs(w[~f["mask"].reshape(-1)])
        if pruned.size:
            t = float(pruned.max())
            a_h.axvspan(-t, t, color="C3", alpha=0.15)
            a_h.axvline(-t, color="C3", lw=1)
            a_h.axvline(t, color="C3", lw=1)
            a_h.set_title(f"threshold |w| <= {t:.3f}", fontsize=9)
        else:
            a_h.set_title("nothing pruned yet", fontsize=9)
        a_h.set(xlabel=f"weight of {recorder.name} (before the mask)", ylabel="count")
        m = f["mask"].reshape(f["mask"].shape[0], -1)
        a_m.imshow(m, cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        a_m.set(xlabel="input", ylabel="output unit", title=f"mask of {recorder.name}: black = pruned")
        a_a.plot(steps, [100 * x["accuracy"] for x in frames[:k + 1]], "o-", color="C0", ms=4)
        a_a.set(xlabel="training step", ylabel="test accuracy (%)", xlim=(t_all[0] - g.dt, t_all[-1] + g.dt),
                ylim=(min(100 * x["accuracy"] for x in frames) - 2, 100),
                title=f"test accuracy {100 * f['accuracy']:.1f}%")

    return Animation(frames, draw, panels=4, panel_size=(3.2, 2.7), title="gradual pruning (AGP) during training")


# ====================================================================================================================
# 3. Quantization: the grid at fewer bits; QAT
# ====================================================================================================================


def quantization_grid_frames(w, bits=(8, 6, 4, 3, 2), per_channel=False):
    """One frame per bit width: ``quantize_tensor(w, b, symmetric=True)`` (per output channel if ``per_channel``).
    Each frame: "bits", "levels" (2^b), "scale" (of the tensor, or of channel 0), "w", "w_hat" (dequantized), "mse"."""
    from .. import quantization as Q

    w = np.asarray(getattr(w, "data", w), dtype=np.float32)
    frames = []
    for b in bits:
        qt = Q.quantize_tensor(w, b, symmetric=True, axis=0 if per_channel else None)
        w_hat = qt.dequantize()
        frames.append(dict(bits=int(b), levels=2 ** int(b), scale=float(np.ravel(qt.scale)[0]), w=w, w_hat=w_hat,
                           mse=float(np.mean((w_hat - w) ** 2)), per_channel=per_channel))
    return frames


def quantization_grid_animation(w, bits=(8, 6, 4, 3, 2), per_channel=False, name="layer"):
    """Two panels per frame: the weights' histogram with the grid S * q drawn on it, then the dequantized weights
    (every weight sits on a grid value), with the mean squared error."""
    frames = quantization_grid_frames(w, bits, per_channel)
    w = frames[0]["w"].reshape(-1)
    edges = np.linspace(w.min(), w.max(), 80)

    def draw(axes, f, k, frames):
        a, b = axes
        a.hist(w, bins=edges, color="0.6", histtype="stepfilled")
        if not f["per_channel"] and f["levels"] <= 64:
            half = f["levels"] // 2
            for q in range(-half, half):
                a.axvline(q * f["scale"], color="C0", lw=0.6)
        a.set(xlabel=f"weight of {name}", ylabel="count",
              title=f"{f['bits']} bits: {f['levels']} levels, S = {f['scale']:.4f}")
        b.hist(f["w_hat"].reshape(-1), bins=edges, color="C0", histtype="stepfilled")
        b.set_yscale("log")
        b.set(xlabel="dequantized weight S q", ylabel="count (log)",
              title=f"{f['bits']} bits: MSE {f['mse']:.2e}")

    mode = "per channel" if per_channel else "per tensor"
    return Animation(frames, draw, panels=2, title=f"trained weights of {name} on the grid ({mode}, symmetric)")


class QATRecorder:
    """``fit`` callback for a model from ``quantization.prepare_qat``: every ``every`` steps, record one fused layer's
    float weights, its scale S (``weight_qparams``), and the accuracy of the fake-quantized model on ``test_loader``.

    frames: dicts with "step", "weights", "scale" (per-tensor S, or channel 0's), "scale_all" (every channel's),
    "changed" (fraction of weights
    whose integer round(w / S) differs from the first frame's), "accuracy".
    """

    def __init__(self, layer, test_loader, every=20):
        self.layer, self.test_loader, self.every = layer, test_loader, every
        self.frames = []

    def record(self, model, step):
        scale = self.layer.weight_qparams()[0]
        w = self.layer.weight.data.copy()
        s = np.reshape(scale, (-1,) + (1,) * (w.ndim - 1)) if np.ndim(scale) else scale
        q = np.round(w / s)
        changed = float(np.mean(q != self.frames[0]["q"])) if self.frames else 0.0
        self.frames.append(dict(step=step, weights=w, scale=float(np.ravel(scale)[0]), scale_all=np.copy(scale),
                                q=q, changed=changed,
                                accuracy=evaluate(model, self.test_loader, progress=False)))

    def on_step_end(self, model, step, loss):
        if step % self.every == 0:
            self.record(model, step)


def qat_animation(recorder, name="layer"):
    """Three panels per frame: the staircase x_hat = fake_quantize(x) at this layer's S with its straight-through
    gradient; all of the layer's weights in units of their channel's S (grid = integers, zoomed on the levels
    -4..4 where most of them are) as QAT moves them; accuracy (%)."""
    from .. import quantization as Q
    from ..tensor import Tensor

    frames = recorder.frames
    layer = recorder.layer
    _, zero_point, qmin, qmax, _ = layer.weight_qparams()
    z = int(np.ravel(zero_point)[0])

    def draw(axes, f, k, frames):
        a, b, c = axes
        S = f["scale"]
        x = Tensor(np.linspace((qmin - 2) * S, (qmax + 2) * S, 600, dtype=np.float32), requires_grad=True)
        y = Q.fake_quantize(x, np.float32(S), z, qmin, qmax)
        y.backward(np.ones_like(x.data))
        a.plot(x.data / S, y.data / S, color="C0", label="x_hat / S")
        a.plot(x.data / S, x.grad * qmax, color="C1", lw=1, ls="--", label=f"STE gradient (x {qmax})")
        which = " (channel 0)" if np.ndim(f["scale_all"]) else ""
        a.set(xlabel="x / S", ylabel="x_hat / S", title=f"staircase at S = {S:.4f}{which}")
        a.legend(fontsize=7)
        s = np.reshape(S if np.ndim(f["scale_all"]) == 0 else f["scale_all"], (-1,) + (1,) * (f["weights"].ndim - 1))
        units = (f["weights"] / s).reshape(-1)
        b.hist(units, bins=np.arange(-4.5, 4.51, 0.05), color="0.45", histtype="stepfilled")
        for q in range(-4, 5):
            b.axvline(q, color="C0", lw=0.6)
        b.set(xlim=(-4.5, 4.5), xlabel=f"w / S, every weight of {name} (grid = integers)", ylabel="count",
              title=f"step {f['step']}: {100 * f['changed']:.1f}% moved to another level")
        steps = [x["step"] for x in frames[:k + 1]]
        c.plot(steps, [100 * x["accuracy"] for x in frames[:k + 1]], "o-", ms=4)
        c.set(xlabel="QAT step", ylabel="test accuracy (%)", xlim=(-1, frames[-1]["step"] + 1),
              ylim=(min(100 * x["accuracy"] for x in frames) - 2, 100),
              title=f"fake-quantized model: {100 * f['accuracy']:.1f}%")

    return Animation(frames, draw, panels=3, panel_size=(3.4, 2.8), title=f"QAT at {layer.bits} bits")


# ====================================================================================================================
# 4. Distillation: soft targets as T grows; the student moving towards the teacher
# ====================================================================================================================


def temperature_frames(teacher_logits, Ts=(1, 2, 3, 5, 8, 12, 20)):
    """One frame per T: "T" and "p" = softmax(z_t / T) of one sample's teacher logits (C,)."""
    z = np.asarray(teacher_logits, dtype=np.float64).reshape(-1)
    return [dict(T=float(T), p=softmax(z, T)) for T in Ts]


def temperature_animation(teacher_logits, Ts=(1, 2, 3, 5, 8, 12, 20), label=None):
    """One panel: the teacher's distribution over the classes at temperature T, the true class in red."""
    frames = temperature_frames(teacher_logits, Ts)

    def draw(axes, f, k, frames):
        (ax,) = axes
        C = len(f["p"])
        ax.bar(range(C), f["p"], color=["C3" if c == label else "C0" for c in range(C)])
        ax.axhline(1 / C, color="gray", ls=":", lw=0.8)
        top = np.sort(f["p"])[::-1]
        ax.set(ylim=(0, 1), xticks=range(C), xlabel="class", ylabel="softmax(z_t / T)",
               title=f"T = {f['T']:g}: top two {top[0]:.2f}, {top[1]:.2f}")

    return Animation(frames, draw, panels=1, panel_size=(4.0, 2.8), title="the teacher's soft targets as T grows")


class StudentRecorder:
    """``fit`` / ``distill`` callback: the student's distribution softmax(z_s / T) on one input ``x`` (1, ...), before
    training (recorded when constructed) and after every epoch, with KL(teacher || student) at the same T."""

    def __init__(self, student, x, teacher_logits, T):
        self.x, self.T = x, float(T)
        self.p_teacher = softmax(np.asarray(teacher_logits, dtype=np.float64).reshape(-1), T)
        self.frames = []
        self._record(student, 0)

    def _record(self, model, epoch):
        was = model.training
        model.eval()
        with no_grad():
            z = np.asarray(model(self.x).data, dtype=np.float64).reshape(-1)
        model.train(was)
        q = softmax(z, self.T)
        kl = float(np.sum(self.p_teacher * (np.log(self.p_teacher + 1e-12) - np.log(q + 1e-12))))
        self.frames.append(dict(epoch=epoch, q=q, p=self.p_teacher, T=self.T, kl=kl))

    def on_epoch_end(self, model, epoch, history):
        self._record(model, epoch + 1)


def student_animation(recorder, label=None):
    """Two panels: the teacher's and the student's distributions at T, side by side per class; KL against epoch."""

    def draw(axes, f, k, frames):
        a, b = axes
        C = len(f["p"])
        a.bar(np.arange(C) - 0.2, f["p"], 0.4, color="0.6", label="teacher")
        a.bar(np.arange(C) + 0.2, f["q"], 0.4, color="C0", label="student")
        a.set(ylim=(0, 1), xticks=range(C), xlabel="class" + (f" (true: {label})" if label is not None else ""),
              ylabel=f"softmax(z / {f['T']:g})", title=f"epoch {f['epoch']}")
        a.legend(fontsize=7)
        b.plot([x["epoch"] for x in frames[:k + 1]], [x["kl"] for x in frames[:k + 1]], "o-", ms=4)
        b.set(xlabel="epoch", ylabel="KL(teacher || student)", xlim=(-0.5, frames[-1]["epoch"] + 0.5),
              ylim=(0, max(x["kl"] for x in frames) * 1.1), title=f"KL = {f['kl']:.3f}")
        b.xaxis.get_major_locator().set_params(integer=True)

    return Animation(recorder.frames, draw, panels=2, title=f"the student moving towards the teacher (T = "
                                                            f"{recorder.T:g})")


# ====================================================================================================================
# 5. Binary: latent weights and sign flips
# ====================================================================================================================


def binary_animation(recorder, layer):
    """From a ``binary.LatentWeightRecorder``: per snapshot (0 = before training, e = after epoch e), the histogram of
    layer ``layer``'s latent weights in [-1, 1], and the sign flips per epoch so far."""
    hists, flips, n = recorder.histograms[layer], recorder.flips[layer], recorder.n_weights[layer]
    frames = [dict(epoch=e, hist=h, flips=list(flips[:e])) for e, h in enumerate(hists)]
    centers = (recorder.bins[:-1] + recorder.bins[1:]) / 2
    top = max(h.max() for h in hists) * 1.05

    def draw(axes, f, k, frames):
        a, b = axes
        a.bar(centers, f["hist"], width=centers[1] - centers[0], color="C0")
        a.set(xlabel=f"latent weight W of layer {layer}", ylabel="count", ylim=(0, top),
              title="before training" if f["epoch"] == 0 else f"after epoch {f['epoch']}")
        epochs = np.arange(1, len(flips) + 1)
        b.bar(epochs[:len(f["flips"])], f["flips"], color="C3")
        b.set(xlabel="epoch", ylabel="signs flipped", xlim=(0.4, len(flips) + 0.6), ylim=(0, max(flips + [1]) * 1.1),
              xticks=epochs, title=f"{f['flips'][-1]:,} of {n:,} flipped" if f["flips"] else "no epoch yet")

    return Animation(frames, draw, panels=2, title="binary training: latent weights and their signs")


# ====================================================================================================================
# 6. Deep Compression: stage by stage
# ====================================================================================================================


class StageRecorder:
    """Call ``record(stage, model, nbytes, accuracy)`` after each Deep Compression stage: keeps the bytes, the accuracy,
    the non-zero weights of ``layer`` (a module) and, once weights are shared, its codebook."""

    def __init__(self, layer):
        self.layer = layer
        self.frames = []

    def record(self, stage, model, nbytes, accuracy):
        m = self.layer
        if hasattr(m, "weight_codebook"):
            idx = m.weight_indices.data
            codebook = m.weight_codebook.data.copy()
            w = codebook[idx[idx >= 0]]
        else:
            codebook = None
            w = np.asarray(pruning.effective(m, "weight"))  # orig * mask, or the weight itself when not pruned
            w = w[w != 0]
        self.frames.append(dict(stage=stage, bytes=int(nbytes), accuracy=float(accuracy),
                                weights=np.array(w, dtype=np.float32).reshape(-1), codebook=codebook))


def deep_compression_animation(recorder, name="layer"):
    """Two panels per stage: bytes of every stage so far (log scale); the layer's non-zero weights, with the
    previous stage's histogram in grey behind and the shared values (centroids) as red ticks."""
    frames = recorder.frames
    lo = min(f["weights"].min() for f in frames)
    hi = max(f["weights"].max() for f in frames)
    edges = np.linspace(lo, hi, 90)

    def draw(axes, f, k, frames):
        a, b = axes
        labels = [x["stage"].replace(" + ", "\n+ ") for x in frames]
        sizes = [x["bytes"] / 1024 for x in frames]
        a.bar(range(k + 1), sizes[:k + 1], color=[f"C{i}" for i in range(k + 1)])
        for i in range(k + 1):
            a.text(i, sizes[i], f"{sizes[0] / sizes[i]:.0f}x\n{100 * frames[i]['accuracy']:.1f}%", ha="center",
                   va="bottom", fontsize=7)
        a.set_yscale("log")
        a.set(ylim=(min(sizes) / 2, sizes[0] * 4), xlim=(-0.5, len(frames) - 0.5), ylabel="KB stored (log)",
              title=f"{f['stage']}: {f['bytes']:,} B")
        a.set_xticks(range(len(frames)), labels, fontsize=6)
        if k > 0:
            b.hist(frames[k - 1]["weights"], bins=edges, color="0.8", label=f"before: {frames[k - 1]['stage']}", histtype="stepfilled")
        b.hist(f["weights"], bins=edges, color="C0", alpha=0.8, label=f"now: {f['stage']}", histtype="stepfilled")
        if f["codebook"] is not None:
            for c in f["codebook"]:
                b.axvline(c, color="C3", lw=0.6, ymax=0.08)
        b.set_yscale("log")
        b.set(xlabel=f"non-zero weights of {name}", ylabel="count (log)",
              title=f"{f['weights'].size:,} weights" + (f", {len(f['codebook'])} shared values"
                                                        if f["codebook"] is not None else ""))
        b.legend(fontsize=6, loc="upper right")

    return Animation(frames, draw, panels=2, panel_size=(4.2, 3.0), title="Deep Compression, stage by stage")


# ====================================================================================================================
# 7. Autograd: the backward pass
# ====================================================================================================================


def backward_animation(root, names=None):
    """The graph of ``root`` with the gradients filling in, one node per frame (see ``graph.backward_frames``)."""
    frames = graph.backward_frames(root, names)

    def draw(axes, f, k, frames):
        graph.draw_backward_frame(root, f, names, ax=axes[0])

    return Animation(frames, draw, panels=1, panel_size=graph.graph_size(root, names),
                     title="backward: gradients in reverse topological order")
