"""scripts/check_notebooks.py: a fresh run of a notebook prints what its committed outputs say, or the cell is named."""
import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_notebooks", ROOT / "scripts" / "check_notebooks.py")
check_notebooks = importlib.util.module_from_spec(spec)
sys.modules["check_notebooks"] = check_notebooks
spec.loader.exec_module(check_notebooks)

v4 = nbformat.v4


def notebook(*cells):
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = list(cells)
    return nb


def code(source, *outputs, tags=()):
    cell = v4.new_code_cell(source, outputs=list(outputs))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def stdout(text):
    return v4.new_output("stream", name="stdout", text=text)


def result(**data):
    return v4.new_output("execute_result", data=data, execution_count=1)


def test_a_changed_number_is_reported_with_notebook_cell_and_both_values():
    committed = notebook(v4.new_markdown_cell("# title"), code("print(acc)", stdout("accuracy 95.70%\nbytes 39,546\n")))
    fresh = notebook(v4.new_markdown_cell("# title"), code("print(acc)", stdout("accuracy 95.70%\nbytes 36,417\n")))
    (message,) = check_notebooks.compare(committed, fresh, "t.ipynb")
    assert message == ("t.ipynb: cell 1 ('print(acc)'), output line 2 differs:\n"
                       "    committed: bytes 39,546\n"
                       "    fresh:     bytes 36,417")


def test_every_differing_cell_is_reported_and_missing_lines_are_named():
    committed = notebook(code("a", stdout("1\n")), code("b", stdout("x\n")), code("c", result(**{"text/plain": "3"})))
    fresh = notebook(code("a", stdout("2\n")), code("b", stdout("x\n")), code("c"))
    messages = check_notebooks.compare(committed, fresh, "t.ipynb")
    assert [m.split(" (")[0] for m in messages] == ["t.ipynb: cell 0", "t.ipynb: cell 2"]
    assert messages[1].endswith("committed: 3\n    fresh:     (no more lines)")


def test_tagged_cells_images_widgets_and_addresses_are_not_compared():
    committed = notebook(
        code("t = time()", stdout("ran in 11 s\n"), tags=["nondeterministic"]),
        code("plt.plot()", v4.new_output("display_data", data={"image/png": "AAAA", "text/plain": "<Figure>"}),
             result(**{"text/plain": "[<matplotlib.lines.Line2D at 0x7f3a2b1c9d50>]"})),
        code("fit()", v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a"},
                                                          "text/plain": "epoch 1:  10%"})))
    fresh = notebook(
        code("t = time()", stdout("ran in 20 s\n"), tags=["nondeterministic"]),
        code("plt.plot()", v4.new_output("display_data", data={"image/png": "BBBB", "text/plain": "<Figure>"}),
             result(**{"text/plain": "[<matplotlib.lines.Line2D at 0x7f00000000aa>]"})),
        code("fit()", v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "b"},
                                                          "text/plain": "epoch 1: 100%"})))
    assert check_notebooks.compare(committed, fresh, "t.ipynb") == []
    assert check_notebooks.cell_text(committed.cells[0]) is None


def test_a_different_cell_count_is_one_message():
    assert check_notebooks.compare(notebook(code("a")), notebook(code("a"), code("b")), "t.ipynb") == [
        "t.ipynb: 1 cells committed, 2 executed"]


def test_execution_compares_then_update_writes_the_fresh_outputs(tmp_path):
    pytest.importorskip("nbclient")
    path = tmp_path / "tiny.ipynb"
    nb = notebook(code("import os\nprint(6 * 7, os.environ['OPENBLAS_NUM_THREADS'])", stdout("41 1\n")),
                  code("print('slow')", stdout("old\n"), tags=["nondeterministic"]))
    nbformat.write(nb, path)
    r = check_notebooks.check(str(path))
    assert r.problems == [f"{path}: cell 0 ('import os'), output line 1 differs:\n"
                          "    committed: 41 1\n    fresh:     42 1"]  # and the kernel had one BLAS thread
    assert nbformat.read(path, as_version=4) == nb  # checking never writes
    r = check_notebooks.check(str(path), update=True)
    assert r.updated and r.problems == []
    written = nbformat.read(path, as_version=4)
    assert check_notebooks.cell_text(written.cells[0]) == "42 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.ipynb"]  # no temporary file left


def test_a_notebook_without_outputs_is_only_executed_and_an_error_fails_it(tmp_path):
    pytest.importorskip("nbclient")
    path = tmp_path / "student.ipynb"
    nbformat.write(notebook(code("x = 1"), code("raise NotImplementedError(1.1)"), code("x = 2")), path)
    r = check_notebooks.check(str(path))
    assert r.executed_only
    assert r.problems == [f"{path}: cell 1 ('raise NotImplementedError(1.1)') raised NotImplementedError: 1.1"]


def test_a_file_that_is_not_a_notebook_is_one_line(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json")
    (message,) = check_notebooks.check(str(path)).problems
    assert message.startswith(f"{path}: not a readable notebook (") and "\n" not in message
