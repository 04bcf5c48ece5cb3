"""The computation graph of a Tensor, drawn; and the backward pass as frames in which the gradients fill in.

1. ``build_graph(root)``: the nodes (operation, value, gradient) and edges input -> output of the graph below
   ``root``, with each node's depth, the length of the longest path from a leaf to it.
2. ``draw_graph(root)``: one box per node, in columns by depth (leaves on the left, ``root`` on the right), an
   arrow per edge. Readable up to about 30 nodes.
3. ``backward_frames(root)``: runs the library's own ``root.backward()`` once, then reveals each node's gradient
   in the order ``backward`` completes them: reverse topological order, from ``root`` back to the leaves. A node's
   gradient is final when its turn comes, because every node that uses it came earlier in that order.
4. ``function_source(fn)``: a ``Function``'s ``forward`` and ``backward``, printed side by side.
"""

import inspect
import textwrap
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np

from ..tensor import Tensor, topological_order

# ====================================================================================================================
# 1. The graph as data
# ====================================================================================================================


@dataclass
class Node:
    """One box of the drawing: ``tensor`` (None for a plain number), its label, depth and whether it gets a grad."""

    tensor: object
    op: str
    value: np.ndarray
    depth: int = 0
    needs_grad: bool = False
    inputs: list = field(default_factory=list)  # indices of the input nodes


def _short(a, digits=4):
    """A value in a few characters: a number, or the shape and the first entries of an array."""
    a = np.asarray(a)
    if a.size == 1:
        return f"{float(a.reshape(-1)[0]):.{digits}g}"
    shown = 3 if a.size == 3 else 2  # a short vector in full, else its first two entries
    head = ", ".join(f"{v:.2g}" for v in a.reshape(-1)[:shown])
    return f"{a.shape} [{head}{', ...' if a.size > shown else ''}]"


