"""Quantization of LeNet-5 on full MNIST: int8 static PTQ, 4-bit PTQ vs QAT, integer-only speed, bytes.

    nice -n 5 python benchmarks/quantization.py [--epochs 3] [--qat-epochs 1] [--out results.json]
    python benchmarks/quantization.py --quick          # embedded subset, tiny budget: a smoke test only

Claims measured (issue 5, TARGETS.md): int8 static per-channel loses <= 0.1 points of test accuracy; at 4 bits
QAT recovers what PTQ loses; integer-only inference takes <= 1.5x the float32 time with exact int32 sums;
bytes as stored and the ratio against float32.
"""
import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import minicompress as mc
from minicompress import checkpoint, models, optim
from minicompress import quantization as Q
from minicompress.data import DataLoader, load_mnist, shared_data_dir
from minicompress.train import evaluate, fit, set_seed

from _results import write_results


def best_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run_batches(model, x, batch_size):
    with mc.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])


def check_exact_accumulation(qmodel, x):
    """Every integer layer's float-BLAS accumulators equal NumPy's int64 integer matmul (on one batch)."""
    h, checked = qmodel[0](x), 0
    for layer in list(qmodel)[1:-1]:
        if isinstance(layer, (Q.QuantizedLinear, Q.QuantizedConv2d)):
            cols = layer.columns(h)
            if not np.array_equal(layer.accumulate(cols), layer.accumulate(cols, engine=np.int64)):
                return False
            checked += 1
        h = layer(h)
    return checked > 0


