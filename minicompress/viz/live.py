"""Live controls for a lecture: move a slider, and the picture is redrawn from the library's real computation.

1. Views: plain functions ``view(axes, value, ...)`` that compute with the library on the notebook's model and draw
   on a row of axes; each returns a dict of what it computed (so it can be tested without a kernel).
2. ``updater(view, panels, **fixed)``: the slider's update function, ``update(**values) -> (figure, result)``.
3. ``live(view, controls, static, ...)``: in a notebook, the static picture (the view at a few values, one per row:
   readable on GitHub and on paper), then, with ipywidgets and a live kernel, the controls. Without them it shows
   the static picture only, and says why.
"""

import copy

import matplotlib.pyplot as plt
import numpy as np

from .. import binary, pruning
from .. import quantization as Q
from ..distillation import kd_loss, softmax
from ..tensor import Tensor, no_grad
from ..train import predict

# ====================================================================================================================
# 1. Views
# ====================================================================================================================


def _accuracy(model, x, y):
    return float(np.mean(predict(model, x).argmax(axis=1) == y))


def pruning_view(axes, model, amount, x, y, layer=1):
    """Prune a copy of ``model``: every Linear / Conv2d layer by I(w) = |w| at ``amount`` (``l1_unstructured``).
    Panels: layer ``layer``'s histogram with the threshold; its mask (black = pruned). Accuracy (%) on (x, y) in the
    title. Returns {"amount", "sparsity" (of that layer), "accuracy"}."""
    pruned = copy.deepcopy(model)
    for module, name in pruning.prunable(pruned):
        pruning.l1_unstructured(module, name, float(amount))
    module = pruned[layer]
    w, mask = module.weight_orig.data, module.weight_mask.data
    accuracy = _accuracy(pruned, x, y)
    a, b = axes
    a.hist(w.reshape(-1), bins=80, color="0.6", histtype="stepfilled")
    cut = np.abs(w[mask == 0])
    if cut.size:
        a.axvspan(-cut.max(), cut.max(), color="C3", alpha=0.15)
    a.set(xlabel=f"weight of layer {layer}", ylabel="count",
          title=f"amount {amount:.2f}: accuracy {100 * accuracy:.1f}%")
    b.imshow(mask.reshape(mask.shape[0], -1), cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    b.set(xlabel="input", ylabel="output unit", title=f"mask of layer {layer}: {100 * (1 - mask.mean()):.1f}% pruned")
    return dict(amount=float(amount), sparsity=float(1 - mask.mean()), accuracy=accuracy)


def quantization_view(axes, model, bits, per_channel, x, y, layer=1):
    """``quantize_dynamic(model, bits, per_channel)``: panels: layer ``layer``'s dequantized weights S (q - Z) over
    the float ones; the squared error per output channel. Returns {"bits", "per_channel", "accuracy", "mse"}."""
    qmodel = Q.quantize_dynamic(model, bits=int(bits), per_channel=bool(per_channel))
    w = model[layer].weight.data
    ql = qmodel[layer]
    w_hat = (ql.weight_q.astype(np.float32) - ql.weight_zero_point[:, None]) * ql.weight_scale[:, None]
    err = np.mean((w_hat - w) ** 2, axis=1)
    accuracy = _accuracy(qmodel, x, y)
    mode = "per channel" if per_channel else "per tensor"
    a, b = axes
    edges = np.linspace(w.min(), w.max(), 80)
    a.hist(w.reshape(-1), bins=edges, color="0.75", label="float32", histtype="stepfilled")
    a.hist(w_hat.reshape(-1), bins=edges, color="C0", alpha=0.7, label=f"{bits}-bit", histtype="stepfilled")
    a.set_yscale("log")
    a.set(xlabel=f"weight of layer {layer}", ylabel="count (log)",
          title=f"{bits} bits {mode}: accuracy {100 * accuracy:.1f}%")
    a.legend(fontsize=7)
    b.semilogy(err, ".", ms=3)
    b.set(xlabel="output channel", ylabel="mean squared error", title=f"MSE {err.mean():.2e}")
    return dict(bits=int(bits), per_channel=bool(per_channel), accuracy=accuracy, mse=float(err.mean()))


def distillation_view(axes, student_logits, teacher_logits, label, T, alpha):
    """One sample: panels: teacher and student distributions at T; the gradient of
    ``kd_loss(z_s, z_t, y, T, alpha)`` with respect to each student logit (its own backward).
    Returns {"T", "alpha", "loss", "grad"}."""
    z_s = Tensor(np.asarray(student_logits, dtype=np.float64).reshape(1, -1), requires_grad=True)
    z_t = np.asarray(teacher_logits, dtype=np.float64).reshape(1, -1)
    loss = kd_loss(z_s, z_t, np.array([label]), float(T), float(alpha))
    loss.backward()
    C = z_t.shape[1]
    a, b = axes
    a.bar(np.arange(C) - 0.2, softmax(z_t[0], T), 0.4, color="0.6", label="teacher")
    a.bar(np.arange(C) + 0.2, softmax(z_s.data[0], T), 0.4, color="C0", label="student")
    a.set(ylim=(0, 1), xticks=range(C), xlabel=f"class (true: {label})", ylabel="softmax(z / T)",
          title=f"T = {T:g}, alpha = {alpha:g}: loss {loss.item():.3f}")
    a.legend(fontsize=7)
    b.bar(range(C), z_s.grad[0], color=["C3" if c == label else "C0" for c in range(C)])
    b.axhline(0, color="gray", lw=0.6)
    b.set(xticks=range(C), xlabel="class", ylabel="dL / dz_s", title="gradient on the student's logits")
    return dict(T=float(T), alpha=float(alpha), loss=float(loss.item()), grad=z_s.grad[0].copy())


def binary_view(axes, models, mode, x, y):
    """``models``: {"weights": a BinaryConnect MLP, "weights + activations": a BNN}, both trained in the notebook.
    Panels: what the second binary layer takes as input on 200 test images (real values, or their sign +-1 when
    activations are binary); accuracy (%) of both, the chosen one in red, with its packed bytes.
    Returns {"mode", "layer", "accuracy", "packed_bytes", "binary_inputs"}."""
    model = models[mode]
    model.eval()
    name, second = binary.binary_layers(model)[1]
    with no_grad():
        h = model[:int(name)](Tensor(x[:200])).data
    signed = bool(second.binary_activations)
    if signed:
        h = binary.sign(h)
    accuracy = _accuracy(model, x, y)
    packed = binary.pack_model(model).nbytes  # bits, scales and batch norms: the whole packed model
    a, b = axes
    a.hist(h.reshape(-1), bins=60, color="C0", histtype="stepfilled")
    a.set(xlabel=f"input of layer {name}" + (" (its sign)" if signed else ""), ylabel="count",
          title=f"{mode}: activations {'+-1' if signed else 'real'}")
    names = list(models)
    accs = [accuracy if n == mode else _accuracy(models[n], x, y) for n in names]
    b.bar(range(len(names)), [100 * v for v in accs], color=["C3" if n == mode else "0.7" for n in names])
    b.set_xticks(range(len(names)), names, fontsize=8)
    b.set(ylim=(0, 100), ylabel="test accuracy (%)", title=f"{100 * accuracy:.1f}%, {packed:,} B packed")
    return dict(mode=mode, layer=name, accuracy=accuracy, packed_bytes=int(packed), binary_inputs=signed)


def graph_view(axes, f, x):
    """The graph of y = f(x) at the scalar ``x``, after ``y.backward()``: every node's value and gradient.
    Returns {"x", "y", "grad"} (grad = dy/dx from backward)."""
    from .graph import draw_graph

    t = Tensor(np.float64(x), requires_grad=True)
    y = f(t)
    y.backward()
    draw_graph(y, dict(x=t, y=y), ax=axes[0], title=f"x = {x:g}: y = {y.item():.4g}, dy/dx = {float(t.grad):.4g}")
    return dict(x=float(x), y=float(y.item()), grad=float(t.grad))


def sharing_view(axes, model, bits, x, y, layer=1):
    """Weight sharing on a copy of ``model`` (pruned or not): pruning made permanent, then
    ``share_model_weights(copy, bits)``, no fine-tuning. Panels: layer ``layer``'s non-zero weights before (grey)
    and after (the 2^bits centroids); accuracy (%) and fixed-width bytes in the title.
    Returns {"bits", "k", "accuracy", "bytes"}."""
    from ..pipeline import fixed_width_bytes

    shared = copy.deepcopy(model)
    for module, name in pruning.prunable(shared):
        if pruning.is_pruned(module):
            pruning.remove(module, name)
    before = np.asarray(shared[layer].weight.data)
    before = before[before != 0]
    Q.share_model_weights(shared, int(bits))
    codebook = shared[layer].weight_codebook.data
    idx = shared[layer].weight_indices.data
    after = codebook[idx[idx >= 0]]
    accuracy = _accuracy(shared, x, y)
    nbytes = fixed_width_bytes(shared)
    a, b = axes
    edges = np.linspace(before.min(), before.max(), 90)
    a.hist(before, bins=edges, color="0.75", label="before sharing", histtype="stepfilled")
    a.hist(after, bins=edges, color="C0", alpha=0.8, label=f"after: {len(codebook)} values", histtype="stepfilled")
    a.set_yscale("log")
    a.set(xlabel=f"non-zero weights of layer {layer}", ylabel="count (log)",
          title=f"{bits} bits: accuracy {100 * accuracy:.1f}%")
    a.legend(fontsize=7)
    b.stem(codebook, np.bincount(idx[idx >= 0], minlength=len(codebook)), basefmt=" ")
    b.set(xlabel="shared value (centroid)", ylabel="weights using it", title=f"{nbytes:,} B with fixed-width codes")
    return dict(bits=int(bits), k=len(codebook), accuracy=accuracy, bytes=int(nbytes))


# ====================================================================================================================
# 2. The update function of a slider
# ====================================================================================================================


def updater(view, panels=2, panel_size=(3.8, 2.8), **fixed):
    """The function a slider calls: ``update(**values)`` draws ``view`` with ``fixed`` and ``values`` on a new row of
    ``panels`` axes and returns (figure, the view's result)."""

    def update(**values):
        fig, axes = plt.subplots(1, panels, figsize=(panel_size[0] * panels, panel_size[1]))
        result = view(list(np.atleast_1d(axes)), **fixed, **values)
        fig.tight_layout()
        return fig, result

    return update


def static_picture(view, static, panels=2, panel_size=(3.8, 2.8), **fixed):
    """The view at each dict of values in ``static``, one row each: the picture shown where sliders cannot move."""
    fig, axes = plt.subplots(len(static), panels, figsize=(panel_size[0] * panels, panel_size[1] * len(static)),
                             squeeze=False)
    for row, values in zip(axes, static):
        view(list(row), **fixed, **values)
    fig.tight_layout()
    return fig


def _live_kernel():
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def live(view, controls, static, panels=2, panel_size=(3.8, 2.8), **fixed):
    """Show the static picture, then (ipywidgets installed and a live kernel) one control per entry of ``controls``:
    name -> list of values (a slider over them; a toggle when they are strings or booleans).
    Returns the ipywidgets.interactive object, or None when only the static picture could be shown."""
    from IPython.display import display

    fig = static_picture(view, static, panels, panel_size, **fixed)
    display(fig)
    plt.close(fig)
    try:
        import ipywidgets
    except ImportError:
        print("(ipywidgets is not installed: the static picture above stands in for the slider; "
              "pip install -e '.[notebooks]' for the live version)")
        return None
    if not _live_kernel():
        print("(no live kernel: the static picture above stands in for the slider)")
        return None
    update = updater(view, panels, panel_size, **fixed)

    def redraw(**values):
        fig, _ = update(**values)
        plt.show()

    widgets = {}
    for name, values in controls.items():
        values = list(values)
        if all(isinstance(v, (str, bool, np.bool_)) for v in values):
            widgets[name] = ipywidgets.ToggleButtons(options=values, description=name)
        else:
            widgets[name] = ipywidgets.SelectionSlider(options=values, value=values[len(values) // 2],
                                                       description=name, continuous_update=False)
    panel = ipywidgets.interactive(redraw, **widgets)
    display(panel)
    return panel
