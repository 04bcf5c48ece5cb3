"""`minicompress demo`: train a small model on real digits, let every technique compress it, print one table.

How a technique adds its row
----------------------------
Any module minicompress/commands/<name>.py listed in minicompress.cli.COMMANDS may define

    def demo_row(ctx: DemoContext) -> dict | list[dict]

The demo trains the baseline once, then calls each demo_row in COMMANDS order, prints the rows as a table
and, with --out DIR, writes DIR/report.md (and the table as DIR/report.json). Fields of `ctx`:

    ctx.model          the trained baseline (spec ctx.spec). Read it, never modify it: take ctx.copy_model().
    ctx.copy_model()   an independent copy of the baseline (same spec, same parameters and buffers).
    ctx.train_loader   DataLoader over the training images (shuffled, seeded), for fine-tuning.
    ctx.test_loader    DataLoader over the test images, in order.
    ctx.x_train, ctx.y_train, ctx.x_test, ctx.y_test   raw images uint8 (N, 28, 28) and labels int64 (N,).
    ctx.x_test_input   the test images as the model sees them: float32 (N, 1, 28, 28), standardised.
    ctx.mean, ctx.std  the standardisation x = (pixel / 255 - mean) / std used by both loaders.
    ctx.dataset        "mnist" or "fashion-mnist".
    ctx.baseline       the baseline's row (dict below); ctx.dense_bytes = its float32 parameter bytes.
    ctx.epochs         epochs the baseline was trained for (scale fine-tuning to it).
    ctx.quick          True under --quick: do the least work that still runs every line (a smoke test; the
                       numbers mean nothing).
    ctx.seed           the run's seed; ctx.progress: whether to show progress bars.
    ctx.out_dir        a Path where figures may be saved, or None without --out.
    ctx.accuracy(predict)   test accuracy of predict(x float32 (B, 1, 28, 28)) -> logits (B, 10) ndarray.
    ctx.infer_ms(predict)   milliseconds predict takes for the whole test set (best of ctx.timing_runs runs:
                       3, or 1 under --quick).
    ctx.model_predict(model) a predict function running `model` in eval mode under no_grad.
    ctx.log(message)   print a line, indented under the table's progress output.

The row dict (docs/CONVENTIONS.md, section 6, "Sizes"):

    technique  str    short name shown in the table, e.g. "pruning 90% + fine-tune"
    accuracy   float  test accuracy in [0, 1]
    bytes      int    size of what would be stored or shipped (values, masks/indices, scales, codebooks)
    ratio      float  ctx.dense_bytes / bytes; filled in from bytes when absent
    infer_ms   float  ctx.infer_ms(...) of the compressed model's own inference (None if not measured)
    note       str    one short line: what was done, what to notice
    figure     str    optional: a file name inside ctx.out_dir, shown in the report
"""
from __future__ import annotations

import copy
import importlib
import json
import time
from pathlib import Path

import numpy as np

import minicompress as mc
from minicompress import checkpoint, cli, models, optim
from minicompress.commands._paths import add_force_argument, check_output
from minicompress.commands import add_data_arguments, load_dataset, loaders, positive_int
from minicompress.train import fit, set_seed

COLUMNS = (("technique", "technique"), ("accuracy", "test acc"), ("bytes", "size"), ("ratio", "ratio"),
           ("infer_ms", "infer ms"), ("note", "note"))


# Why the integer rows are not faster here, one line per claim; printed under the table when the row is there.
SPEED_NOTES = {
    "quantize": [
        "int8 is not faster in NumPy: BLAS has no int8 matrix product, so the integer layers emulate one with float "
        "BLAS in exact blocks, then add passes to quantize and requantize every activation: more work than float32.",
        "int8 is faster on real hardware: int8 dot-product instructions (x86 VNNI, Arm SDOT, GPU tensor cores) do "
        "4 multiply-adds where float32 does 1, on data 4x smaller in memory and cache.",
    ],
    "binarize": [
        "binary is not faster in NumPy: XOR and popcount run as separate whole-array passes, one per 64-bit word, "
        "each writing a (batch x outputs) temporary to memory.",
        "binary is faster on real hardware: one XOR + POPCNT instruction pair does 64 binary multiply-adds in "
        "registers (XNOR-Net reports 58x faster convolutions on CPUs).",
    ],
}


def units_line(n_test: int, runs: int) -> str:
    """What the table's columns measure (infer_ms takes the best of ``runs`` runs)."""
    timing = "one run" if runs == 1 else f"best of {runs} runs"
    return (f"units: size in KB (1 KB = 1,024 bytes) of what would be stored; ratio = dense float32 size / size; "
            f"infer ms = milliseconds to classify all {n_test:,} test images (batches of 500, {timing}) "
            "in NumPy on this machine")