def fit_steps(model, loader, steps, optimizer, quiet, desc):
    """Train for exactly ``steps`` batches (a fraction of an epoch is allowed)."""

    fit(model, loader, -(-steps // len(loader)), optimizer, progress=not quiet, max_steps=steps,
        desc=f"{desc} ({steps} steps)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="embedded subset and a tiny budget (smoke test)")
    p.add_argument("--epochs", type=int, default=3, help="float training epochs (default 3)")
    p.add_argument("--qat-epochs", type=float, default=1.0, help="QAT fine-tuning epochs, may be fractional")
    p.add_argument("--qat-lr", type=float, default=1e-3, help="QAT learning rate, SGD momentum 0.9 (default 1e-3)")
    p.add_argument("--calib", type=int, default=2048, help="calibration images (default 2048)")
    p.add_argument("--model", type=Path, help="reuse a trained float LeNet-5 checkpoint (skips training)")
    p.add_argument("--save-model", type=Path, help="save the trained float model here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)

    root = None if args.quick else shared_data_dir()
    if root is None and not args.quick:
        print("full MNIST not found (shared data folder missing): use --quick", file=sys.stderr)
        return 0
    root = None if args.quick else root / "mnist"
    x_train, y_train = load_mnist(root, "train")
    x_test, y_test = load_mnist(root, "test")
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:500], y_test[:500]
        args.epochs, args.qat_epochs, args.calib = 1, 0.25, 256
    set_seed(args.seed)
    train_loader = DataLoader(x_train, y_train, batch_size=64, shuffle=True, seed=args.seed, normalize="unit")
    test_loader = DataLoader(x_test, y_test, batch_size=1000, normalize="unit")
    x_test_in = (x_test[:, None] / np.float32(255)).astype(np.float32)
    results = {"train_images": len(x_train), "test_images": len(x_test), "quick": args.quick}

    def acc(model):
        return 100 * evaluate(model, test_loader, progress=False)

    # ---- float baseline ------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if args.model:
        model = checkpoint.load(args.model)
    else:
        model = models.lenet5()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        fit(model, train_loader, args.epochs, opt, scheduler=optim.CosineAnnealingLR(opt, T_max=args.epochs),
            progress=not args.quick, desc="quantization benchmark: float LeNet-5")
        if args.save_model:
            checkpoint.save(model, args.save_model)
    results["train_s"] = time.perf_counter() - t0
    model.eval()
    results["float_acc"] = acc(model)
    print(f"float32 LeNet-5: {results['float_acc']:.2f}% ({results['train_s']:.0f} s to train/load)")
    calib = [x for x, _ in DataLoader(x_train[: args.calib], y_train[: args.calib], batch_size=256,
                                      normalize="unit")]

    # ---- post-training quantization ------------------------------------------------------------------------
    rows = {}
    for name, bits, per_channel, observer in [
        ("int8 static per-channel", 8, True, Q.MinMaxObserver),
        ("int8 static per-tensor", 8, False, Q.MinMaxObserver),
        ("int4 PTQ per-tensor (min-max)", 4, False, Q.MinMaxObserver),
        ("int4 PTQ per-channel (min-max)", 4, True, Q.MinMaxObserver),
        ("int4 PTQ per-channel (MSE ranges)", 4, True, Q.MSEObserver),
        ("W4A8 PTQ per-channel (int4 weights, uint8 activations)", 4, True, Q.MinMaxObserver),
    ]:
        qmodel = Q.quantize_static(model, calib, bits=bits, per_channel=per_channel, observer=observer,
                                   activation_bits=8 if name.startswith("W4A8") else None)
        rows[name] = {"acc": acc(qmodel), "bytes": Q.quantized_nbytes(qmodel)}
        if bits == 8 and per_channel:
            int8_model = qmodel
    dyn = Q.quantize_dynamic(model)
    rows["int8 dynamic (Linear only)"] = {"acc": acc(dyn), "bytes": Q.quantized_nbytes(dyn)}

    # ---- quantization-aware training at 4 bits (weights and activations) ----------------------------------
    steps = max(1, int(args.qat_epochs * len(train_loader)))
    for name, init in (("int4 QAT per-channel (moving-avg ranges)", None),
                       ("int4 QAT per-channel (MSE ranges, frozen)", calib)):
        t0 = time.perf_counter()
        qat = Q.prepare_qat(model, bits=4, init_batches=init)
        fit_steps(qat, train_loader, steps, optim.SGD(qat.parameters(), lr=args.qat_lr, momentum=0.9), args.quick,
                  f"quantization benchmark: {name}")
        qat.eval()
        qat_int = Q.convert(qat)
        rows[name] = {"acc": acc(qat_int), "bytes": Q.quantized_nbytes(qat_int), "fake_quant_acc": acc(qat),
                      "steps": steps, "seconds": time.perf_counter() - t0}

    # ---- weight sharing (Deep Compression): 16 shared values per layer, then codebook fine-tuning ---------
    shared = Q.share_model_weights(copy.deepcopy(model), bits=4)
    shared_bytes = sum(Q.shared_nbytes(m) + 4 * m.bias.data.size for m in shared.modules()
                       if hasattr(m, "weight_codebook"))
    rows["weight sharing k=16"] = {"acc": acc(shared), "bytes": shared_bytes}
    fit_steps(shared, train_loader, steps, optim.SGD(shared.parameters(), lr=0.001, momentum=0.9), args.quick,
              "quantization benchmark: weight sharing k=16, codebook fine-tune")
    rows["weight sharing k=16 + codebook fine-tune"] = {"acc": acc(shared), "bytes": shared_bytes}

    float_bytes = Q.float_nbytes(model)
    for r in rows.values():
        r["ratio"] = float_bytes / r["bytes"]
        r["loss_pts"] = results["float_acc"] - r["acc"]
    results["float_bytes"], results["rows"] = float_bytes, rows

    # ---- integer-only inference speed and exactness -------------------------------------------------------
    batch = 500
    model.eval()
    t_float = best_time(lambda: run_batches(model, x_test_in, batch))
    t_int = best_time(lambda: run_batches(int8_model, x_test_in, batch))
    results["exact_int32_accumulation"] = check_exact_accumulation(int8_model, x_test_in[:batch])
    results["float_ms"], results["int8_ms"] = 1000 * t_float, 1000 * t_int
    results["int8_over_float"] = t_int / t_float
    with tempfile.TemporaryDirectory() as tmp:
        Q.save_quantized(int8_model, Path(tmp) / "int8.npz")
        checkpoint.save(model, Path(tmp) / "float.npz")
        results["int8_file_bytes"] = (Path(tmp) / "int8.npz").stat().st_size
        results["float_file_bytes"] = (Path(tmp) / "float.npz").stat().st_size
        same = np.array_equal(Q.load_quantized(Path(tmp) / "int8.npz")(x_test_in[:batch]).data,
                              int8_model(x_test_in[:batch]).data)
        results["save_load_lossless"] = bool(same)

    # ---- report --------------------------------------------------------------------------------------------
    print(f"\n{'model':56s} {'test acc':>9s} {'loss pts':>9s} {'bytes':>9s} {'ratio':>6s}")
    print(f"{'float32':56s} {results['float_acc']:8.2f}% {0:9.2f} {float_bytes:9d} {1:6.1f}")
    for name, r in rows.items():
        print(f"{name:56s} {r['acc']:8.2f}% {r['loss_pts']:9.2f} {r['bytes']:9d} {r['ratio']:6.1f}")
    for name, r in rows.items():
        if "QAT" in name:
            print(f"{name}: {r['steps']} steps in {r['seconds']:.0f} s; fake-quant model {r['fake_quant_acc']:.2f}%")
    print(f"inference on {len(x_test_in)} images, batch {batch}: float32 {results['float_ms']:.0f} ms, "
          f"integer-only int8 {results['int8_ms']:.0f} ms ({results['int8_over_float']:.2f}x); "
          f"int32 sums exact: {results['exact_int32_accumulation']}")
    print(f"on disk: float32 {results['float_file_bytes']} B, int8 {results['int8_file_bytes']} B; "
          f"save/load lossless: {results['save_load_lossless']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    settings = {"model": "lenet5", "epochs": args.epochs, "qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr,
                "calib": args.calib, "seed": args.seed, "reused_model": str(args.model) if args.model else None,
                "inference_batch": batch}
    write_results("quantization", settings, results, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
