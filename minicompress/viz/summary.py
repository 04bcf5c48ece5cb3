"""The demo's one-picture summary: every technique placed by compression ratio and test accuracy.

Labels are placed so that none overlaps another label or a point, by a greedy search over a ring of positions
around each point (section 2): no extra dependency (the optional ``adjustText`` is not needed).
"""

import itertools

import matplotlib.pyplot as plt

# ====================================================================================================================
# 1. The scatter
# ====================================================================================================================


def plot_summary(rows, ax=None, title="accuracy against compression"):
    """Scatter of test accuracy (%) against compression ratio (log scale), one labelled point per row.

    rows: dicts with "technique", "accuracy" in [0, 1] and "ratio" (the demo's table rows).
    """
    new_figure = ax is None
    if new_figure:
        _, ax = plt.subplots(figsize=(7.5, 4.6))
    points = [(row["ratio"], 100 * row["accuracy"]) for row in rows]
    for i, (x, y) in enumerate(points):
        ax.scatter([x], [y], s=40, color=f"C{i % 10}", zorder=3)
    ax.set_xscale("log")
    ax.margins(x=0.35, y=0.15)  # room for the labels of the outermost points
    ax.set_xlabel("compression ratio (dense float32 bytes / stored bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    if new_figure:
        ax.figure.tight_layout()  # before placing: the layout changes the distances between the points
    place_labels(ax, points, [row["technique"] for row in rows])
    return ax


# ====================================================================================================================
# 2. Labels that do not overlap
# ====================================================================================================================

# offsets in points, nearest first: right, left, above, below, then the diagonals, then twice as far
_RING = [(8, -4), (-8, -4), (0, 8), (0, -14), (8, 8), (-8, 8), (8, -14), (-8, -14)]
_OFFSETS = _RING + [(2 * dx, 2 * dy) for dx, dy in _RING] + [(3 * dx, 3 * dy) for dx, dy in _RING]


def _overlaps(a, b, pad=2):
    return not (a.x1 + pad < b.x0 or b.x1 + pad < a.x0 or a.y1 + pad < b.y0 or b.y1 + pad < a.y0)


def place_labels(ax, points, labels, fontsize=8):
    """Annotate each (x, y) in data coordinates with its label, choosing for each the first offset (nearest
    first) whose text box overlaps no label placed before it and no point. Returns the list of annotations."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()  # fixes the axes limits, hence the display positions of the points
    dots = [ax.transData.transform(p) for p in points]
    placed, texts = [], []
    for (x, y), label in zip(points, labels):
        text = None
        for dx, dy in _OFFSETS:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            if text is not None:
                text.remove()
            text = ax.annotate(label, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                               ha=ha, arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6) if abs(dx) > 8 else None)
            box = text.get_window_extent(renderer)
            inside = ax.get_window_extent(renderer)
            clear = not any(_overlaps(box, other) for other in placed)
            clear = clear and not any(box.x0 - 3 <= px <= box.x1 + 3 and box.y0 - 3 <= py <= box.y1 + 3
                                      for px, py in dots)
            if clear and inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1:
                break
        placed.append(text.get_window_extent(renderer))
        texts.append(text)
    return texts


def labels_overlap(texts):
    """True if any two of the annotations' boxes overlap (used by the tests)."""
    renderer = texts[0].figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    return any(_overlaps(a, b, pad=0) for a, b in itertools.combinations(boxes, 2))
