"""Are the notebooks' committed outputs what a fresh run prints? Execute each one and compare, cell by cell.

    python scripts/check_notebooks.py                     # every notebook in tutorials/ and tutorials/labs/
    python scripts/check_notebooks.py tutorials/01_pruning.ipynb --jobs 1
    python scripts/check_notebooks.py --update            # re-execute and write the fresh outputs back

1. What is compared. Every notebook runs in a fresh kernel with one BLAS thread (OPENBLAS/OMP/MKL_NUM_THREADS=1)
   and PYTHONHASHSEED=0, from its own folder; the notebooks fix their own random seeds. Then, for each code cell,
   its text outputs are compared with the committed ones: stdout/stderr streams and the text/plain of results.
   Images, widgets (tqdm bars in Jupyter, sliders) and HTML are skipped, memory addresses (0x7f...) are masked,
   and cells tagged "nondeterministic" in metadata.tags (wall-clock times, anything machine-dependent) are run
   but not compared.
2. What fails. An error in any cell; and every cell whose text differs, reported with the notebook, the cell's
   index in the notebook (from 0, as in nbformat; its first source line is shown too) and the first differing
   line, committed and fresh. Notebooks committed without any output (the students' labs in
   tutorials/labs/student/) are only executed: their lab checks print "not attempted" and must not raise.
3. --update re-executes and writes each notebook back with its fresh outputs (atomically); notebooks committed
   without outputs are left as they are. Use it after a change that moves the numbers, then review the diff.

Per-notebook times are printed, from kernel start to the last cell (tutorials/README.md quotes them).
Exit status 0 when every notebook ran and matched, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GLOBS = ("tutorials/*.ipynb", "tutorials/labs/*.ipynb", "tutorials/labs/student/*.ipynb")
SKIP_TAG = "nondeterministic"
KERNEL_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
# outputs that are pictures or live objects, never compared
VISUAL_MIMETYPES = ("image/", "application/vnd.jupyter.widget", "text/html", "application/javascript")
ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


# 1. What is compared ----------------------------------------------------------------------------------------

def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def cell_text(cell) -> str | None:
    """The text a code cell printed: its streams and text/plain results, in order; None when it is not compared.

    Pictures and widgets are left out; memory addresses are masked (they change on every run).
    """
    if cell.get("cell_type") != "code" or SKIP_TAG in cell.get("metadata", {}).get("tags", []):
        return None
    parts = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(_text(out.get("text", "")))
        elif kind in ("execute_result", "display_data"):
            mimetypes = out.get("data", {})
            if any(m.startswith(VISUAL_MIMETYPES) for m in mimetypes):
                continue
            if "text/plain" in mimetypes:
                parts.append(_text(mimetypes["text/plain"]).rstrip("\n") + "\n")
        elif kind == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}\n")
    return ADDRESS.sub("0x...", "".join(parts))


def has_outputs(nb) -> bool:
    return any(cell.get("outputs") for cell in nb["cells"] if cell.get("cell_type") == "code")


def first_line(cell) -> str:
    source = _text(cell.get("source", "")).strip().splitlines()
    return source[0][:70] if source else ""


def compare(committed, fresh, name: str) -> list[str]:
    """One message per code cell whose compared text differs between two versions of the same notebook."""
    problems = []
    if len(committed["cells"]) != len(fresh["cells"]):
        return [f"{name}: {len(committed['cells'])} cells committed, {len(fresh['cells'])} executed"]
    for i, (old_cell, new_cell) in enumerate(zip(committed["cells"], fresh["cells"])):
        old, new = cell_text(old_cell), cell_text(new_cell)
        if old is None or old == new:
            continue
        old_lines, new_lines = old.splitlines(), new.splitlines()
        k = next((k for k, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b), min(len(old_lines),
                                                                                          len(new_lines)))
        committed_line = old_lines[k] if k < len(old_lines) else "(no more lines)"
        fresh_line = new_lines[k] if k < len(new_lines) else "(no more lines)"
        problems.append(f"{name}: cell {i} ({first_line(old_cell)!r}), output line {k + 1} differs:\n"
                        f"    committed: {committed_line}\n"
                        f"    fresh:     {fresh_line}")
    return problems


# 2. Executing -----------------------------------------------------------------------------------------------

@dataclass
class Result:
    path: str
    seconds: float = 0.0
    compared: int = 0
    executed_only: bool = False
    problems: list[str] = field(default_factory=list)
    updated: bool = False


class NotebookError(Exception):
    """A cell raised, ran out of time or killed the kernel; the message names the cell."""


def execute(nb, folder: Path, timeout: float):
    """Run every cell of `nb` (in place) in a fresh kernel started in `folder`; NotebookError at the first error."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    env = dict(os.environ, **KERNEL_ENV)
    env.pop("MINICOMPRESS_LABS_STRICT", None)  # a student's unattempted exercise is "not attempted", not an error
    client = NotebookClient(nb, timeout=timeout, kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
                            record_timing=False,  # no timestamps in the cells' metadata: --update diffs stay small
                            resources={"metadata": {"path": str(folder)}})
    with client.setup_kernel(env=env, stderr=subprocess.DEVNULL):
        for i, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, i)
            except CellExecutionError as exc:
                raise NotebookError(f"cell {i} ({first_line(cell)!r}) raised {exc.ename}: {exc.evalue}") from None
            except CellTimeoutError:
                raise NotebookError(f"cell {i} ({first_line(cell)!r}) ran longer than {timeout:g} s") from None
            except DeadKernelError:
                raise NotebookError(f"the kernel died in cell {i} ({first_line(cell)!r})") from None


