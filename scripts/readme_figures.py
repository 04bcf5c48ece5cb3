"""Regenerate the README's figures from the benchmarks' results files, so every figure it quotes was measured.

The README marks each generated block with a pair of comments:

    <!-- figures:pruning -->
    ...text written by this script from benchmarks/results/pruning.json...
    <!-- /figures:pruning -->

    python scripts/readme_figures.py            # rewrite the blocks of README.md (atomically)
    python scripts/readme_figures.py --check    # exit 1 naming every block that is out of date

tests/test_readme_figures.py runs the check, so a benchmark rerun without regenerating the README (or a hand
edit inside a block) fails the tests. A benchmark that has no results file yet gets a block that says so and
how to measure it, never an old figure.

1. Reading the results files
2. One renderer per block
3. Replacing the blocks
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


# 1. Reading the results files -------------------------------------------------------------------------------

def load(name: str, folder: Path) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def provenance(record: dict) -> str:
    """Where a figure comes from: the command, the day, the commit and the machine."""
    m = record["machine"]
    load = m.get("load_average_1min")  # timings depend on what else ran on the machine
    return (f"`{record['command']}`, {record['date'][:10]}, commit {record['commit']}, "
            f"{m['cpu_count']} CPUs{'' if load is None else f' (load average {load:g})'}, Python {m['python']}, "
            f"NumPy {m['numpy']}")


def not_measured(name: str, command: str, how_long: str) -> str:
    return (f"_Not measured yet in this checkout: `{command}` ({how_long}) writes `benchmarks/results/{name}.json`, "
            f"then `python scripts/readme_figures.py` fills in this paragraph._")


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# 2. One renderer per block ----------------------------------------------------------------------------------
# Each takes the folder of results files and returns the block's Markdown (without the marker comments).

def demo_intro(folder: Path) -> str:
    r = load("demo", folder)
    if r is None:
        return not_measured("demo", "python benchmarks/demo.py", "under a minute")
    base = r["figures"]["rows"][0]
    s = r["settings"]
    return (f"`minicompress demo` trains `{s['model']}` for {s['epochs']} epochs on the embedded MNIST subset "
            f"({pct(base['accuracy'])} test accuracy), then lets every technique compress that model and prints "
            f"test accuracy, size, compression ratio and inference time per technique, ending with Deep "
            f"Compression (the techniques chained); {r['figures']['seconds']:.0f} s in all on "
            f"{r['machine']['cpu_count']} cores with one BLAS thread.")


def demo_table(folder: Path) -> str:
    r = load("demo", folder)
    if r is None:
        return not_measured("demo", "python benchmarks/demo.py", "under a minute")
    lines = ["| technique | test acc | size | ratio | infer ms (whole test set) | note |", "|---|---|---|---|---|---|"]
    for row in r["figures"]["rows"]:
        infer = "-" if row.get("infer_ms") is None else f"{row['infer_ms']:.1f}"
        note = row.get("note", "").replace("|", "/")
        lines.append(f"| {row['technique']} | {pct(row['accuracy'])} | {row['bytes']:,} B | {row['ratio']:.1f}x "
                     f"| {infer} | {note} |")
    return "\n".join(lines + ["", f"Measured by {provenance(r)}; {r['settings']['data']}."])


def pruning(folder: Path) -> str:
    r = load("pruning", folder)
    if r is None:
        return not_measured("pruning", "python benchmarks/pruning.py", "about 20 minutes on 2 cores")
    parts = []
    for spec, f in r["figures"].items():
        parts.append(f"{spec} {pct(1 - f['dense_acc'])} -> {pct(1 - f['pruned_acc'])} test error with "
                     f"{pct(f['weights_left'])} of its weights left, {f['dense_bytes']:,} -> {f['sparse_bytes']:,} "
                     f"bytes ({f['dense_bytes'] / f['sparse_bytes']:.1f}x; claim of at most +0.10 points of error: "
                     f"{'holds' if f['passed'] else 'FAILS'})")
    s = r["settings"]
    return (f"`benchmarks/pruning.py` (full MNIST, {s['schedule']} schedule, retraining at {s['retrain_lr']:g}x the "
            f"dense learning rate): " + "; ".join(parts) + f". Measured by {provenance(r)}.")


def quantization(folder: Path) -> str:
    r = load("quantization", folder)
    if r is None:
        return not_measured("quantization", "python benchmarks/quantization.py", "about 10 minutes on 2 cores")
    f, rows = r["figures"], r["figures"]["rows"]
    int8 = rows["int8 static per-channel"]
    ptq, ptq_mse = rows["int4 PTQ per-channel (min-max)"], rows["int4 PTQ per-channel (MSE ranges)"]
    qat, qat_mse = rows["int4 QAT per-channel (moving-avg ranges)"], rows["int4 QAT per-channel (MSE ranges, frozen)"]
    return (f"On full MNIST (`benchmarks/quantization.py`, LeNet-5 at {f['float_acc']:.2f}% test accuracy): int8 "
            f"static per-channel {int8['acc']:.2f}% at {int8['ratio']:.1f}x fewer bytes; 4 bits per channel "
            f"({qat['ratio']:.1f}x): PTQ {ptq['acc']:.2f}% (min-max ranges) and {ptq_mse['acc']:.2f}% (MSE ranges), "
            f"QAT {qat['acc']:.2f}% (moving-average ranges) and {qat_mse['acc']:.2f}% (MSE ranges, frozen). "
            f"Integer-only int8 inference takes {f['int8_over_float']:.2f}x the float32 time ({f['int8_ms']:.0f} ms "
            f"against {f['float_ms']:.0f} ms for {f['test_images']:,} images), with exact int32 sums: "
            f"{'yes' if f['exact_int32_accumulation'] else 'NO'}. Why int8 is not faster here: NumPy has no int8 "
            f"matrix product, so the integer sums run through float BLAS (exact in blocks) and the requantization "
            f"adds work, while int8 hardware fits four int8 multiply-adds where float32 fits one. "
            f"Measured by {provenance(r)}.")


def distillation(folder: Path) -> str:
    r = load("distillation", folder)
    if r is None:
        return not_measured("distillation", "python benchmarks/distillation.py --jobs 2",
                            "about 30 minutes on 2 idle cores")
    f, s = r["figures"], r["settings"]
    return (f"On full MNIST (`benchmarks/distillation.py`, seeds {s['seeds']}, T = {s['T']:g}, "
            f"alpha = {s['alpha']:g}): teacher {f['teacher_errors']} test errors ({f['teacher_parameters']:,} "
            f"parameters), student {s['student']['spec']} ({f['student_parameters']:,} parameters) "
            f"{f['alone_mean']:.1f} errors on the labels alone, {f['distilled_mean']:.1f} distilled: "
            f"{f['gap_closed']:.0%} of the gap closed (claim: at least 50%: {'holds' if f['passed'] else 'FAILS'}). "
            f"Measured by {provenance(r)}.")


def binary(folder: Path) -> str:
    r = load("binary", folder)
    if r is None:
        return not_measured("binary", "python benchmarks/binary.py", "about 20 minutes on 2 cores")
    models = {m["name"]: m for m in r["figures"]["models"]}
    bc, bnn = models["BinaryConnect"], models["BNN"]
    exact = all(m["packed_equals_float_exactly"] for m in models.values())
    return (f"On full MNIST (`benchmarks/binary.py`, {bc['spec']}): binary weights {pct(bc['test_error'])} test "
            f"error, binary weights and activations {pct(bnn['test_error'])}, binary weights "
            f"{bc['binary_weight_ratio']:.0f}x smaller, packed logits "
            f"{'identical to' if exact else 'NOT identical to'} the float ones (targets: at most 2% and 3% test error: "
            f"{'met' if r['figures']['all_claims_hold'] else 'NOT all met'}). Measured by {provenance(r)}.")


def deep_compression(folder: Path) -> str:
    r = load("deep_compression", folder)
    if r is None:
        return not_measured("deep_compression", "python benchmarks/deep_compression.py",
                            "about an hour on 2 cores")
    parts = []
    for spec, f in r["figures"].items():
        first, last = f["stages"][0], f["stages"][-1]
        parts.append(f"{spec} from {first['bytes']:,} to {last['bytes']:,} stored bytes ({f['ratio']:.1f}x) at "
                     f"{pct(f['final_error'])} test error against {pct(f['dense_error'])} dense (targets: "
                     f"{f['target_ratio']}x {'met' if f['ratio_passed'] else 'MISSED'}, at most +0.10 points "
                     f"{'met' if f['error_passed'] else 'MISSED'})")
    return "On full MNIST (`benchmarks/deep_compression.py`): " + "; ".join(parts) + f". Measured by {provenance(r)}."


def export(folder: Path) -> str:
    r = load("export", folder)
    if r is None:
        return not_measured("export", "python benchmarks/export.py", "a few minutes")
    f, s = r["figures"], r["settings"]
    size, ms = f["file_bytes"], f["median_ms"]
    return (f"`benchmarks/export.py` (LeNet-5, {s['epochs']} epoch, {f['test_images']:,} test images, {s['data']}): "
            f"float32 .tflite {size['float32 .tflite']:,} B, int8 .tflite {size['int8 .tflite']:,} B "
            f"({size['float32 .tflite'] / size['int8 .tflite']:.2f}x smaller), float32 .onnx "
            f"{size['float32 .onnx']:,} B, int8 .onnx {size['int8 .onnx']:,} B; test accuracy {pct(f['float_acc'])} "
            f"float32, {pct(f['int8_acc'])} int8. LiteRT's reference kernels give minicompress's int8 outputs on "
            f"{f['litert_identical']:,} of {f['test_images']:,} test images. Whole test set, one thread, median ms: "
            f"minicompress float32 {ms['minicompress float32']:.0f}, int8 {ms['minicompress int8']:.0f}; LiteRT "
            f"float32 {ms['LiteRT float32']:.0f}, int8 {ms['LiteRT int8']:.0f}; with XNNPACK float32 "
            f"{ms['LiteRT float32 + XNNPACK']:.0f}, int8 {ms['LiteRT int8 + XNNPACK']:.0f} (minicompress int8 / "
            f"LiteRT int8 + XNNPACK = {ms['minicompress int8'] / ms['LiteRT int8 + XNNPACK']:.1f}x). "
            f"Measured by {provenance(r)}.")


def train_speed(folder: Path) -> str:
    r = load("train_speed", folder)
    if r is None:
        return not_measured("train_speed", "python benchmarks/train_speed.py", "about 10 minutes on 2 cores")
    parts = []
    for run in r["figures"].values():
        for spec, e in run["models"].items():
            if e.get("ratio_median") is not None:
                parts.append(f"{spec} {e['ratio_median']:.2f}x with {run['threads']} "
                             f"thread{'s' * (run['threads'] > 1)}")
    if not parts:
        return f"_PyTorch was not installed for the last run ({provenance(r)}): no ratio to show._"
    return ("Time per MNIST training epoch (60,000 images, batch 64, SGD), minicompress / PyTorch on the same "
            "batches and weights, median of alternating repeats (below 1: minicompress faster): " + ", ".join(parts)
            + f". Measured by {provenance(r)}.")


BLOCKS = {"demo-intro": demo_intro, "demo": demo_table, "pruning": pruning, "quantization": quantization,
          "distillation": distillation, "binary": binary, "deep_compression": deep_compression, "export": export,
          "train_speed": train_speed}


# 3. Replacing the blocks ------------------------------------------------------------------------------------

MARKER = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->\n(?P<body>.*?)\n?<!-- /figures:(?P=name) -->", re.DOTALL)


def update(text: str, folder: Path = RESULTS) -> tuple[str, list[str]]:
    """(text with every block regenerated, names of the blocks whose content changed)."""
    changed = []

    def replace(match):
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"readme_figures: unknown block <!-- figures:{name} -->; known: {sorted(BLOCKS)}")
        body = BLOCKS[name](folder)
        if body != match["body"]:
            changed.append(name)
        return f"<!-- figures:{name} -->\n{body}\n<!-- /figures:{name} -->"

    return MARKER.sub(replace, text), changed


def stale_blocks(readme: Path = README, folder: Path = RESULTS) -> list[str]:
    """Names of the README's blocks that differ from what the results files give (empty: all current)."""
    return update(readme.read_text(), folder)[1]


def write_atomic(path: Path, text: str) -> None:
    """A temporary file moved into place, as minicompress writes every file (checkpoint.atomic_write)."""
    from minicompress.checkpoint import atomic_write

    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is out of date")
    p.add_argument("--readme", type=Path, default=README, help="default: %(default)s")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of <name>.json files (default: %(default)s)")
    args = p.parse_args(argv)
    if not args.readme.is_file():
        p.error(f"--readme {args.readme}: no such file")
    text = args.readme.read_text()
    new, changed = update(text, args.results)
    if not MARKER.search(text):
        print(f"readme_figures: {args.readme} has no <!-- figures:NAME --> block", file=sys.stderr)
        return 1
    if args.check:
        if changed:
            print(f"readme_figures: {args.readme} disagrees with {args.results} in block(s): {', '.join(changed)}; "
                  f"run python scripts/readme_figures.py", file=sys.stderr)
            return 1
        print(f"readme_figures: {args.readme} agrees with {args.results}")
        return 0
    if changed:
        write_atomic(args.readme, new)
    print(f"readme_figures: {len(changed)} block(s) updated: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
