"""The README's figures are the benchmarks' recorded results: scripts/readme_figures.py and benchmarks/_results.py."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


figures = load_module("readme_figures", ROOT / "scripts" / "readme_figures.py")
results = load_module("_results", ROOT / "benchmarks" / "_results.py")


def test_readme_agrees_with_the_results_files():
    stale = figures.stale_blocks()
    assert not stale, (f"README.md disagrees with benchmarks/results/ in block(s) {stale}: "
                       f"run python scripts/readme_figures.py")


def test_readme_has_every_block_and_no_hand_written_demo_figures():
    text = (ROOT / "README.md").read_text()
    for name in figures.BLOCKS:
        assert f"<!-- figures:{name} -->" in text and f"<!-- /figures:{name} -->" in text, name
    outside = figures.MARKER.sub("", text)
    for stale in ("96.55%", "about 30 s", "0.9x"):
        assert stale not in outside, f"hand-written figure {stale!r} outside the generated blocks"


def demo_record(tmp_path, accuracy):
    rows = [{"technique": "baseline (float32)", "accuracy": accuracy, "bytes": 1000, "ratio": 1.0, "infer_ms": 2.5,
             "note": "a | b"}]
    settings = {"model": "lenet300_100", "epochs": 6, "seed": 0, "data": "10 images", "quick": False}
    return results.write_results("demo", settings, {"seconds": 12.3, "rows": rows}, argv=["benchmarks/demo.py"])


def test_a_changed_result_is_reported_with_the_block_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOMPRESS_RESULTS_DIR", str(tmp_path))
    demo_record(tmp_path, 0.9655)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:demo -->\nold\n<!-- /figures:demo -->\n<!-- figures:pruning -->\n"
                      "<!-- /figures:pruning -->\nend\n")
    assert figures.stale_blocks(readme, tmp_path) == ["demo", "pruning"]
    assert figures.main(["--readme", str(readme), "--results", str(tmp_path)]) == 0
    text = readme.read_text()
    assert "| baseline (float32) | 96.55% | 1,000 B | 1.0x | 2.5 | a / b |" in text
    assert "Not measured yet in this checkout: `python benchmarks/pruning.py`" in text  # no results: no figure
    assert text.startswith("intro\n") and text.endswith("end\n")
    assert figures.stale_blocks(readme, tmp_path) == []

    demo_record(tmp_path, 0.9665)  # a new run
    assert figures.stale_blocks(readme, tmp_path) == ["demo"]
    assert figures.main(["--check", "--readme", str(readme), "--results", str(tmp_path)]) == 1
    figures.main(["--readme", str(readme), "--results", str(tmp_path)])
    readme.write_text(readme.read_text().replace("96.65%", "99.99%"))  # nor is a hand edit inside a block
    assert figures.stale_blocks(readme, tmp_path) == ["demo"]


def test_unknown_block_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown block <!-- figures:speed -->; known: \["):
        figures.update("<!-- figures:speed -->\n<!-- /figures:speed -->", tmp_path)


def test_write_results_records_date_commit_machine_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOMPRESS_RESULTS_DIR", str(tmp_path))
    path = results.write_results("pruning", {"seed": np.int64(0), "models": ("a", "b")},
                                 {"acc": np.float32(0.5), "errors": np.arange(3), "ratio": math.nan},
                                 argv=[str(ROOT / "benchmarks" / "pruning.py"), "--seed", "0"])
    assert path == tmp_path / "pruning.json"
    record = json.loads(path.read_text())
    assert set(record) == {"name", "date", "commit", "machine", "command", "settings", "figures"}
    assert record["command"] == "python benchmarks/pruning.py --seed 0"
    assert record["settings"] == {"seed": 0, "models": ["a", "b"]}
    assert record["figures"] == {"acc": 0.5, "errors": [0, 1, 2], "ratio": None}  # NaN is not JSON
    assert record["date"].endswith("Z") and len(record["date"]) == 20
    assert record["commit"] != "" and record["machine"]["cpu_count"] >= 1
    assert set(record["machine"]["blas_threads"]) == {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    assert [p.name for p in tmp_path.iterdir()] == ["pruning.json"]  # no temporary file left behind
    quick = results.write_results("pruning", {}, {}, quick=True, argv=["x.py"])
    assert quick.name == "pruning-quick.json"  # a smoke run never replaces the real measurement


def test_write_results_rejects_bad_names_and_types(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICOMPRESS_RESULTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"write_results\(name='../x'\): use letters"):
        results.write_results("../x", {}, {})
    with pytest.raises(TypeError, match="settings and figures must be dicts, got dict and list"):
        results.write_results("x", {}, [1])
    assert list(tmp_path.iterdir()) == []


def test_demo_benchmark_records_the_demo_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINICOMPRESS_RESULTS_DIR", str(tmp_path))
    demo = load_module("benchmark_demo", ROOT / "benchmarks" / "demo.py")
    assert demo.main(["--quick", "--no-progress", "--only", "prune"]) == 0
    record = json.loads((tmp_path / "demo-quick.json").read_text())  # a smoke run: never demo.json
    assert not (tmp_path / "demo.json").exists()
    assert record["settings"]["quick"] is True and record["settings"]["arguments"][0] == "--quick"
    rows = record["figures"]["rows"]
    assert rows[0]["technique"] == "baseline (float32)" and rows[0]["ratio"] == 1.0 and len(rows) >= 2
    assert all(0 <= row["accuracy"] <= 1 and row["bytes"] > 0 for row in rows)
    printed = capsys.readouterr().out
    assert f"{100 * rows[0]['accuracy']:.2f}%" in printed  # the file holds the table the demo printed
