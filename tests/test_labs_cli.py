"""`minicompress labs student OUT` and `minicompress labs check NOTEBOOK` (one real kernel run)."""
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from minicompress.cli import main  # noqa: E402

LABS_DIR = Path(__file__).resolve().parents[1] / "tutorials" / "labs"


def test_labs_student_writes_every_lab_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["labs", "student", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*.ipynb"))
    assert written == sorted(p.name for p in LABS_DIR.glob("0*_lab.ipynb")) and len(written) == 6
    assert main(["labs", "student", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["labs", "student", str(tmp_path / "out"), "--force"]) == 0
    assert main(["labs", "student", str(LABS_DIR), "--source", str(LABS_DIR)]) == 2
    assert main(["labs", "student", str(tmp_path / "o2"), "--source", str(tmp_path)]) == 2
    assert "no lab notebooks" in capsys.readouterr().err


@pytest.mark.parametrize("path, message", [("missing.ipynb", "no notebook at"), ("bad.ipynb", "not a readable")])
def test_labs_check_bad_file_is_one_line(tmp_path, capsys, path, message):
    (tmp_path / "bad.ipynb").write_text("{not json")
    assert main(["labs", "check", str(tmp_path / path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_labs_check_grades_a_real_student_notebook(tmp_path, capsys):
    """A student who got 4.1 wrong and 4.2 right, has a NameError in 4.3, an endless loop in 4.4 and a crashing
    cell: every exercise is still scored, each problem in one line."""
    nb = nbformat.read(LABS_DIR / "student" / "04_binary_lab.ipynb", as_version=4)
    answers = {"def sign": "def sign(x):\n    return np.sign(x)",
               "def ste_backward": "def ste_backward(x, g):\n    return g * (np.abs(x) <= 1)",
               "def xnor_alpha": "def xnor_alpha(W):\n    return undefined_name",
               "def pack_signs": "def pack_signs(v):\n    while True:\n        pass"}
    for cell in nb.cells:
        for start, source in answers.items():
            if cell.source.startswith(start):
                cell.source = source
    nb.cells.insert(3, nbformat.v4.new_code_cell("1 / 0"))
    path = tmp_path / "mine.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()

    assert main(["labs", "check", str(path), "--timeout", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "score: 1 / 5"
    rows = {line.split()[1]: line for line in out if line.startswith("  4.")}
    assert "failed: " in rows["sign"] and "sign(0) = +1" in rows["sign"]
    assert rows["ste_backward"].endswith("passed")
    assert "NameError" in rows["xnor_alpha"]
    assert "failed: its check did not finish" in rows["pack_signs"]
    assert "not attempted: not run: the notebook stopped at cell" in rows["xnor_dot"]
    assert any("cell 3 raised ZeroDivisionError" in line for line in out)
    assert any("time limit of 3 s" in line for line in out)
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in out)
    assert path.read_text() == before  # the student's file is not changed



def test_a_missing_kernel_is_a_clear_error():
    from minicompress.labs import notebooks

    with pytest.raises(ValueError, match="could not start the Jupyter kernel 'no-such-kernel'"):
        notebooks.grade(LABS_DIR / "student" / "04_binary_lab.ipynb", kernel_name="no-such-kernel")
