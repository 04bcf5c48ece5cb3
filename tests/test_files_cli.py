"""Issue 13, the real commands in a subprocess: an output path is checked before any work, an input is never
overwritten, an existing output only with --force (keeping its mode), every error is one line (exit code 2,
no traceback) and no file is changed or left behind; `evaluate` opens every kind the project writes."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_files import KINDS, build

REPO = Path(__file__).resolve().parents[1]


def start(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    env.pop("MINICOMPRESS_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "minicompress", *map(str, argv)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: os.umask(0o022))


def run(*argv, cwd):
    process = start(*argv, cwd=cwd)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def assert_one_line_error(result, command, *pieces):
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"minicompress {command}: error: "), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for piece in pieces:
        assert piece in result.stderr, result.stderr


def snapshot(folder):
    """Every file under folder with its bytes and mode: what must not change."""
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None, p.lstat().st_mode)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def folder(tmp_path):
    build("model", tmp_path / "s.npz")
    return tmp_path


@pytest.mark.parametrize("argv", [
    ["prune", "s.npz", "--out", "s.npz"],
    ["prune", "s.npz", "--out", "./sub/../s.npz", "--force"],
    ["prune", "link.npz", "--out", "s.npz", "--force"],
    ["quantize", "s.npz", "--out", "link.npz", "--force"],
    ["compress", "s.npz", "--out", "s.npz", "--force"],
    ["distill", "--teacher", "s.npz", "--out", "s.npz", "--force"],
], ids=["prune", "prune-dotdot", "prune-symlink", "quantize-symlink", "compress", "distill"])
def test_a_command_never_writes_over_its_input(folder, argv):
    (folder / "sub").mkdir()
    (folder / "link.npz").symlink_to("s.npz")
    before = snapshot(folder)
    result = run(*argv, cwd=folder)
    assert_one_line_error(result, argv[0], "is the input", "choose another file name")
    assert result.stdout == ""  # refused before loading anything
    assert snapshot(folder) == before


def test_an_existing_output_is_refused_before_training_and_replaced_with_force_keeping_its_mode(folder):
    out = folder / "m.npz"
    out.write_bytes(b"someone's work")
    out.chmod(0o640)
    before = snapshot(folder)
    start_time = time.perf_counter()
    result = run("train", "--model", "mlp:784-8-10", "--epochs", "1", "--out", "m.npz", cwd=folder)
    assert_one_line_error(result, "train", "--out m.npz: exists already; pass --force to replace it")
    assert "training" not in result.stdout and time.perf_counter() - start_time < 20
    assert snapshot(folder) == before
    result = run("train", "--model", "mlp:784-8-10", "--epochs", "1", "--out", "m.npz", "--force", "--no-progress",
                 cwd=folder)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() != b"someone's work" and out.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in folder.iterdir()) == ["m.npz", "s.npz"]  # no temporary file left


def test_a_new_output_follows_the_umask(folder):
    result = run("prune", "s.npz", "--amount", "0.5", "--out", "p.npz", "--no-progress", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (folder / "p.npz").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in folder.iterdir()) == ["p.npz", "s.npz"]


@pytest.mark.parametrize("out,message", [
    (".", "--out .: is a folder; give a file name"),
    ("missing/m.npz", "--out missing/m.npz: folder missing does not exist"),
    ("s.npz/m.npz", "--out s.npz/m.npz: s.npz is a file, not a folder"),
])
def test_a_bad_output_path_is_refused_before_any_work(folder, out, message):
    before = snapshot(folder)
    result = run("binarize", "--model", "mlp:784-8-10", "--epochs", "1", "--out", out, cwd=folder)
    assert_one_line_error(result, "binarize", message)
    assert result.stdout == "" and snapshot(folder) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_an_unwritable_folder_is_refused_before_any_work(folder):
    (folder / "ro").mkdir(mode=0o555)
    result = run("train", "--epochs", "1", "--out", "ro/m.npz", cwd=folder)
    assert_one_line_error(result, "train", "folder ro is not writable")


def test_compress_refuses_its_default_output_when_it_exists(folder):
    (folder / "s.dc.npz").write_bytes(b"an earlier result")
    before = snapshot(folder)
    result = run("compress", "s.npz", cwd=folder)
    assert_one_line_error(result, "compress", "--out s.dc.npz: exists already")
    assert snapshot(folder) == before


def test_demo_refuses_a_folder_holding_an_earlier_report(folder):
    (folder / "report").mkdir()
    (folder / "report" / "report.md").write_text("last week's results")
    before = snapshot(folder)
    result = run("demo", "--quick", "--out", "report", cwd=folder)
    assert_one_line_error(result, "demo", "already holds report.md", "--force")
    assert result.stdout == "" and snapshot(folder) == before


def test_two_commands_writing_the_same_output_do_not_both_succeed(folder):
    argv = ("train", "--model", "mlp:784-8-10", "--epochs", "1", "--out", "same.npz", "--no-progress")
    first, second = start(*argv, "--seed", "1", cwd=folder), start(*argv, "--seed", "2", cwd=folder)
    results = [(p.wait(timeout=120), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "appeared while this command ran; nothing was overwritten" in loser or "exists already" in loser
    assert sorted(p.name for p in folder.iterdir()) == ["s.npz", "same.npz"]


def test_evaluate_opens_every_kind_the_project_writes(tmp_path):
    paths = [build(kind, tmp_path / f"{kind}.npz") for kind in KINDS]
    for kind, path in zip(KINDS, paths):
        result = run("evaluate", path.name, "--no-progress", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        shown = {"dynamic": "quantized", "compressed": "deep_compression"}.get(kind, kind)
        assert f"{path.name}: {shown} " in result.stdout and "test accuracy" in result.stdout


def test_evaluate_says_in_one_line_what_is_wrong_with_a_file(folder):
    (folder / "adir.npz").mkdir()
    assert_one_line_error(run("evaluate", "adir.npz", cwd=folder), "evaluate", "adir.npz: not a file")
    raw = bytearray((folder / "s.npz").read_bytes())
    raw[-200] ^= 0xFF  # inside the zip directory
    (folder / "t.npz").write_bytes(bytes(raw))
    assert_one_line_error(run("evaluate", "t.npz", cwd=folder), "evaluate", "t.npz")