def write_atomic(path: Path, nb) -> None:
    """Write the notebook the way minicompress writes every file: a temporary file moved into place."""
    import nbformat

    from minicompress.checkpoint import atomic_write

    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def check(path: str, update: bool = False, timeout: float = 600) -> Result:
    """Execute the notebook at `path` and compare it with its committed outputs (or write them, with update)."""
    import copy

    import nbformat

    file = Path(path)
    result = Result(path)
    try:
        committed = nbformat.read(file, as_version=4)
    except Exception as exc:  # not JSON, not a notebook: one line, not a traceback from a worker process
        result.problems.append(f"{path}: not a readable notebook ({' '.join(str(exc).split())[:200]})")
        return result
    fresh = copy.deepcopy(committed)
    result.executed_only = not has_outputs(committed)
    start = time.perf_counter()
    try:
        execute(fresh, file.parent.resolve(), timeout)
    except NotebookError as exc:
        result.problems.append(f"{path}: {exc}")
    result.seconds = time.perf_counter() - start
    if result.problems or result.executed_only:
        return result
    result.compared = sum(cell_text(c) is not None for c in committed.cells)
    if update:
        if compare(committed, fresh, path):
            write_atomic(file, fresh)
            result.updated = True
    else:
        result.problems += compare(committed, fresh, path)
    return result


def notebooks(args_paths: list[str]) -> list[str]:
    if args_paths:
        return args_paths
    return [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
            for pattern in DEFAULT_GLOBS for p in sorted(ROOT.glob(pattern))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="notebooks to check (default: tutorials/, tutorials/labs/ and "
                                            "tutorials/labs/student/)")
    p.add_argument("--update", action="store_true", help="write the fresh outputs back instead of comparing")
    p.add_argument("--jobs", type=int, default=2, help="notebooks run in parallel (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per cell (default: %(default)s)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be at least 1")
    if not 0 < args.timeout < float("inf"):
        p.error(f"--timeout {args.timeout:g}: must be a number of seconds > 0")
    paths = notebooks(args.paths)
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)}")
    if not paths:
        print("check_notebooks: no notebooks found")
        return 0
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(paths))) as pool:
        futures = [pool.submit(check, path, args.update, args.timeout) for path in paths]
        results = []
        for future in futures:
            r = future.result()
            results.append(r)
            if r.problems:
                status = "FAILED"
            elif r.executed_only:
                status = "ran (no committed outputs to compare)"
            elif args.update:
                status = "outputs written" if r.updated else "unchanged"
            else:
                status = f"matches ({r.compared} cells compared)"
            print(f"{r.path:<48} {r.seconds:6.1f} s  {status}", flush=True)
    problems = [message for r in results for message in r.problems]
    print(f"{len(results)} notebooks in {time.perf_counter() - start:.0f} s ({args.jobs} at a time)")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        print("\n".join(problems))
        if not args.update:
            print("\nIf the new numbers are right: python scripts/check_notebooks.py --update, then review the diff. "
                  f"A cell whose output depends on the machine carries the tag {SKIP_TAG!r}.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
