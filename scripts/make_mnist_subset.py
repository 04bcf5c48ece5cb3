"""Build minicompress/_data/mnist_subset.npz: a balanced, real MNIST subset shipped inside the package.

    python scripts/make_mnist_subset.py [--data-dir ../shared/data/mnist] [--train-per-class 1000]
                                        [--test-per-class 200] [--seed 0]

For every digit it draws `train-per-class` training and `test-per-class` test images at random (fixed seed),
without replacement, from the full IDX files, and keeps them in their original file order. The result is
deterministic for a given seed and input, so anyone can rebuild and diff it.
Keys: x_train uint8 (N, 28, 28), y_train uint8 (N,), x_test, y_test, and source_index_{train,test} int64 (the
index of each image in the original file, so every embedded digit can be traced back).
"""
import argparse
from pathlib import Path

import numpy as np

from minicompress.data import EMBEDDED_PATH, load_mnist, shared_data_dir


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` indices of each label 0..9, drawn without replacement, returned sorted (original order)."""
    chosen = []
    for digit in range(10):
        pool = np.flatnonzero(labels == digit)
        if len(pool) < per_class:
            raise ValueError(f"digit {digit}: only {len(pool)} images, asked for {per_class}")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_dir = shared_data_dir() / "mnist" if shared_data_dir() else None
    parser.add_argument("--data-dir", type=Path, default=default_dir, required=default_dir is None)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=EMBEDDED_PATH)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        images, labels = load_mnist(args.data_dir, split)
        idx = balanced_indices(labels, per_class, rng)
        arrays[f"x_{split}"] = images[idx]
        arrays[f"y_{split}"] = labels[idx].astype(np.uint8)
        arrays[f"source_index_{split}"] = idx.astype(np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          f"{len(arrays['y_train'])} train, {len(arrays['y_test'])} test images")


if __name__ == "__main__":
    main()