def _operand_names(fn, count):
    """The names of forward's arguments after ctx (``*arrays`` counts as one name per input)."""
    params = list(inspect.signature(fn.forward).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return ["a"] * count
    return [p.name for p in params]


def build_graph(root, names=None):
    """Nodes and edges of the graph below ``root`` (a Tensor that requires grad).

    names: optional dict label -> Tensor (e.g. ``dict(x=x)``) to name the leaves. Returns (nodes, edges):
    nodes in topological order (each after its inputs, ``root`` last), edges as (input index, output index).
    Inputs that need no gradient (constants such as the 3 in ``3 * x``) are nodes too, with op "const".
    """
    if not isinstance(root, Tensor) or not root.requires_grad:
        raise ValueError("build_graph(root): root must be a Tensor with requires_grad=True, the result of operations "
                         "on tensors created with requires_grad=True")
    label_of = {id(t): name for name, t in (names or {}).items()}
    order = topological_order(root)
    index = {}
    nodes, edges = [], []

    def add(t, op):
        index[id(t)] = len(nodes)
        value = t.data if isinstance(t, Tensor) else np.asarray(t)
        nodes.append(Node(t, op, value, needs_grad=isinstance(t, Tensor) and t.requires_grad))
        return index[id(t)]

    for t in order:
        operands = _operand_names(t._fn, len(t._inputs)) if t._fn is not None else ()
        for name, parent in zip(operands, t._inputs):
            if isinstance(parent, Tensor) and parent.requires_grad:
                continue  # already added: topological order puts every input first
            # constants are drawn: arrays, and the numbers of arithmetic (the 3 of 3 * x, an operand a or b);
            # other plain values are settings (axis, keepdims, stride), not nodes
            number = isinstance(parent, (int, float)) and not isinstance(parent, bool) and name in ("a", "b")
            if (isinstance(parent, (Tensor, np.ndarray)) or number) and id(parent) not in index:
                add(parent, label_of.get(id(parent), "const"))
        op = t._fn.__name__ if t._fn is not None else label_of.get(id(t), "leaf")
        if t._fn is not None and id(t) in label_of:
            op = f"{label_of[id(t)]} = {op}"
        i = add(t, op)
        for parent in t._inputs:
            if id(parent) in index:
                nodes[i].inputs.append(index[id(parent)])
                edges.append((index[id(parent)], i))
    for node in nodes:  # longest path from a leaf: inputs always come first in the list
        node.depth = max((nodes[j].depth + 1 for j in node.inputs), default=0)
    return nodes, edges


# ====================================================================================================================
# 2. Drawing: columns by depth
# ====================================================================================================================


_CHAR_W, _LINE_H = 0.068, 0.14  # inches per character and per line of 8-point monospace text


def _labels(nodes, grads):
    """The text of each box: operation, value and (for nodes that get one) gradient, "?" while unknown."""
    out = []
    for i, node in enumerate(nodes):
        lines = [node.op, f"value {_short(node.value)}"]
        if node.needs_grad:
            lines.append(f"grad {_short(grads[i])}" if i in grads else "grad ?")
        out.append("\n".join(lines))
    return out


def _layout(nodes):
    """(x, y) in inches per node, and the (width, height) of the drawing.

    Columns by depth, each as wide as its widest box (a gradient takes as many characters as the value of the same
    shape, so the layout does not move while gradients fill in); in a column, nodes sorted by the mean height of
    their inputs, which keeps most arrows short and uncrossed; rows one box height apart.
    """
    widths = [max(len(node.op), 5 + len(_short(node.value))) * _CHAR_W + 0.25 for node in nodes]
    pitch = 3 * _LINE_H + 0.35
    columns = {}
    for i, node in enumerate(nodes):
        columns.setdefault(node.depth, []).append(i)
    xy, x = {}, 0.0
    for depth in sorted(columns):
        members = columns[depth]
        if depth:
            members.sort(key=lambda i: np.mean([xy[j][1] for j in nodes[i].inputs]) if nodes[i].inputs else 0)
        column_width = max(widths[i] for i in members)
        for row, i in enumerate(members):
            xy[i] = (x + column_width / 2, ((len(members) - 1) / 2 - row) * pitch)
        x += column_width + 0.45  # room for the arrows between columns
    height = max(len(m) for m in columns.values()) * pitch
    return xy, (x - 0.45, height)


def graph_size(root, names=None):
    """(width, height) in inches of a figure (or a panel of ``plt.subplots``, whose axes take about 3/4 of it) in
    which ``draw_graph`` draws the graph below ``root`` at its natural size, so that no two boxes overlap."""
    _, (w, h) = _layout(build_graph(root, names)[0])
    return max((w + 0.3) / 0.75 + 0.2, 5.5), (h + 0.2) / 0.75 + 0.3


def draw_graph(root, names=None, grads=None, ax=None, title=None):
    """Draw the graph below ``root``: one box per node with its operation, value and gradient; arrows input -> output.

    grads: dict node index -> gradient to show (default: each tensor's current ``.grad``; "?" where there is none
    yet, nothing for constants). ``ax``: axes to draw on, ideally of ``graph_size(root)`` inches (a new figure of
    that size if None). Returns the axes.
    """
    nodes, edges = build_graph(root, names)
    if grads is None:
        grads = {i: n.tensor.grad for i, n in enumerate(nodes) if n.needs_grad and n.tensor.grad is not None}
    xy, (width, height) = _layout(nodes)
    if ax is None:  # axes of exactly the drawing's size in inches: data units are inches, text fits its box
        W, H = max(width + 0.5, 5.5), height + 0.8  # at least as wide as the title
        left = (W - width - 0.3) / 2
        ax = plt.figure(figsize=(W, H)).add_axes([left / W, 0.1 / H, (width + 0.3) / W, (height + 0.2) / H])
    boxes = []
    for i, (node, text) in enumerate(zip(nodes, _labels(nodes, grads))):
        color = "#dbe9f6" if getattr(node.tensor, "_fn", None) is not None else "#f2f2f2"
        if node.needs_grad and i in grads:
            color = "#fde0c5"  # gradient known: orange
        boxes.append(ax.text(*xy[i], text, ha="center", va="center", fontsize=8, family="monospace",
                             bbox=dict(boxstyle="round,pad=0.3", fc=color, ec="0.4")))
    for a, b in sorted(set(edges)):  # an input used twice (x * x) is one arrow, clipped at both boxes' edges
        ax.annotate("", xy=xy[b], xytext=xy[a], arrowprops=dict(
            arrowstyle="-|>", color="0.45", lw=1, mutation_scale=10, shrinkA=1, shrinkB=1,
            patchA=boxes[a].get_bbox_patch(), patchB=boxes[b].get_bbox_patch()))
    ax.set_xlim(-0.15, width + 0.15)
    ax.set_ylim(-height / 2 - 0.1, height / 2 + 0.1)
    ax.axis("off")
    ax.set_title(title or f"graph of {len(nodes)} nodes: leaves on the left, the output on the right", fontsize=10)
    return ax


# ====================================================================================================================
# 3. The backward pass, frame by frame
# ====================================================================================================================


def backward_frames(root, names=None):
    """Run ``root.backward()`` and return the frames of the backward pass.

    Every gradient below ``root`` is reset first (``.grad = None``), so the values are those of this one call.
    Frame 0 shows no gradient; frame k shows the gradients of the first k nodes in reverse topological order, the
    order in which ``backward`` finishes them. Returns a list of dicts: "grads" (node index -> gradient), "node"
    (the index just completed, None on frame 0), "op" (its label).
    """
    nodes, _ = build_graph(root, names)
    tensors = [n.tensor for n in nodes if n.needs_grad]
    for t in tensors:
        t.grad = None
    root.backward()
    position = {id(t): i for i, t in enumerate(n.tensor for n in nodes)}
    frames, shown = [dict(grads={}, node=None, op=None)], {}
    for t in reversed(topological_order(root)):
        i = position[id(t)]
        shown[i] = t.grad
        frames.append(dict(grads=dict(shown), node=i, op=nodes[i].op))
    return frames


def draw_backward_frame(root, frame, names=None, ax=None):
    """One frame of ``backward_frames``: the graph with the gradients known so far, the one just completed named."""
    step = (f"backward: the gradient of {frame['op']} is complete" if frame["node"] is not None
            else "before backward: no gradient yet")
    return draw_graph(root, names, grads=frame["grads"], ax=ax, title=step)


# ====================================================================================================================
# 4. A Function's source: forward and backward side by side
# ====================================================================================================================


def function_source(fn):
    """The ``forward`` and ``backward`` of the Function class ``fn`` as one string, in two columns."""
    left = textwrap.dedent(inspect.getsource(fn.forward)).splitlines()
    right = textwrap.dedent(inspect.getsource(fn.backward)).splitlines()
    width = max(len(line) for line in left)
    doc = inspect.getdoc(fn)
    head = [f"class {fn.__name__}" + (f": {doc.splitlines()[0]}" if doc else "")]
    rows = [f"{a[:width]:<{width}} | {b}" for a, b in zip(left + [""] * len(right), right + [""] * len(left))]
    return "\n".join(head + [r.rstrip(" |") for r in rows[:max(len(left), len(right))]])


def functions_used(root):
    """The distinct Function classes in the graph below ``root``, in the order the forward pass first used them."""
    seen = {}
    for t in topological_order(root):
        if t._fn is not None:
            seen.setdefault(t._fn.__name__, t._fn)
    return list(seen.values())
