"""`minicompress distill` and the distillation row of `minicompress demo`, on the embedded MNIST subset."""

import pytest

from minicompress import checkpoint, cli, data, models, optim
from minicompress.train import fit, set_seed


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    x, y = data.load_mnist(split="train")
    set_seed(0)
    teacher = models.mlp([784, 64, 10])
    fit(teacher, data.DataLoader(x[:2000], y[:2000], 64, shuffle=True, seed=0, normalize="standard"), 1,
        optim.Adam(teacher.parameters(), 2e-3), progress=False)
    path = tmp_path_factory.mktemp("kd") / "teacher.npz"
    checkpoint.save(teacher, path, meta={"dataset": "mnist"})
    return path


def test_distill_command_trains_and_saves_the_student(teacher_file, tmp_path, capsys):
    out = tmp_path / "student.npz"
    code = cli.main(["distill", "--teacher", str(teacher_file), "--student", "mlp:784-16-10", "--T", "4",
                     "--alpha", "0.9", "--epochs", "1", "--compare", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "T = 4, alpha = 0.9 (soft term x T^2)" in printed
    assert "distilled student: test accuracy" in printed and "student on labels alone" in printed
    student = checkpoint.load(out)
    assert student.spec == "mlp:784-16-10"
    assert student.checkpoint_meta["T"] == 4.0 and student.checkpoint_meta["alpha"] == 0.9


@pytest.mark.parametrize("args, message", [
    (["--alpha", "1.5"], "--alpha 1.5: must be in [0, 1]"),
    (["--student", "mlp:784-16-5"], "--student mlp:784-16-5: it has 5 outputs but the teacher has 10 classes"),
    (["--student", "resnet"], "--student resnet: from_spec: unknown model"),
])
def test_distill_command_bad_arguments(teacher_file, capsys, args, message):
    assert cli.main(["distill", "--teacher", str(teacher_file), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("T", ["0", "-2", "nan"])
def test_distill_command_rejects_bad_temperature(teacher_file, capsys, T):
    with pytest.raises(SystemExit) as exc:
        cli.main(["distill", "--teacher", str(teacher_file), "--T", T])
    assert exc.value.code == 2 and "argument --T: expected a number > 0" in capsys.readouterr().err


def test_demo_has_a_distillation_row(capsys, tmp_path):
    assert cli.main(["demo", "--quick", "--only", "distill", "--no-progress", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "distillation -> 784-30-30-10" in table and "same student on labels alone" in table
