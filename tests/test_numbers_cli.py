"""Issue 13, numbers: the real command refuses silently wrong numbers in one line (exit code 2, no traceback)."""
import gzip
import os
import re
import struct
import subprocess
import sys

import numpy as np


def run(*argv, cwd):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("MINICOMPRESS_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "minicompress", *map(str, argv)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def assert_one_line_error(result, command, *pieces):
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"minicompress {command}: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for piece in pieces:
        assert piece in result.stderr, result.stderr


def write_idx(folder, n_train, n_test):
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", n, 28, 28) + images.tobytes()))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", n) + bytes(n)))


def test_train_refuses_an_empty_training_split_before_any_work(tmp_path):
    write_idx(tmp_path / "data", 0, 8)
    result = run("train", "--data-dir", tmp_path / "data", "--epochs", "1", "--out", "m.npz", cwd=tmp_path)
    assert_one_line_error(result, "train", f"--data-dir {tmp_path / 'data'}: the training split holds 0 images")
    assert not (tmp_path / "m.npz").exists()


def test_train_refuses_an_empty_test_split_before_training(tmp_path):
    write_idx(tmp_path / "data", 8, 0)
    result = run("train", "--data-dir", tmp_path / "data", "--epochs", "1", "--out", "m.npz", cwd=tmp_path)
    assert_one_line_error(result, "train", "the test split holds 0 images")
    assert "training" not in result.stdout and not (tmp_path / "m.npz").exists()


def test_train_with_a_diverging_learning_rate_says_so_in_one_line(tmp_path):
    result = run("train", "--model", "mlp:784-16-10", "--lr", "1e300", "--epochs", "1", "--no-progress",
                 "--out", "m.npz", cwd=tmp_path)
    assert_one_line_error(result, "train", "--lr 1e+300: fit: the loss became", "training diverged",
                          "try a smaller learning rate")
    assert not (tmp_path / "m.npz").exists()


def test_distill_refuses_a_temperature_past_float32_before_loading_anything(tmp_path):
    result = run("distill", "--teacher", "missing.npz", "--T", "1e30", cwd=tmp_path)
    assert_one_line_error(result, "distill", "--T 1e+30: must be <= 100")


def test_evaluate_refuses_a_model_with_nan_weights_instead_of_scoring_it(tmp_path):
    from minicompress import checkpoint, models

    model = models.from_spec("mlp:784-16-10")
    list(model.parameters())[0].data[0, 0] = np.nan
    checkpoint.save(model, tmp_path / "nan.npz")
    result = run("evaluate", "nan.npz", "--no-progress", cwd=tmp_path)
    assert_one_line_error(result, "evaluate")
    assert "accuracy" not in result.stdout and re.search("nan|not finite", result.stderr, re.IGNORECASE)


def test_prune_never_calls_a_bigger_file_smaller(tmp_path):
    from minicompress import checkpoint, models

    checkpoint.save(models.from_spec("mlp:784-16-10"), tmp_path / "s.npz")
    result = run("prune", "s.npz", "--amount", "0", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("bytes:"))
    before, after = (int(n.replace(",", "")) for n in re.findall(r"(?:before|after) ([\d,]+)", line))
    assert after > before and line.endswith(f"{after / before:.2f}x larger, nothing saved"), line
    assert "smaller" not in line
