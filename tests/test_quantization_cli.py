"""`minicompress quantize`: end to end on the embedded MNIST subset with a small saved model."""
import numpy as np
import pytest

import minicompress as mc
from minicompress import checkpoint, cli, models
from minicompress import quantization as Q


@pytest.fixture()
def saved(tmp_path):
    mc.manual_seed(0)
    path = tmp_path / "m.npz"
    checkpoint.save(models.mlp([784, 24, 10]), path)
    return path


@pytest.mark.parametrize("mode, bits", [("dynamic", 8), ("static", 8), ("qat", 4)])
def test_quantize_command_reports_and_writes_a_loadable_model(saved, tmp_path, capsys, mode, bits):
    out = tmp_path / "q.npz"
    argv = ["quantize", str(saved), "--bits", str(bits), "--per-channel", "--mode", mode, "--calib", "128",
            "--qat-epochs", "0.02", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    dense = 4 * (784 * 24 + 24 + 24 * 10 + 10)
    assert f"{mode} {bits}-bit per-channel" in text and f"bytes: before {dense:,}" in text
    loaded = Q.load_quantized(out)
    assert f"after {Q.quantized_nbytes(loaded):,}" in text
    assert loaded(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape == (2, 10)


@pytest.mark.parametrize("argv, words", [
    (["--bits", "12"], "--bits 12: must be in [2, 8] for --mode static"),
    (["--bits", "1", "--mode", "dynamic"], "--bits 1"),
    (["--calib", "0"], "--calib"),
])
def test_quantize_command_bad_values_exit_2_with_one_line(saved, capsys, argv, words):
    try:
        code = cli.main(["quantize", str(saved), *argv])
    except SystemExit as exc:  # argparse type errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
