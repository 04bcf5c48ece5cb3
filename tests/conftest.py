"""Shared pytest fixtures: real-data folders (skipped when absent) and a headless matplotlib."""
import os
from pathlib import Path

# The models here are small: BLAS threads bring nothing and, on a busy shared machine, thrash (a 64x784 @ 784x300
# matmul went from 1 ms to 50 ms). Must be set before NumPy is first imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402  (after the BLAS thread settings)

# Plots in tests must never try to open a window.
os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

_REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """MINICOMPRESS_DATA if set, else <repo>/../shared/data (same rule as minicompress.data.shared_data_dir)."""
    env = os.environ.get("MINICOMPRESS_DATA")
    return Path(env) if env else _REPO.parent / "shared" / "data"


def _dataset_dir(name: str) -> Path:
    folder = _shared_data() / name
    if not (folder / "train-labels-idx1-ubyte.gz").exists() and not (folder / "train-labels-idx1-ubyte").exists():
        pytest.skip(f"full {name} not found in {folder}")
    return folder


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the full MNIST IDX files (../shared/data/mnist), or skip the test."""
    return _dataset_dir("mnist")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Folder with the full Fashion-MNIST IDX files (../shared/data/fashion-mnist), or skip the test."""
    return _dataset_dir("fashion-mnist")
