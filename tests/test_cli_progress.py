"""Every command's progress output names its stage and, in a log (stderr not a terminal, as under capsys), is one
plain line per epoch with no carriage return; a bar cut short by a step budget (QAT) still ends full."""
import pytest

from minicompress import cli


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "m.npz"
    assert cli.main(["train", "--model", "mlp:784-16-10", "--epochs", "1", "--out", str(path), "--no-progress"]) == 0
    return str(path)


def _stderr_lines(capsys, argv):
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    return err.splitlines()


def test_train_bar_is_named(capsys, tmp_path):
    lines = _stderr_lines(capsys, ["train", "--model", "mlp:784-16-10", "--epochs", "2", "--out",
                                   str(tmp_path / "m.npz")])
    assert len(lines) == 2
    assert lines[0].startswith("train: mlp:784-16-10, epoch 1/2: 157/157 steps, loss ")
    assert lines[1].startswith("train: mlp:784-16-10, epoch 2/2: 157/157 steps, loss ")


def test_prune_fine_tune_bar_is_named(capsys, small_checkpoint):
    lines = _stderr_lines(capsys, ["prune", small_checkpoint, "--finetune-epochs", "1"])
    assert len(lines) == 1 and lines[0].startswith("prune: fine-tune after l1 90%, epoch 1/1: 157/157 steps")


def test_quantize_qat_bar_is_named_and_ends_full(capsys, small_checkpoint):
    # 0.5 epoch of 157 batches = 78 steps: the bar counts 78, not 157, and reaches 78/78
    lines = _stderr_lines(capsys, ["quantize", small_checkpoint, "--mode", "qat", "--bits", "4", "--qat-epochs",
                                   "0.5", "--calib", "64"])
    assert len(lines) == 1 and lines[0].startswith("quantize: QAT fine-tune (78 steps), epoch 1/1: 78/78 steps")


def test_distill_bars_name_both_students(capsys, small_checkpoint):
    lines = _stderr_lines(capsys, ["distill", "--teacher", small_checkpoint, "--student", "mlp:784-8-10",
                                   "--epochs", "1", "--labels", "500", "--compare"])
    assert len(lines) == 2
    assert lines[0].startswith("distill: student (500 labels + soft targets on 10,000), epoch 1/1: 157/157 steps")
    assert lines[1].startswith("distill: same student, labels only (500 images), epoch 1/1: 157/157 steps")


def test_binarize_bar_is_named(capsys):
    lines = _stderr_lines(capsys, ["binarize", "--model", "mlp:784-16-10", "--epochs", "1"])
    assert len(lines) == 1 and lines[0].startswith("binarize: BinaryConnect 784-16-10, epoch 1/1: 100/100 steps")


def test_compress_bars_name_each_stage(capsys, small_checkpoint, tmp_path):
    lines = _stderr_lines(capsys, ["compress", small_checkpoint, "--rounds", "2", "--bits", "3", "--out",
                                   str(tmp_path / "m.dc.npz")])
    assert [line.split(", epoch")[0] for line in lines] == [
        "Deep Compression: prune round 1/2, fine-tune", "Deep Compression: prune round 2/2, fine-tune",
        "Deep Compression: weight sharing, fine-tune codebooks"]
