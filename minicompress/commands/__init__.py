"""Subcommands of the `minicompress` command line, one module each (see minicompress/cli.py).

Shared helpers for command modules: argument types, the --data-dir/--dataset options, and data loading.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from minicompress import data
from minicompress.cli import CLIError

DATASETS = ("mnist", "fashion-mnist")


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def size_change(before: int, after: int) -> str:
    """"4.2x smaller", or "1.03x larger" when compression did not pay (a ratio rounded to "1.0x smaller" lied)."""
    if after < before:
        return f"{before / max(after, 1):.1f}x smaller"
    return "the same size" if after == before else f"{after / before:.2f}x larger, nothing saved"


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str | None = "mnist") -> None:
    """--data-dir DIR and --dataset {mnist, fashion-mnist}."""
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder with the IDX files (or their parent); default: the MNIST subset shipped in "
                             "the package (10,000 train / 2,000 test images)")
    default = ("%(default)s" if default_dataset is not None else
               "the dataset recorded in the checkpoint, else mnist")
    parser.add_argument("--dataset", choices=DATASETS, default=default_dataset,
                        help=f"which dataset the IDX files hold (default: {default})")


def load_split(dataset: str, data_dir: Path | None, split: str):
    """(images, labels) of one split for the CLI; user errors (missing folder or files, bad IDX) become CLIError,
    worded with the command's options (--data-dir, --dataset), not the library's argument names."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise CLIError(f"--data-dir {data_dir}: not a folder")
    loader = data.load_mnist if dataset == "mnist" else data.load_fashion_mnist
    shared = data.shared_data_dir()
    if dataset != "mnist" and data_dir is None and shared is None:
        raise CLIError(f"--dataset {dataset}: only the MNIST subset ships with minicompress; pass --data-dir DIR, a "
                       f"folder with the {dataset} IDX files (or set MINICOMPRESS_DATA)")
    try:
        return loader(data_dir, split)
    except FileNotFoundError as exc:
        folder = data_dir if data_dir is not None else shared
        if folder is None:  # the embedded subset itself is missing: a broken install, the library says why
            raise CLIError(str(exc)) from exc
        option = f"--data-dir {folder}" if data_dir is not None else f"no --data-dir given; the shared data folder {folder}"
        images, labels = data._FILES[split]
        raise CLIError(f"{option}: no {dataset} {split} files ({images}[.gz] and {labels}[.gz]) in it or in its "
                       f"{dataset}/ subfolder; download them with minicompress.data.download_dataset({dataset!r}, "
                       "DIR) and pass --data-dir DIR") from exc
    except data.IDXError as exc:
        raise CLIError(f"--data-dir {data_dir or shared}: {exc}") from exc


def describe(dataset: str, data_dir: Path | None) -> str:
    """Where the images come from, for the command's output."""
    if dataset == "mnist" and data_dir is None:
        return "MNIST subset shipped with minicompress"
    return f"{dataset} from {data_dir or data.shared_data_dir()}"


def load_dataset(dataset: str, data_dir: Path | None):
    """(x_train, y_train, x_test, y_test, description) for the CLI."""
    x, y = load_split(dataset, data_dir, "train")
    xt, yt = load_split(dataset, data_dir, "test")
    return x, y, xt, yt, f"{len(x):,} train / {len(xt):,} test images, {describe(dataset, data_dir)}"


def make_test_loader(dataset: str, xt, yt):
    """Test images in order, standardised with the dataset's pixel statistics."""
    mean, std = data.STATS[dataset]
    return data.DataLoader(xt, yt, 500, normalize="standard", mean=mean, std=std)


def loaders(dataset: str, x, y, xt, yt, batch_size: int = 64, seed: int = 0):
    """Train loader (shuffled, seeded) and test loader, standardised with the dataset's pixel statistics."""
    mean, std = data.STATS[dataset]
    train = data.DataLoader(x, y, batch_size, shuffle=True, seed=seed, normalize="standard", mean=mean, std=std)
    return train, make_test_loader(dataset, xt, yt)
