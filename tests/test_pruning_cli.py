"""`minicompress prune`: end to end on the embedded MNIST subset with a small untrained-then-saved model."""
import numpy as np
import pytest

import minicompress as mc
from minicompress import checkpoint, cli, models
from minicompress import pruning as prune


@pytest.fixture()
def saved(tmp_path):
    mc.manual_seed(0)
    path = tmp_path / "m.npz"
    checkpoint.save(models.mlp([784, 32, 16, 10]), path)
    return path


@pytest.mark.parametrize("method", ["l1", "global"])
def test_prune_command_prints_report_and_writes_sparse_file(saved, tmp_path, capsys, method):
    out = tmp_path / "p.npz"
    assert cli.main(["prune", str(saved), "--amount", "0.75", "--method", method, "--out", str(out),
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    dense_bytes = 4 * (784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10)
    assert "% left" in text and f"bytes: before {dense_bytes:,}" in text
    assert "test accuracy: before pruning " in text and "(no fine-tuning: --finetune-epochs 0)" in text
    weights = [r for r in prune.sparsity_report(prune.load_sparse(out)) if r["name"].endswith("weight")]
    if method == "l1":
        assert [r["zeros"] for r in weights] == [round(0.75 * r["params"]) for r in weights]
    else:
        assert sum(r["zeros"] for r in weights) == round(0.75 * sum(r["params"] for r in weights))


def test_prune_command_structured_fine_tunes_and_saves_a_smaller_model(saved, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert cli.main(["prune", str(saved), "--amount", "0.5", "--method", "structured", "--finetune-epochs", "1",
                     "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "a smaller dense model" in text
    # accuracy at each step: dense, pruned, fine-tuned
    assert "test accuracy: before pruning " in text and ", after pruning " in text
    assert ", after 1 epoch of fine-tuning " in text
    # shapes before and after shrink, not "100% left" everywhere
    table = text.splitlines()
    assert table[0].split() == ["parameter", "shape", "before", "shape", "after", "params", "before", "params", "after"]
    assert table[1].split() == ["1.weight", "(32,", "784)", "(16,", "784)", "25,088", "12,544"]
    assert table[3].split() == ["3.weight", "(16,", "32)", "(8,", "16)", "512", "128"]
    assert table[6].split() == ["5.bias", "(10,)", "(10,)", "10", "10"]
    assert "% left" not in text
    small = checkpoint.load(out)
    assert small.spec == "mlp:784-16-8-10"
    assert small(np.zeros((1, 1, 28, 28), dtype=np.float32)).shape == (1, 10)


@pytest.mark.parametrize("argv, words", [
    (["--amount", "1.5"], "--amount 1.5"), (["--amount", "nan"], "--amount nan"),
    (["--finetune-epochs", "-1"], "--finetune-epochs -1"),
])
def test_prune_command_bad_values_exit_2_with_one_line(saved, capsys, argv, words):
    assert cli.main(["prune", str(saved), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_prune_command_unknown_method_is_an_argparse_error(saved, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["prune", str(saved), "--method", "random"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