def note_lines(names) -> list[str]:
    """The speed notes of the techniques that ran, as "note: ..." lines."""
    return [f"note: {line}" for name in names for line in SPEED_NOTES.get(name, [])]


class DemoContext:
    """What a technique's demo_row(ctx) receives; the fields are listed in this module's docstring."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def copy_model(self):
        return copy.deepcopy(self.model)

    def model_predict(self, model):
        def predict(x):
            was_training = model.training
            model.eval()
            try:
                with mc.no_grad():
                    return np.asarray(model(x).data)
            finally:
                model.train(was_training)
        return predict

    def _batches(self):
        for i in range(0, len(self.x_test_input), 500):
            yield self.x_test_input[i:i + 500], self.y_test[i:i + 500]

    def accuracy(self, predict) -> float:
        correct = sum(int((np.asarray(predict(x)).argmax(axis=1) == y).sum()) for x, y in self._batches())
        return correct / len(self.y_test)

    def infer_ms(self, predict) -> float:
        best = float("inf")
        for _ in range(self.timing_runs):
            start = time.perf_counter()
            for x, _ in self._batches():
                predict(x)
            best = min(best, time.perf_counter() - start)
        return 1000 * best

    def log(self, message: str) -> None:
        print(f"  {message}")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "demo", help="train a small model and compress it with every technique",
        description="Train LeNet-300-100 on the MNIST subset shipped with minicompress (about 15 s on 2 cores), "
                    "then let each compression technique compress it, and print accuracy, size and speed.")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 1 epoch on 2,000 images, seconds only")
    p.add_argument("--epochs", type=positive_int, default=6, help="baseline training epochs (default: %(default)s)")
    p.add_argument("--model", default="lenet300_100", metavar="SPEC", help="baseline model (default: %(default)s)")
    add_data_arguments(p)
    p.add_argument("--only", metavar="NAMES", help="comma-separated technique commands to run (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling (default: %(default)s)")
    p.add_argument("--out", type=Path, metavar="DIR", default=Path("minicompress-demo"),
                   help="folder for report.md, report.json, summary.png, baseline.npz and the compressed files "
                        "(default: %(default)s)")
    add_force_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def technique_modules(only: str | None):
    """(name, module) of every command module in cli.COMMANDS that defines demo_row, optionally filtered."""
    found = [(name, importlib.import_module(f"minicompress.commands.{name}")) for name in cli.COMMANDS]
    found = [(name, module) for name, module in found if hasattr(module, "demo_row")]
    if only is None:
        return found
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = sorted(set(wanted) - {name for name, _ in found})
    if unknown:
        raise cli.CLIError(f"--only {only}: no demo for {unknown}; available: {[name for name, _ in found]}")
    return [(name, module) for name, module in found if name in wanted]


def format_cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "accuracy":
        return f"{value:.2%}"
    if key == "bytes":
        return f"{value / 1024:,.1f} KB"
    if key == "ratio":
        return f"{value:.1f}x"
    if key == "infer_ms":
        return f"{value:.1f}"
    return str(value)


def table_lines(rows: list[dict], markdown: bool = False) -> list[str]:
    """The rows as an aligned text table, or as a Markdown table."""
    header = [title for _, title in COLUMNS]
    cells = [[format_cell(key, row.get(key)) for key, _ in COLUMNS] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in cells]
    widths = [max(len(x) for x in column) for column in zip(header, *cells)]

    def fmt(line):
        return "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in cells]


def write_report(out_dir: Path, rows: list[dict], settings: str, notes=()) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    from minicompress.viz.summary import plot_summary

    ax = plot_summary(rows)
    ax.figure.tight_layout()
    # written like every other file: a temporary file moved into place (checkpoint.atomic_write)
    checkpoint.atomic_write(out_dir / "summary.png", lambda f: ax.figure.savefig(f, format="png", dpi=120))
    plt.close(ax.figure)
    lines = ["# minicompress demo", "", settings, "", *table_lines(rows, markdown=True), ""]
    lines += [f"- {line}" for line in notes] + ([""] if notes else [])
    lines += ["![accuracy against compression ratio](summary.png)", ""]
    lines += [f"![{row['technique']}]({row['figure']})" for row in rows if row.get("figure")]
    path = out_dir / "report.md"
    text = "\n".join(lines) + "\n"
    return checkpoint.atomic_write(path, lambda f: f.write(text.encode()))


REPORT_FILES = ("report.md", "report.json", "summary.png", "baseline.npz", "deep_compression.npz")  # what a run writes in --out


def write_json_report(path: Path, rows: list[dict], settings: dict) -> Path:
    """The table as JSON, {"settings": {...}, "rows": [row, ...]} (row fields as above), written atomically.

    benchmarks/demo.py turns it into benchmarks/results/demo.json, from which the README's demo figures come.
    """
    keys = [key for key, _ in COLUMNS] + ["figure"]
    plain = [{key: (v.item() if isinstance(v, np.generic) else v) for key in keys if (v := row.get(key)) is not None}
             for row in rows]
    text = json.dumps({"settings": settings, "rows": plain}, indent=1) + "\n"
    return checkpoint.atomic_write(path, lambda f: f.write(text.encode()))


def run(args):
    techniques = technique_modules(args.only)
    check_output(args.out, force=args.force, folder=True)
    existing = [name for name in REPORT_FILES if args.out is not None and (args.out / name).exists()]
    if existing and not args.force:
        raise cli.CLIError(f"--out {args.out}: already holds {', '.join(existing)} from an earlier run; pass --force "
                           "to replace them, or choose another folder")
    x, y, xt, yt, description = load_dataset(args.dataset, args.data_dir)
    epochs = args.epochs
    if args.quick:
        # Every k-th image: the files are in their original, class-mixed order, so this is a fair sample.
        x, y, xt, yt, epochs = x[::len(x) // 2000], y[::len(y) // 2000], xt[::len(xt) // 500], yt[::len(yt) // 500], 1
        description += " (--quick: 2,000 / 500 of them)"
    set_seed(args.seed)
    try:
        model = models.from_spec(args.model)
    except ValueError as exc:
        raise cli.CLIError(f"--model {args.model}: {exc}") from exc
    train_loader, test_loader = loaders(args.dataset, x, y, xt, yt, 64, args.seed)
    print(f"baseline: {args.model}, {epochs} epoch{'s' * (epochs != 1)} of Adam on {description}")
    opt = optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    fit(model, train_loader, epochs, opt, scheduler=optim.CosineAnnealingLR(opt, T_max=epochs),
        progress=not args.no_progress, desc=f"demo: baseline {args.model}")
    train_seconds = time.perf_counter() - start
    model.eval()

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    dense_bytes = sum(4 * p.size for p in model.parameters())
    ctx = DemoContext(model=model, spec=args.model, train_loader=train_loader, test_loader=test_loader,
                      x_train=x, y_train=y, x_test=xt, y_test=yt, x_test_input=test_loader.transform(xt[:, None]),
                      mean=test_loader.mean, std=test_loader.std, dataset=args.dataset, dense_bytes=dense_bytes,
                      epochs=epochs, quick=args.quick, seed=args.seed, progress=not args.no_progress,
                      out_dir=args.out, timing_runs=1 if args.quick else 3)
    predict = ctx.model_predict(model)
    ctx.baseline = {"technique": "baseline (float32)", "accuracy": ctx.accuracy(predict), "bytes": dense_bytes,
                    "ratio": 1.0, "infer_ms": ctx.infer_ms(predict),
                    "note": f"{args.model}, trained {train_seconds:.0f} s"}
    print(f"baseline test accuracy: {ctx.baseline['accuracy']:.2%} ({len(yt):,} test images)")
    rows = [ctx.baseline]
    for name, module in techniques:
        print(f"{name}:")
        result = module.demo_row(ctx)
        for row in [result] if isinstance(result, dict) else list(result):
            if row.get("ratio") is None and row.get("bytes"):
                row["ratio"] = dense_bytes / row["bytes"]
            rows.append(row)
    print()
    print("\n".join(table_lines(rows)))
    notes = [units_line(len(yt), ctx.timing_runs), *note_lines(name for name, _ in techniques)]
    print("\n".join(notes))
    if args.out is not None:
        checkpoint.save(model, args.out / "baseline.npz", meta={"test_accuracy": ctx.baseline["accuracy"]},
                        overwrite=args.force)
        settings = f"Baseline {args.model}, {epochs} epoch{'s' * (epochs != 1)}, seed {args.seed}, on {description}."
        print(f"report: {write_report(args.out, rows, settings, notes)}")
        write_json_report(args.out / "report.json", rows,
                          {"model": args.model, "epochs": epochs, "seed": args.seed, "dataset": args.dataset,
                           "data": description, "quick": args.quick, "train_seconds": train_seconds})
