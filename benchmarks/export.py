"""Export of LeNet-5: file sizes (.tflite and .onnx, float32 and int8) and LiteRT's inference time against
minicompress's on the MNIST test set.

    nice -n 5 python benchmarks/export.py [--epochs 1] [--repeats 5]
    python benchmarks/export.py --quick          # embedded subset, fewer repeats: a smoke test only

Claims measured (issue 16): the int8 .tflite file is about 3.5x smaller than the float32 one; LiteRT's int8
outputs equal minicompress's integers on every test image (reference kernels); how much faster LiteRT's compiled
kernels run the same model than minicompress's NumPy (batches of 500; medians over --repeats; ratios of medians).
Accuracy needs only a briefly trained model, so --epochs defaults to 1.
"""
import argparse
import statistics
import time

import numpy as np

import minicompress as mc
from minicompress import export, models, optim
from minicompress import quantization as Q
from minicompress.data import DataLoader, load_mnist, shared_data_dir
from minicompress.train import evaluate, fit, set_seed

from _results import write_results  # benchmarks/ is on the path when a benchmark runs


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batched(predict, x, batch_size=500):
    def run():
        with mc.no_grad():
            return np.concatenate([np.asarray(predict(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
    return run


def minicompress_predict(model):
    return lambda x: model(x).data


def codes(qmodel, x):
    h = x
    for layer in list(qmodel)[:-1]:
        h = layer(h)
    return h.q.astype(np.int32) - 128


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="embedded subset and fewer repeats (smoke test)")
    p.add_argument("--epochs", type=int, default=1, help="float training epochs (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per engine (default 5)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    root = None if args.quick or shared_data_dir() is None else shared_data_dir()
    repeats = 2 if args.quick else args.repeats
    x_train, y_train = load_mnist(root, "train")
    x_test, y_test = load_mnist(root, "test")
    source = "MNIST subset shipped with minicompress" if root is None else f"full MNIST from {root}"
    set_seed(args.seed)
    train_loader = DataLoader(x_train, y_train, 64, shuffle=True, seed=args.seed, normalize="standard")
    test_loader = DataLoader(x_test, y_test, 500, normalize="standard")
    x = test_loader.transform(x_test).reshape(-1, 1, 28, 28)
    model = models.lenet5()
    fit(model, train_loader, 1 if args.quick else args.epochs, optim.Adam(model.parameters(), lr=1e-3),
        progress=not args.quick, desc="export benchmark: train LeNet-5")
    model.eval()
    calib = [test_loader.transform(x_train[i:i + 256]).reshape(-1, 1, 28, 28) for i in range(0, 1024, 256)]
    qmodel = Q.quantize_static(model, calib)

    files = {"float32 .tflite": export.to_tflite(model), "int8 .tflite": export.to_tflite(qmodel),
             "float32 .onnx": export.to_onnx(model).SerializeToString(),
             "int8 .onnx": export.to_onnx(qmodel).SerializeToString()}
    dense = Q.float_nbytes(model)
    print(f"LeNet-5, {args.epochs if not args.quick else 1} epoch(s), {len(x):,} test images ({source})")
    float_acc, int8_acc = evaluate(model, test_loader, progress=False), evaluate(qmodel, test_loader, progress=False)
    print(f"float32 test accuracy {float_acc:.2%}, int8 {int8_acc:.2%}")
    print(f"\n{'file':<18}{'bytes':>11}{'dense float32 / file':>23}")
    for name, content in files.items():
        print(f"{name:<18}{len(content):>11,}{dense / len(content):>22.2f}x")
    print(f"int8 / float32 .tflite: {len(files['int8 .tflite']) / len(files['float32 .tflite']):.3f}")

    _, litert_codes = export.run_tflite(files["int8 .tflite"], x, return_codes=True)
    same = int((litert_codes.astype(np.int32) == codes(qmodel, x)).all(axis=1).sum())
    print(f"\nLiteRT (reference kernels): {same:,}/{len(x):,} test images with int8 outputs identical to "
          "minicompress's")

    engines = {
        "minicompress float32": batched(minicompress_predict(model), x),
        "minicompress int8": batched(minicompress_predict(qmodel), x),
        "LiteRT float32": batched(export.tflite.tflite_predictor(files["float32 .tflite"]), x),
        "LiteRT int8": batched(export.tflite.tflite_predictor(files["int8 .tflite"]), x),
        "LiteRT float32 + XNNPACK": batched(export.tflite.tflite_predictor(files["float32 .tflite"], xnnpack=True), x),
        "LiteRT int8 + XNNPACK": batched(export.tflite.tflite_predictor(files["int8 .tflite"], xnnpack=True), x),
    }
    seconds = {}
    for name, run in engines.items():
        run()  # warm-up: allocation, BLAS / interpreter set-up
        seconds[name] = median_seconds(run, repeats)
    print(f"\n{'engine (batches of 500, one thread)':<38}{'median ms':>10}")
    for name, s in seconds.items():
        print(f"{name:<38}{1000 * s:>10.1f}")
    print(f"\nratios of medians: minicompress int8 / LiteRT int8 = "
          f"{seconds['minicompress int8'] / seconds['LiteRT int8']:.1f}x, minicompress float32 / LiteRT float32 = "
          f"{seconds['minicompress float32'] / seconds['LiteRT float32']:.1f}x, LiteRT float32 / LiteRT int8 = "
          f"{seconds['LiteRT float32'] / seconds['LiteRT int8']:.2f}x, minicompress int8 / LiteRT int8 + XNNPACK = "
          f"{seconds['minicompress int8'] / seconds['LiteRT int8 + XNNPACK']:.1f}x")
    print("(LiteRT: its optimized kernels, without and with the XNNPACK delegate (LiteRT's default), num_threads=1; "
          f"medians of {repeats} runs after one warm-up; machine-dependent)")
    figures = {"float_acc": float_acc, "int8_acc": int8_acc, "test_images": len(x), "dense_float32_bytes": dense,
               "file_bytes": {name: len(content) for name, content in files.items()},
               "litert_identical": same, "median_ms": {name: 1000 * s for name, s in seconds.items()}}
    settings = {"model": "lenet5", "epochs": 1 if args.quick else args.epochs, "repeats": repeats,
                "seed": args.seed, "data": source, "batch_size": 500, "threads": 1}
    write_results("export", settings, figures, quick=args.quick)


if __name__ == "__main__":
    main()
