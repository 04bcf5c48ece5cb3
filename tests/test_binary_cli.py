"""The `minicompress binarize` command and its demo row, on the embedded MNIST subset with tiny settings."""

import numpy as np
import pytest

from minicompress import binary, cli
from minicompress.commands import binarize


def run_binarize(argv):
    parser = cli.ArgumentParser(prog="minicompress")
    binarize.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["binarize", *argv])
    return args.func(args)


def test_binarize_trains_packs_and_saves(tmp_path, capsys):
    out = tmp_path / "bnn.npz"
    code = run_binarize(["--model", "mlp:784-32-10", "--epochs", "1", "--activations", "--xnor", "--no-progress",
                         "--out", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "exactly: True" in text and "32.0x" in text
    packed = binary.load(out)
    assert packed.spec == "binary_mlp:784-32-10+act"
    assert [r["packed_bytes"] for r in packed.size_report()] == [32 * 98, 10 * 4]


@pytest.mark.parametrize("model, match", [("lenet5", "expected 'mlp:"), ("mlp:100-10", "784 inputs and 10 outputs")])
def test_binarize_bad_model(model, match):
    with pytest.raises(ValueError, match=match):
        run_binarize(["--model", model, "--epochs", "1", "--no-progress"])


def test_binarize_registered_in_cli(capsys):
    assert "binarize" in cli.COMMANDS
    assert cli.main(["binarize", "--model", "lenet5", "--epochs", "1"]) == 2
    assert "minicompress binarize: error: binary.from_spec" in capsys.readouterr().err


def test_demo_row():
    from minicompress import data
    from minicompress.commands import loaders

    x, y = data.load_mnist(None, "train")
    xt, yt = data.load_mnist(None, "test")
    train_loader, test_loader = loaders("mnist", x[:500], y[:500], xt[:200], yt[:200])

    class Ctx:
        spec, quick, seed, progress, epochs, dense_bytes = "mlp:784-16-10", True, 0, False, 1, 784 * 16 * 4

        def accuracy(self, predict):
            return float(np.mean(np.concatenate([predict(xb).argmax(1) == yb for xb, yb in test_loader])))

        def infer_ms(self, predict):
            return 1.0

    ctx = Ctx()
    ctx.train_loader = train_loader
    row = binarize.demo_row(ctx)
    assert set(row) == {"technique", "accuracy", "bytes", "ratio", "infer_ms", "note"}
    assert row["bytes"] < ctx.dense_bytes / 16 and 0 <= row["accuracy"] <= 1
