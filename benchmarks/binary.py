"""Binary networks on full MNIST: accuracy, packed bytes and XNOR-popcount speed.

Trains two binary MLPs with Adam, a cosine learning rate and batch norm (see ``binary.binary_mlp``):
  - BinaryConnect style (Courbariaux et al. 2015): binary weights, real ReLU activations. Target: test error <= 2%.
  - BNN style (Hubara et al. 2016): binary weights and activations. Target: test error <= 3%.
Then packs each one (1 bit per weight), checks the packed forward gives exactly the float +-1 logits, counts
bytes (binary weights must be 32x smaller than float32), and times packed inference against a float32 matmul of
the same shape (median of repeats).

    nice -n 5 python benchmarks/binary.py            # full run: ~19 min on 2 cores shared with other jobs
    python benchmarks/binary.py --quick              # smoke test: 3,000 training images, 1 epoch, no targets
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from minicompress import binary, data, optim, train

from _results import write_results


def median_time(fn, repeats):
    """Median wall time of ``fn()`` over ``repeats`` calls, in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def train_one(name, sizes, binary_activations, args, train_set, test_set):
    train.set_seed(args.seed)
    model = binary.binary_mlp(sizes, binary_activations=binary_activations)
    epochs = args.epochs_bnn if binary_activations else args.epochs_bc
    train_loader = data.DataLoader(*train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    test_loader = data.DataLoader(*test_set, batch_size=1000)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    sched = optim.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    start = time.perf_counter()
    history = train.fit(
        model, train_loader, epochs, opt, test_loader=test_loader, scheduler=sched,
        callbacks=[binary.ClipLatentWeights()], progress=args.progress, desc=f"binary benchmark: {name}",
    )  # fmt: skip
    train_s = time.perf_counter() - start
    err = 1 - history["test_accuracy"][-1]
    print(f"[{name}] {model.spec}: {epochs} epochs in {train_s:.0f} s, test error per epoch "
          f"{[round(100 * (1 - a), 2) for a in history['test_accuracy']]} %", flush=True)

    packed = binary.pack_model(model)
    x_test = test_loader.transform(test_set[0][:, None])
    float_logits = train.predict(model, x_test, batch_size=1000)
    packed_logits = np.concatenate([packed(x_test[i : i + 1000]) for i in range(0, len(x_test), 1000)])
    exact = bool(np.array_equal(float_logits, packed_logits))
    packed_err = float(np.mean(packed_logits.argmax(1) != test_set[1]))

    rows = packed.size_report()
    bin_f32 = sum(r["float32_bytes"] for r in rows)
    bin_packed = sum(r["packed_bytes"] for r in rows)
    model_f32 = sum(a.nbytes for a in model.state_dict().values() if a.dtype == np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "packed.npz")
        binary.save(packed, path)
        disk = os.path.getsize(path)
        reloaded_exact = bool(np.array_equal(binary.load(path)(x_test[:1000]), packed_logits[:1000]))

    m = args.infer_batch
    model_float_ms = 1000 * median_time(lambda: train.predict(model, x_test[:m], batch_size=m), args.repeats)
    model_packed_ms = 1000 * median_time(lambda: packed(x_test[:m]), args.repeats)
    return {
        "name": name, "spec": model.spec, "epochs": epochs, "train_seconds": round(train_s, 1),
        "test_error_per_epoch": [1 - a for a in history["test_accuracy"]], "test_error": err,
        "packed_test_error": packed_err, "packed_equals_float_exactly": exact, "reload_exact": reloaded_exact,
        "binary_weight_float32_bytes": bin_f32, "binary_weight_packed_bytes": bin_packed,
        "binary_weight_ratio": bin_f32 / bin_packed, "model_float32_bytes": model_f32,
        "packed_model_bytes": packed.nbytes, "packed_file_bytes_on_disk": disk,
        "model_forward_ms_float": model_float_ms, "model_forward_ms_packed": model_packed_ms, "layers": rows,
    }  # fmt: skip


def kernel_timings(shapes, repeats, seed):
    """Per shape (M, K, N): float32 x @ W.T, popcount_matmul on pre-packed bits, and packing x + popcount_matmul."""
    rng = np.random.default_rng(seed)
    out = []
    for m, k, n in shapes:
        x = binary.sign(rng.standard_normal((m, k)).astype(np.float32))
        w = binary.sign(rng.standard_normal((n, k)).astype(np.float32))
        x_bits, w_bits = binary.pack_signs(x), binary.pack_signs(w)
        assert np.array_equal(binary.popcount_matmul(x_bits, w_bits, k), (x @ w.T).astype(np.int32))
        f32 = median_time(lambda: x @ w.T, repeats)
        kern = median_time(lambda: binary.popcount_matmul(x_bits, w_bits, k), repeats)
        full = median_time(lambda: binary.popcount_matmul(np.packbits(x >= 0, axis=1), w_bits, k), repeats)
        out.append({
            "M": m, "K": k, "N": n, "float32_ms": 1000 * f32, "xnor_popcount_ms": 1000 * kern,
            "pack_plus_xnor_ms": 1000 * full, "float32_over_xnor": f32 / kern,
        })  # fmt: skip
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test on 3,000 images, 1 epoch, no targets checked")
    p.add_argument("--width", type=int, default=512, help="hidden units per layer (two hidden layers)")
    p.add_argument("--epochs-bc", type=int, default=8)
    p.add_argument("--epochs-bnn", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--infer-batch", type=int, default=1000, help="batch for the inference timings")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="tqdm bars while training")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)

    root = data.shared_data_dir()
    if root is None or not (root / "mnist").is_dir():
        print("benchmarks/binary.py: full MNIST not found (set MINICOMPRESS_DATA); skipped")
        return 0
    train_set, test_set = data.load_mnist(root / "mnist", "train"), data.load_mnist(root / "mnist", "test")
    if args.quick:
        train_set, test_set = tuple(a[:3000] for a in train_set), tuple(a[:1000] for a in test_set)
        args.epochs_bc = args.epochs_bnn = 1
        args.repeats, args.width = 2, min(args.width, 128)
    sizes = [784, args.width, args.width, 10]

    results = {"command": " ".join(["python", "benchmarks/binary.py", *(argv or sys.argv[1:])]), "models": []}
    for name, act, target in (("BinaryConnect", False, 0.02), ("BNN", True, 0.03)):
        r = train_one(name, sizes, act, args, train_set, test_set)
        r["target_test_error"] = target
        results["models"].append(r)

    shapes = [(args.infer_batch, args.width, args.width), (args.infer_batch, 784, args.width),
              (args.infer_batch, 777, 100), (args.infer_batch, 4096, 1024)]  # fmt: skip
    if args.quick:
        shapes = shapes[:1]
    results["kernel"] = kernel_timings(shapes, args.repeats, args.seed)

    print("\nmodel          test err  target  packed==float  bin.weights f32 -> packed (ratio)  model bytes f32 -> "
          "packed (disk)  forward ms f32 / packed")
    ok = True
    for r in results["models"]:
        hit = r["test_error"] <= r["target_test_error"]
        ok &= (hit or args.quick) and r["packed_equals_float_exactly"] and r["reload_exact"]
        ok &= r["binary_weight_ratio"] >= 32 - 1e-9
        print(f"{r['name']:<14} {100 * r['test_error']:6.2f}%  <={100 * r['target_test_error']:.0f}%{'' if hit else '!'}"
              f"   {r['packed_equals_float_exactly']!s:<13}  {r['binary_weight_float32_bytes']:>9,} -> "
              f"{r['binary_weight_packed_bytes']:>7,} ({r['binary_weight_ratio']:.1f}x)   {r['model_float32_bytes']:>9,} -> "
              f"{r['packed_model_bytes']:>7,} ({r['packed_file_bytes_on_disk']:,})  "
              f"{r['model_forward_ms_float']:.1f} / {r['model_forward_ms_packed']:.1f}")
    print("\nkernel (M, K, N)       float32 matmul ms   xnor-popcount ms   pack+xnor ms   float32/xnor")
    for k in results["kernel"]:
        print(f"({k['M']}, {k['K']}, {k['N']}){'':<6} {k['float32_ms']:12.2f} {k['xnor_popcount_ms']:18.2f} "
              f"{k['pack_plus_xnor_ms']:14.2f} {k['float32_over_xnor']:14.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)
    settings = {k: getattr(args, k) for k in ("width", "epochs_bc", "epochs_bnn", "lr", "batch_size", "infer_batch",
                                              "repeats", "seed")}
    write_results("binary", settings, {"models": results["models"], "kernel": results["kernel"],
                                       "all_claims_hold": bool(ok)}, quick=args.quick)
    print("\nall claims hold" if ok else "\nSOME CLAIMS DO NOT HOLD (see '!' above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
