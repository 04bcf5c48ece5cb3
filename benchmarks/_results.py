"""Where a benchmark's figures go: benchmarks/results/<name>.json, with when, where and how they were measured.

Every benchmark ends with one call

    from _results import write_results
    write_results("pruning", settings={"seed": 0, ...}, figures={"lenet300_100": {...}, ...})

which writes benchmarks/results/pruning.json atomically:

    {"name": "pruning",
     "date": "2026-12-02T01:23:45Z",                        UTC, to the second
     "commit": "5b5ee64 (dirty)",                           git HEAD when the file is written; "(dirty)": uncommitted edits
     "machine": {"platform", "machine", "cpu_count", "python", "numpy", "blas_threads", "load_average_1min"},
     "command": "python benchmarks/pruning.py --seed 0",   how to measure it again
     "settings": {...},                                     what the run was asked to do
     "figures": {...}}                                      what it measured

The README's figures are generated from these files by scripts/readme_figures.py, and tests/test_readme_figures.py
fails when the two disagree, so a figure in the README is always one that a committed command produced. A results
file is the benchmark's own output: a new run replaces it (git keeps the old one). Smoke runs (`--quick`) write
<name>-quick.json instead, which git ignores, so they never replace a real measurement.
MINICOMPRESS_RESULTS_DIR redirects the files elsewhere (the tests use it).
"""
from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def git_commit(folder: Path = RESULTS_DIR) -> str:
    """Short hash of HEAD, with " (dirty)" when tracked files differ from it; "unknown" outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=folder.parent, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        # the results files themselves do not make a checkout dirty: one benchmark's run writes them before the next
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" (dirty)" if dirty else "")


def machine() -> dict:
    """What the figures depend on: the CPU, how many cores, Python, NumPy and how many BLAS threads it may use."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        # unset means: the BLAS library picks (usually one thread per core)
        "blas_threads": {name: os.environ.get(name, "unset") for name in BLAS_VARIABLES},
        # timings on a shared machine depend on what else runs: 1-minute load average when the run ended
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran, as it would be typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(RESULTS_DIR.parent.parent)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *argv[1:]])


def _plain(value):
    """JSON-ready copy: NumPy scalars and arrays to Python numbers and lists, tuples to lists, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a figure that is not a number is "none"
    if isinstance(value, Path):
        return str(value)
    return value


def results_path(name: str, quick: bool = False) -> Path:
    folder = Path(os.environ.get("MINICOMPRESS_RESULTS_DIR", RESULTS_DIR))
    return folder / f"{name}{'-quick' if quick else ''}.json"


def write_results(name: str, settings: dict, figures: dict, *, quick: bool = False,
                  argv: list[str] | None = None) -> Path:
    """Write benchmarks/results/<name>.json (or <name>-quick.json) atomically and return its path.

    name      the benchmark, e.g. "pruning" (letters, digits, "_" and "-")
    settings  JSON-ready dict: the options and recipe of the run (seeds, epochs, models, ...)
    figures   JSON-ready dict: what was measured; NumPy numbers are converted, NaN becomes null
    quick     a smoke run: written to <name>-quick.json, which git ignores
    argv      the command line (default sys.argv)
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"write_results(name={name!r}): use letters, digits, '_' and '-' only")
    if not isinstance(settings, dict) or not isinstance(figures, dict):
        raise TypeError(f"write_results({name!r}): settings and figures must be dicts, got "
                        f"{type(settings).__name__} and {type(figures).__name__}")
    record = {
        "name": name,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "machine": machine(),
        "command": command_line(argv),
        "settings": _plain(settings),
        "figures": _plain(figures),
    }
    path = results_path(name, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    # atomic: a reader sees the old file or the new one, never half of one
    from minicompress.checkpoint import atomic_write

    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    print(f"results: {path}")
    return path


def read_results(name: str, folder: Path | None = None) -> dict | None:
    """The record of benchmarks/results/<name>.json, or None when that benchmark has not been run."""
    path = (folder or results_path(name).parent) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None
