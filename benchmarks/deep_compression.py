"""Deep Compression on full MNIST (Han, Mao, Dally 2016): LeNet-300-100 from 1070 KB to 27 KB (40x), LeNet-5 from
1720 KB to 44 KB (39x), at no loss of accuracy. The paper's LeNet-5 is Caffe's (``lenet5_caffe``, 431K parameters);
``--models lenet5`` runs the zoo's smaller classic LeNet-5 (61.7K parameters) as well.

For each model: train it dense, then run minicompress.pipeline.deep_compression (iterative pruning with fine-tuning,
k-means weight sharing with codebook fine-tuning, Huffman coding of cluster indices and relative positions, a file
written and loaded back). Prints one row per stage and checks the targets: compression ratio (stored payload bytes,
indices, code tables, codebooks and biases included, against float32) and test error no more than 0.1 points above
the dense model's.

    python benchmarks/deep_compression.py                    # both models, full settings
    python benchmarks/deep_compression.py --models lenet300_100
    python benchmarks/deep_compression.py --quick            # smoke run: 5000 images, 1 epoch per stage

Every full run writes its figures, with date, commit and machine, to benchmarks/results/deep_compression.json, from which
the README's figures are generated (scripts/readme_figures.py). The measurements below are the history that
chose this recipe; the run of 2026-12-02 gave LeNet-300-100 the same figures, and the Caffe LeNet-5 0.69% ->
0.91% at 47.6x (+0.22 points, error target missed; cause not yet found).

Measured on the project's 2-core machine (seed 0, 10,000 test images; bytes = stored payload):

    model           dense err  final err  weights left  bytes dense -> stored   ratio  targets
    LeNet-300-100   1.52%      1.60%      6.3%          1,066,440 -> 20,554     51.9x  pass (40x, +0.08 points)
    LeNet-5 (Caffe) 0.74%      0.81%      6.6%          1,724,320 -> 35,968     47.9x  pass (39x, +0.07 points)
    LeNet-5 (zoo)   0.81%      1.05%      6.0%            246,824 ->  6,217     39.7x  fails on error (+0.24)

The zoo's small LeNet-5 reaches 39x only by pruning it harder than it can bear; the paper's 39x is for the Caffe
network, where the same recipe keeps its accuracy.
"""

import argparse
import tempfile
import time
from pathlib import Path

import minicompress as mc
from minicompress import data, models, nn, optim, pipeline
from minicompress.train import evaluate, fit

from _results import write_results

# Per-layer sparsities in the spirit of Han et al. (2015, Table 1-2): the big fully connected layers are pruned
# hardest, the first convolution and the output layer least. Each pruning round retrains from the dense learning
# rate, annealed to 0 ("learning-rate rewinding", Renda, Frankle & Carbin 2020): retraining at 1/10 of it, as Han
# et al. did, left LeNet-300-100 0.2 points worse than dense here (see benchmarks/pruning.py for the same finding).
SETTINGS = {
    "lenet300_100": dict(dense_epochs=10, sparsity=[0.94, 0.92, 0.75], bits={nn.Linear: 5}, rounds=4,
                         prune_epochs=3, share_epochs=2, lr=0.05, target_ratio=40),
    # Han et al.'s LeNet-5 (Caffe, 431K parameters, 1720 KB): the network of the published 39x
    "lenet5_caffe": dict(dense_epochs=8, sparsity=[0.34, 0.88, 0.94, 0.81], bits={nn.Conv2d: 5, nn.Linear: 5},
                         rounds=4, prune_epochs=2, share_epochs=1, lr=0.05, target_ratio=39),
    # the zoo's classic LeNet-5 (61.7K parameters): 7x smaller, so 39x means 6.3 KB; reported, not the target
    "lenet5": dict(dense_epochs=10, sparsity=[0.4, 0.85, 0.96, 0.9, 0.6], bits={nn.Conv2d: 5, nn.Linear: 5},
                   rounds=4, prune_epochs=3, share_epochs=2, lr=0.05, target_ratio=39),
}


def run(spec, cfg, train, test, quick):
    mc.manual_seed(0)
    model = models.from_spec(spec)
    start = time.perf_counter()
    epochs = 1 if quick else cfg["dense_epochs"]
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    fit(model, train, epochs, opt, scheduler=optim.CosineAnnealingLR(opt, T_max=epochs), progress=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{spec}.npz"
        stages = pipeline.deep_compression(
            model, train, test, path, sparsity=cfg["sparsity"], bits=cfg["bits"],
            prune_rounds=1 if quick else cfg["rounds"], prune_epochs=1 if quick else cfg["prune_epochs"],
            share_epochs=1 if quick else cfg["share_epochs"], lr=cfg["lr"])
        loaded_accuracy = evaluate(pipeline.load_compressed(path), test, progress=False)
    print(f"\n{spec} ({time.perf_counter() - start:.0f} s)")
    print(f"{'stage':<30}{'test error':>11}{'bytes':>10}{'ratio':>8}  note")
    for s in stages:
        print(f"{s['stage']:<30}{1 - s['accuracy']:>10.2%}{s['bytes']:>10,}{s['ratio']:>7.1f}x  {s['note']}")
    dense_error, final_error = 1 - stages[0]["accuracy"], 1 - stages[-1]["accuracy"]
    ratio = stages[-1]["ratio"]
    assert loaded_accuracy == stages[-1]["accuracy"]
    ok_ratio, ok_error = ratio >= cfg["target_ratio"], final_error <= dense_error + 0.001 + 1e-12
    print(f"target: ratio >= {cfg['target_ratio']}x: {'yes' if ok_ratio else 'NO'} ({ratio:.1f}x); "
          f"error <= dense + 0.1 points: {'yes' if ok_error else 'NO'} "
          f"({final_error:.2%} vs {dense_error:.2%})", flush=True)
    return {"stages": stages, "dense_error": dense_error, "final_error": final_error, "ratio": ratio,
            "target_ratio": cfg["target_ratio"], "ratio_passed": ok_ratio, "error_passed": ok_error,
            "loaded_accuracy": loaded_accuracy, "seconds": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lenet300_100", "lenet5_caffe"], choices=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="5000 training images, one epoch per stage")
    args = parser.parse_args()
    root = data.shared_data_dir()
    if root is None:
        raise SystemExit("full MNIST not found (../shared/data or $MINICOMPRESS_DATA); nothing to measure")
    x, y = data.load_mnist(root, "train")
    xt, yt = data.load_mnist(root, "test")
    if args.quick:
        x, y = x[:5000], y[:5000]
    train = data.DataLoader(x, y, batch_size=64, shuffle=True, seed=0)
    test = data.DataLoader(xt, yt, batch_size=1000)
    figures = {spec: run(spec, SETTINGS[spec], train, test, args.quick) for spec in args.models}
    settings = {"models": args.models, "seed": 0, "train_images": len(x), "test_images": len(xt),
                "configs": {spec: {k: ({c.__name__: b for c, b in v.items()} if k == "bits" else v)
                                   for k, v in SETTINGS[spec].items()} for spec in args.models}}
    write_results("deep_compression", settings, figures, quick=args.quick)


if __name__ == "__main__":
    main()
