"""The `minicompress` command: help, one-line errors, train -> evaluate, and the demo's row protocol."""
import gzip
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

from minicompress import checkpoint, cli
from minicompress.commands import demo


def run_cli(capsys, *argv):
    """main(argv) in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: --help exits 0, usage errors exit 2
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", [[]] + [[cli.COMMAND_NAMES.get(name, name)] for name in cli.COMMANDS])
def test_help_everywhere(capsys, command):
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0 and "usage: minicompress" in out


def test_commands_list_only_existing_modules():
    parser = cli.build_parser()  # imports every module in COMMANDS
    assert parser.prog == "minicompress"
    assert cli.COMMANDS[:3] == ["train", "evaluate", "demo"] and len(set(cli.COMMANDS)) == len(cli.COMMANDS)


@pytest.mark.parametrize("argv,message", [
    (["train", "--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["train", "--epochs", "three"], "expected an integer >= 1, got 'three'"),
    (["train", "--lr", "-1"], "--lr: expected a number > 0"),
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["train", "--model", "resnet", "--epochs", "1"], "--model resnet"),
    (["train", "--data-dir", "/no/such/folder"], "not a folder"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: COMMAND"),
    (["evaluate"], "required: checkpoint"),
    (["evaluate", "/no/such/model.npz"], "no such file"),
    (["demo", "--only", "nothing"], "no demo for ['nothing']"),
])
def test_bad_arguments_one_line_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_bad_file_via_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    result = subprocess.run([sys.executable, "-m", "minicompress", "evaluate", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("minicompress evaluate: error:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_train_then_evaluate(capsys, tmp_path):
    out = tmp_path / "m.npz"
    code, stdout, _ = run_cli(capsys, "train", "--model", "mlp:784-16-10", "--epochs", "1", "--out", out,
                              "--no-progress")
    assert code == 0 and out.is_file()
    model = checkpoint.load(out)
    meta = model.checkpoint_meta
    assert meta["spec"] == "mlp:784-16-10" and meta["dataset"] == "mnist" and meta["data"] == "embedded"
    assert f"test accuracy {meta['test_accuracy']:.2%}" in stdout
    assert meta["test_accuracy"] > 0.8  # one epoch of a small MLP on 10,000 real digits
    code, stdout, _ = run_cli(capsys, "evaluate", out, "--no-progress")
    assert code == 0
    assert f"test accuracy {meta['test_accuracy']:.2%} on 2,000 test images" in stdout


def write_idx_dataset(folder, n_train=64, n_test=32):
    """Fake IDX files of random images, to test --data-dir without the real data."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", n, 28, 28) + images.tobytes()))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", n) + labels.tobytes()))


def test_train_from_data_dir_fashion(capsys, tmp_path):
    write_idx_dataset(tmp_path / "data" / "fashion-mnist")
    out = tmp_path / "f.npz"
    code, stdout, _ = run_cli(capsys, "train", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "data",
                              "--model", "mlp:784-10", "--epochs", "1", "--out", out, "--no-progress")
    assert code == 0, stdout
    assert "64 train / 32 test images, fashion-mnist from" in stdout
    assert checkpoint.load(out).checkpoint_meta["dataset"] == "fashion-mnist"
    # evaluate picks the checkpoint's dataset; the folder has no MNIST, so asking for it is a clean error
    code, stdout, _ = run_cli(capsys, "evaluate", out, "--data-dir", tmp_path / "data", "--no-progress")
    assert code == 0 and "on 32 test images" in stdout
    code, _, err = run_cli(capsys, "evaluate", out, "--data-dir", tmp_path / "data", "--dataset", "mnist")
    assert code == 2 and "t10k-images-idx3-ubyte" in err


def test_broken_idx_is_a_clean_error(capsys, tmp_path):
    write_idx_dataset(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-9])
    code, _, err = run_cli(capsys, "train", "--data-dir", tmp_path / "mnist", "--epochs", "1")
    assert code == 2 and "broken gzip" in err and err.count("\n") == 1


