"""The autograd graph drawing: nodes, edges, values and gradients of a known expression, and the backward frames."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import minicompress as mc  # noqa: E402
from minicompress.tensor import Add, Mul  # noqa: E402
from minicompress.viz import animate, graph  # noqa: E402


def expression():
    """y = x * x + 3 * x at x = 2: y = 10, dy/dx = 2x + 3 = 7."""
    x = mc.tensor(2.0, requires_grad=True)
    y = x * x + 3 * x
    return x, y


def box_texts(ax):
    return [t.get_text() for t in ax.texts if t.get_text()]  # arrows are empty annotations


def test_build_graph_of_a_known_expression():
    x, y = expression()
    nodes, edges = graph.build_graph(y, dict(x=x, y=y))
    ops = [n.op for n in nodes]
    assert len(nodes) == 5  # x, the constant 3, x * x, 3 * x, the sum
    assert sorted(ops) == sorted(["x", "const", "Mul", "Mul", "y = Add"])
    i = {op: k for k, op in enumerate(ops) if op != "Mul"}
    muls = [k for k, op in enumerate(ops) if op == "Mul"]
    square = next(k for k in muls if float(nodes[k].value) == 4.0)
    times3 = next(k for k in muls if float(nodes[k].value) == 6.0)
    # x * x uses x twice: two edges; 3 * x: one from each; the sum: one from each product
    assert sorted(edges) == sorted([(i["x"], square), (i["x"], square), (i["const"], times3), (i["x"], times3),
                                    (square, i["y = Add"]), (times3, i["y = Add"])])
    assert [nodes[k].depth for k in (i["x"], square, i["y = Add"])] == [0, 1, 2]
    assert float(nodes[i["y = Add"]].value) == 10.0


def test_draw_graph_shows_values_and_grads():
    x, y = expression()
    y.backward()
    ax = graph.draw_graph(y, dict(x=x, y=y))
    texts = box_texts(ax)
    assert len(texts) == 5
    assert any("x" in t and "value 2" in t and "grad 7" in t for t in texts)
    assert any(t.startswith("y = Add") and "value 10" in t and "grad 1" in t for t in texts)
    assert any(t.startswith("const") and "value 3" in t and "grad" not in t for t in texts)
    plt.close(ax.figure)


def test_backward_frames_fill_in_reverse_topological_order_with_backward_grads():
    rng = np.random.default_rng(0)
    a = mc.tensor(rng.normal(size=3), requires_grad=True)
    b = a + a
    c = (b * b).tanh().sum()
    frames = graph.backward_frames(c, dict(a=a))
    nodes, _ = graph.build_graph(c, dict(a=a))
    needs = [k for k, n in enumerate(nodes) if n.needs_grad]
    assert len(frames) == len(needs) + 1 and frames[0]["grads"] == {}
    assert [len(f["grads"]) for f in frames] == list(range(len(needs) + 1))
    assert frames[1]["node"] == len(nodes) - 1  # the output first
    assert frames[-1]["op"] == "a"  # the leaf last
    # the last frame's gradients are backward()'s, computed afresh
    a2 = mc.tensor(a.data, requires_grad=True)
    b2 = a2 + a2
    ((b2 * b2).tanh().sum()).backward()
    np.testing.assert_allclose(frames[-1]["grads"][frames[-1]["node"]], a2.grad, rtol=1e-12)
    np.testing.assert_allclose(a.grad, a2.grad, rtol=1e-12)  # backward ran once, not accumulated
    texts = box_texts(graph.draw_backward_frame(c, frames[-1], dict(a=a)))
    assert sum("grad ?" in t for t in texts) == 0
    texts = box_texts(graph.draw_backward_frame(c, frames[1], dict(a=a)))
    assert sum("grad ?" in t for t in texts) == len(needs) - 1
    plt.close("all")


def test_backward_animation_frames_and_gif(tmp_path):
    x, y = expression()
    anim = animate.backward_animation(y, dict(x=x, y=y))
    assert len(anim) == 5  # before, then y, the two products, x
    fig = anim.figure(len(anim) - 1)
    assert any("grad 7" in t for t in box_texts(fig.axes[0]))
    path = anim.gif(tmp_path / "backward.gif", dpi=30)
    from PIL import Image
    with Image.open(path) as im:
        assert im.n_frames == 5
    with pytest.raises(FileExistsError, match="overwrite=True"):
        anim.gif(path)
    anim.gif(path, dpi=20, overwrite=True)
    with pytest.raises(ValueError, match=r"Animation.gif\(fps=0\): must be a number"):
        anim.gif(tmp_path / "other.gif", fps=0)
    with pytest.raises(ValueError, match=r"key_frames\(n=0\)"):
        anim.key_frames(0)
    with pytest.raises(ValueError, match="no frames were recorded"):
        animate.Animation([], lambda *a: None, title="empty")
    plt.close("all")


def test_function_source_side_by_side():
    text = graph.function_source(Mul)
    lines = text.splitlines()
    assert lines[0].startswith("class Mul")
    assert "def forward(ctx, a, b):" in lines[2] and "def backward(ctx, grad):" in lines[2]
    x, y = expression()
    assert graph.functions_used(y) == [Mul, Add]


def test_build_graph_refuses_a_constant():
    with pytest.raises(ValueError, match="requires_grad=True"):
        graph.build_graph(mc.tensor(1.0))


def test_a_graph_of_about_30_nodes_has_no_overlapping_boxes():
    import itertools
    rng = np.random.default_rng(0)
    x = mc.tensor(rng.normal(size=(1, 3)))
    W1, b1 = mc.tensor(rng.normal(size=(3, 4)), requires_grad=True), mc.tensor(np.zeros(4), requires_grad=True)
    W2, b2 = mc.tensor(rng.normal(size=(4, 2)), requires_grad=True), mc.tensor(np.zeros(2), requires_grad=True)
    h2 = ((x @ W1 + b1).relu() @ W2 + b2).tanh()
    loss = ((h2 - 1.0) * (h2 - 1.0)).sum() + (W1 * W1).sum() * 0.01 + (W2 * W2).sum() * 0.01
    loss.backward()
    names = dict(x=x, W1=W1, b1=b1, W2=W2, b2=b2, loss=loss)
    assert len(graph.build_graph(loss, names)[0]) == 25
    ax = graph.draw_graph(loss, names)
    boxes = [t for t in ax.texts if t.get_text()]
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.canvas.draw()
    extents = [t.get_bbox_patch().get_window_extent(renderer) for t in boxes]
    assert len(extents) == 25
    assert not any(a.overlaps(b) for a, b in itertools.combinations(extents, 2))
    plt.close("all")
