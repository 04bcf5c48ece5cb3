"""`minicompress demo`, measured: its table and its run time, into benchmarks/results/demo.json.

The README's demo figures (baseline accuracy, run time, every technique's row) are generated from that file by
scripts/readme_figures.py. Run it after changing anything the demo shows:

    python benchmarks/demo.py                 # the README's `minicompress demo`, default settings (about 15 s)
    python benchmarks/demo.py --quick         # smoke run: writes demo-quick.json, which git ignores

Extra arguments are passed to `minicompress demo` (e.g. `--seed 1`); the report folder is a temporary one.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from minicompress import cli

from _results import write_results


BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv=None):
    if argv is None and not any(var in os.environ for var in BLAS_VARIABLES):
        # as `minicompress demo` does: one BLAS thread, set before NumPy starts its thread pool
        os.environ.update({var: "1" for var in BLAS_VARIABLES})
        os.execv(sys.executable, [sys.executable, *sys.argv])
    argv = sys.argv[1:] if argv is None else list(argv)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        code = cli.main(["demo", *argv, "--out", folder])
        seconds = time.perf_counter() - start
        if code:
            return code
        report = json.loads((Path(folder) / "report.json").read_text())
    settings = dict(report["settings"], arguments=argv)
    figures = {"seconds": seconds, "rows": report["rows"]}
    write_results("demo", settings, figures, quick=settings["quick"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