def test_demo_row_protocol(capsys, tmp_path, monkeypatch):
    """A fake technique module: its rows appear in the table and in the report, ratio filled in from bytes."""
    seen = {}

    def demo_row(ctx):
        seen["ctx"] = ctx
        model = ctx.copy_model()
        for p in model.parameters():
            p.data[...] = 0  # must not touch the baseline
        predict = ctx.model_predict(ctx.model)
        return [{"technique": "fake half", "accuracy": ctx.accuracy(predict), "bytes": ctx.dense_bytes // 2,
                 "infer_ms": ctx.infer_ms(predict), "note": "same | model"},
                {"technique": "fake zero", "accuracy": ctx.accuracy(ctx.model_predict(model)), "bytes": 100,
                 "ratio": 7.0, "infer_ms": None, "note": "", "figure": "fake.png"}]

    module = types.ModuleType("minicompress.commands.fake")
    module.demo_row = demo_row
    module.add_parser = lambda subparsers: subparsers.add_parser("fake")
    monkeypatch.setitem(sys.modules, "minicompress.commands.fake", module)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "fake"])
    out_dir = tmp_path / "report"
    code, stdout, _ = run_cli(capsys, "demo", "--quick", "--only", "fake", "--out", out_dir, "--no-progress")
    assert code == 0
    ctx = seen["ctx"]
    assert ctx.quick and ctx.out_dir == out_dir and ctx.x_test_input.shape == (len(ctx.y_test), 1, 28, 28)
    assert ctx.x_test_input.dtype == np.float32 and ctx.dense_bytes == 4 * 266610
    assert ctx.baseline["accuracy"] > 0.5 and ctx.baseline["ratio"] == 1.0
    lines = stdout.splitlines()
    half = next(line for line in lines if line.startswith("fake half"))
    assert f"{ctx.baseline['accuracy']:.2%}" in half and "2.0x" in half  # the baseline, unchanged
    zero = next(line for line in lines if line.startswith("fake zero"))
    assert "7.0x" in zero and "0.1 KB" in zero
    report = (out_dir / "report.md").read_text()
    assert "| fake half |" in report and "same / model" in report and "![fake zero](fake.png)" in report
    assert checkpoint.load(out_dir / "baseline.npz").spec == "lenet300_100"


def test_demo_quick_with_every_technique(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, "demo", "--quick", "--no-progress", "--out", tmp_path)
    assert code == 0
    assert "baseline (float32)" in stdout
    for name, _ in demo.technique_modules(None):
        assert f"{name}:" in stdout
    assert (tmp_path / "summary.png").stat().st_size > 0
    assert "![accuracy against compression ratio](summary.png)" in (tmp_path / "report.md").read_text()
    # the table says its units (time for the whole test set, how many images) and why int8 / binary are slow here
    units = "infer ms = milliseconds to classify all 500 test images (batches of 500, one run) in NumPy"
    assert units in stdout and units in (tmp_path / "report.md").read_text()
    notes = [line for line in stdout.splitlines() if line.startswith("note: ")]
    assert [n.split(":")[1].strip() for n in notes] == ["int8 is not faster in NumPy", "int8 is faster on real hardware",
                                                         "binary is not faster in NumPy",
                                                         "binary is faster on real hardware"]


def test_table_formatting():
    rows = [{"technique": "a", "accuracy": 0.9712, "bytes": 2048, "ratio": 4.0, "infer_ms": 1.234, "note": "n"}]
    text = demo.table_lines(rows)
    assert text[0].split() == ["technique", "test", "acc", "size", "ratio", "infer", "ms", "note"]
    assert text[2].split() == ["a", "97.12%", "2.0", "KB", "4.0x", "1.2", "n"]
    assert demo.table_lines(rows, markdown=True)[2] == "| a | 97.12% | 2.0 KB | 4.0x | 1.2 | n |"


def test_restarts_once_with_one_blas_thread(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, argv: calls.append(argv))
    monkeypatch.setattr(cli.sys, "argv", ["minicompress", "demo", "--quick"])
    for var in cli._THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    cli._restart_single_threaded()
    assert calls == [[sys.executable, "-m", "minicompress", "demo", "--quick"]]
    assert all(cli.os.environ[var] == "1" for var in cli._THREAD_VARS)
    cli._restart_single_threaded()  # the variables are now set: no second restart
    assert len(calls) == 1
