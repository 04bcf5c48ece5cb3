"""The demo's one-picture summary: every technique placed by compression ratio and test accuracy."""

import matplotlib.pyplot as plt


def plot_summary(rows, ax=None, title="accuracy against compression"):
    """Scatter of test accuracy (%) against compression ratio (log scale), one labelled point per row.

    rows: dicts with "technique", "accuracy" in [0, 1] and "ratio" (the demo's table rows).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.2))
    for i, row in enumerate(rows):
        x, y = row["ratio"], 100 * row["accuracy"]
        ax.scatter([x], [y], s=40, color=f"C{i % 10}", zorder=3)
        ax.annotate(row["technique"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.3, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel("compression ratio (dense float32 bytes / stored bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    return ax
