"""Solution notebooks -> student versions, and the autograder that scores an executed notebook.

1. Student versions. A lab is written once, with each solution between nbgrader's markers::

       def importance(w):
           ### BEGIN SOLUTION
           return np.abs(w)
           ### END SOLUTION

   ``student_version`` replaces every marked block of a code cell by ``raise NotImplementedError()`` (a markdown
   cell's block by "YOUR ANSWER HERE"), at the indentation of the BEGIN line, and clears all outputs. That is what
   nbgrader's ``generate_assignment`` does with the same markers, so a teacher can use either.
2. Grading. ``grade`` executes a notebook in a fresh kernel (nbclient) with a time limit per cell, reads the one
   line each check printed, and returns a score per exercise of the lab. A cell that raises, a cell that runs past
   the limit, and a kernel that dies each become one clear line instead of a traceback.
"""

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import lab_module
from .checking import FAILED, LINE_PATTERN, NOT_ATTEMPTED, PASSED

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB_CODE = "raise NotImplementedError()"
STUB_MARKDOWN = "YOUR ANSWER HERE"
METADATA_KEY = "minicompress_lab"  # notebook metadata: {"lab": "pruning", "version": "solution" | "student"}


# --------------------------------------------------------------------------------------------------------------------
# 1. Student versions
# --------------------------------------------------------------------------------------------------------------------


def strip_solutions(source, stub=STUB_CODE, where="cell"):
    """``source`` with each BEGIN/END SOLUTION block replaced by ``stub`` at the BEGIN line's indentation."""
    out, inside = [], False
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"strip_solutions: {where}, line {number}: {BEGIN} inside another solution block")
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + stub)
        elif marker == END:
            if not inside:
                raise ValueError(f"strip_solutions: {where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"strip_solutions: {where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def student_version(nb):
    """A copy of the solution notebook ``nb`` (nbformat) with the solutions stripped and every output cleared."""
    import copy

    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        stub = STUB_CODE if cell.cell_type == "code" else STUB_MARKDOWN
        cell.source = strip_solutions(cell.source, stub, where=f"cell {i}")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.setdefault(METADATA_KEY, {})["version"] = "student"
    return nb


def solution_notebooks(source_dir):
    """The lab notebooks (NN_*_lab.ipynb) of ``source_dir``, in order."""
    return sorted(Path(source_dir).glob("[0-9][0-9]_*_lab.ipynb"))


def write_student_versions(source_dir, out_dir):
    """Write the student version of every lab of ``source_dir`` into ``out_dir``; returns the written paths."""
    import nbformat

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in solution_notebooks(source_dir):
        nb = student_version(nbformat.read(path, as_version=4))
        target = out_dir / path.name
        tmp = target.with_name(target.name + ".tmp")
        nbformat.write(nb, tmp)
        tmp.replace(target)
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------------------------------
# 2. Grading
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Grade:
    lab: str
    rows: list                                     # (number, name, status, message), one per exercise
    problems: list = field(default_factory=list)   # one line per cell that raised, timed out or killed the kernel

    @property
    def passed(self):
        return sum(status == PASSED for _, _, status, _ in self.rows)

    @property
    def total(self):
        return len(self.rows)

    def table(self):
        width = max(len(name) for _, name, _, _ in self.rows)
        module = lab_module(self.lab).LAB
        lines = [f"lab {module.number}: {module.title}"]
        lines += [f"  {number:<5}{name:<{width + 2}}{status}" + (f": {message}" if status != PASSED else "")
                  for number, name, status, message in self.rows]
        lines += [f"  ! {p}" for p in self.problems]
        lines.append(f"score: {self.passed} / {self.total}")
        return "\n".join(lines)


def lab_of(nb, path):
    """The lab a notebook belongs to: its metadata, else its file name (NN_<name>_lab.ipynb)."""
    name = nb.metadata.get(METADATA_KEY, {}).get("lab")
    if name is None:
        match = re.fullmatch(r"\d\d_(\w+?)_lab", Path(path).stem)
        if match is None:
            raise ValueError(f"{path}: not a minicompress lab (no '{METADATA_KEY}' metadata and the name is not "
                             f"NN_<lab>_lab.ipynb)")
        name = match.group(1)
    return name


def _text(output):
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "") if "data" in output else ""


def _one_line(text, limit=200):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def score(nb, lab, problems=(), stopped_at=None):
    """Grade from an executed notebook's outputs: every exercise of the lab passed / failed / not attempted.

    stopped_at: index of the cell where execution stopped (time limit, dead kernel); its check failed and the
    checks after it did not run.
    """
    exercises = lab_module(lab).LAB.exercises           # name -> number, in order
    found, cell_errors = {}, {}
    pattern = re.compile(LINE_PATTERN)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            for line in _text(output).splitlines():
                m = pattern.match(line)
                if m and m.group(3) in exercises:
                    found[m.group(3)] = (m.group(1), m.group(4))
            if output.get("output_type") == "error" and output.get("ename") != "KeyboardInterrupt":  # timeouts
                cell_errors[i] = f"cell {i} raised {output.get('ename')}: {_one_line(output.get('evalue', ''))}"
        for name in exercises:
            if name in found or not re.search(rf"\bcheck_{name}\s*\(", cell.source):
                continue
            if stopped_at is not None and i == stopped_at:
                found[name] = (FAILED, f"its check did not finish (cell {i}): {problems[-1]}")
            elif stopped_at is not None and i > stopped_at:
                found[name] = (NOT_ATTEMPTED, f"not run: the notebook stopped at cell {stopped_at}")
            elif i in cell_errors:
                found[name] = (FAILED, f"its check did not run: {cell_errors[i]}")
    rows = []
    for name, number in exercises.items():
        status, message = found.get(name, (NOT_ATTEMPTED, f"no line from check_{name} (was its cell run?)"))
        rows.append((number, name, status, _one_line(message, 300)))
    return Grade(lab, rows, list(cell_errors.values()) + list(problems))


def grade(path, timeout=120, kernel_name="python3"):
    """Execute the notebook at ``path`` (a copy; the file is not changed) and grade it. timeout: seconds per cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable notebook ({_one_line(exc, 120)})") from None
    lab = lab_of(nb, path)
    lab_module(lab)  # unknown lab: a clear error before starting a kernel
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    problems, stopped_at = [], None
    kernel = contextlib.ExitStack()
    try:  # the kernel's start-up chatter on stderr is not the student's
        kernel.enter_context(client.setup_kernel(stderr=subprocess.DEVNULL))
    except Exception as exc:
        raise ValueError(f"could not start the Jupyter kernel {kernel_name!r} ({_one_line(exc, 120)}); "
                         f'install it with pip install -e ".[labs]"') from None
    with kernel:
        for i, cell in enumerate(nb.cells):
            try:
                client.execute_cell(cell, i)
            except CellTimeoutError:
                problems.append(f"stopped: cell {i} ran longer than the time limit of {timeout:g} s (an endless "
                                f"loop?); the cells after it did not run")
                stopped_at = i
                break
            except DeadKernelError as exc:
                problems.append(f"stopped: the kernel died in cell {i} ({_one_line(exc, 120)}); the cells after "
                                f"it did not run")
                stopped_at = i
                break
    return score(nb, lab, problems, stopped_at)
