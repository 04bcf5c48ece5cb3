"""Labs: every check passes on the solutions and says "not attempted" on the student versions; the committed student
versions are what `minicompress labs student` writes; the check machinery and the autograder."""
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")

from minicompress.labs import LABS, checking, lab_module, notebooks  # noqa: E402

LABS_DIR = Path(__file__).resolve().parents[1] / "tutorials" / "labs"
STUDENT_DIR = LABS_DIR / "student"


def _run_cells(path):
    """Execute a notebook's code cells in one namespace (no kernel: fast); return what they printed."""
    nb = nbformat.read(path, as_version=4)
    namespace, out = {"__name__": "__lab__"}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{path.name}[{i}]", "exec"), namespace)
    return out.getvalue().splitlines()


def _check_lines(lines):
    pattern = re.compile(checking.LINE_PATTERN)
    return [m.groups() for m in map(pattern.match, lines) if m]


def test_at_least_30_exercises_and_5_per_lab():
    counts = {lab: len(lab_module(lab).LAB.exercises) for lab in LABS.values()}
    assert all(n >= 5 for n in counts.values()), counts
    assert sum(counts.values()) >= 30


@pytest.mark.parametrize("stem", LABS)
def test_every_check_passes_on_the_solutions(stem):
    results = _check_lines(_run_cells(LABS_DIR / f"{stem}.ipynb"))
    exercises = lab_module(LABS[stem]).LAB.exercises
    assert [name for _, _, name, _ in results] == list(exercises)
    assert all(status == "passed" for status, _, _, _ in results), results


@pytest.mark.parametrize("stem", LABS)
def test_student_versions_say_not_attempted(stem):
    results = _check_lines(_run_cells(STUDENT_DIR / f"{stem}.ipynb"))
    assert len(results) == len(lab_module(LABS[stem]).LAB.exercises)
    assert {status for status, _, _, _ in results} == {"not attempted"}


@pytest.mark.parametrize("stem", LABS)
def test_committed_student_versions_are_fresh(stem):
    generated = notebooks.student_version(nbformat.read(LABS_DIR / f"{stem}.ipynb", as_version=4))
    assert nbformat.writes(generated) + "\n" == (STUDENT_DIR / f"{stem}.ipynb").read_text(), (
        "stale student version: run `minicompress labs student tutorials/labs/student --force`")


def test_student_version_keeps_no_solution_and_no_output():
    nb = notebooks.student_version(nbformat.read(LABS_DIR / "01_pruning_lab.ipynb", as_version=4))
    text = nbformat.writes(nb)
    assert "BEGIN SOLUTION" not in text and "np.argsort" not in text.split("Hint")[0]
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["minicompress_lab"] == {"lab": "pruning", "version": "student"}


# ---- stripping ------------------------------------------------------------------------------------------------------


def test_strip_solutions_keeps_indentation_and_the_rest():
    source = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\nprint(f)"
    assert notebooks.strip_solutions(source) == "def f(x):\n    y = 1\n    raise NotImplementedError()\n\nprint(f)"
    assert notebooks.strip_solutions("a\n### BEGIN SOLUTION\nb\n### END SOLUTION", "YOUR ANSWER HERE") == \
        "a\nYOUR ANSWER HERE"


@pytest.mark.parametrize("source, message", [("### BEGIN SOLUTION\nx", "never closed"),
                                             ("x\n### END SOLUTION", "without"),
                                             ("### BEGIN SOLUTION\n### BEGIN SOLUTION", "inside another")])
def test_strip_solutions_rejects_broken_markers(source, message):
    with pytest.raises(ValueError, match=message):
        notebooks.strip_solutions(source)


# ---- the check machinery --------------------------------------------------------------------------------------------


def _line(check, fn, capsys):
    check(fn)
    return capsys.readouterr().out.strip()


def test_a_students_exception_is_one_readable_line(capsys):
    from minicompress.labs import pruning

    def importance(w):
        raise ValueError("oops")

    line = _line(pruning.check_importance, importance, capsys)
    assert line.startswith("[failed] 1.1 importance: w=[0.9, -0.05")
    assert "your code raised ValueError: oops at `raise ValueError(\"oops\")`" in line and "Hint: I(w) = |w|" in line


def test_wrong_shapes_none_and_non_functions_are_explained(capsys):
    from minicompress.labs import binary

    assert "shape (1,) instead of (7,)" in _line(binary.check_sign, lambda x: np.ones(1), capsys)
    assert "returned None" in _line(binary.check_sign, lambda x: None, capsys)
    assert "pass your function" in _line(binary.check_sign, "sign", capsys)
    assert "[not attempted] 4.1 sign" in _line(binary.check_sign, lambda x: (_ for _ in ()).throw(
        NotImplementedError()), capsys)


def test_a_check_never_warns_and_never_prints_reference_code(capsys):
    from minicompress.labs import distillation

    line = _line(distillation.check_softmax_T, lambda z, T: np.exp(z / T) / np.exp(z / T).sum(), capsys)
    assert line.count("\n") == 0 and "RuntimeWarning" not in capsys.readouterr().err
    assert "def " not in line and "return" not in line


def test_strict_mode_raises_for_nbgrader(monkeypatch, capsys):
    from minicompress.labs import pruning

    monkeypatch.setenv("MINICOMPRESS_LABS_STRICT", "1")
    with pytest.raises(AssertionError, match="not attempted"):
        pruning.check_importance(lambda w: (_ for _ in ()).throw(NotImplementedError()))
    pruning.check_importance(np.abs)  # passing: no exception
    assert capsys.readouterr().out.startswith("[not attempted]")


# ---- grading --------------------------------------------------------------------------------------------------------


def test_score_reads_the_check_lines_and_cell_errors():
    nb = nbformat.read(STUDENT_DIR / "04_binary_lab.ipynb", as_version=4)
    cells = {c.source.split("(")[0]: c for c in nb.cells if c.cell_type == "code"}
    cells["lab.check_sign"].outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                              text="[passed] 4.1 sign: 4 cases\n")]
    cells["lab.check_xnor_alpha"].outputs = [nbformat.v4.new_output("error", ename="NameError",
                                                                    evalue="name 'xnor_alpha' is not defined")]
    grade = notebooks.score(nb, "binary")
    assert (grade.passed, grade.total) == (1, 5)
    rows = {name: (status, message) for _, name, status, message in grade.rows}
    assert rows["sign"][0] == "passed"
    assert rows["xnor_alpha"][0] == "failed" and "NameError" in rows["xnor_alpha"][1]
    assert rows["pack_signs"][0] == "not attempted"
    assert grade.table().splitlines()[-1] == "score: 1 / 5"


def test_lab_of_reads_metadata_or_file_name(tmp_path):
    nb = nbformat.v4.new_notebook()
    assert notebooks.lab_of(nb, "x/03_distillation_lab.ipynb") == "distillation"
    with pytest.raises(ValueError, match="not a minicompress lab"):
        notebooks.lab_of(nb, "x/homework.ipynb")
    with pytest.raises(ValueError, match="unknown lab"):
        lab_module("nosuchlab")
