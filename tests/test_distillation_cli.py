"""`minicompress distill` and the distillation row of `minicompress demo`, on the embedded MNIST subset."""

import pytest

from minicompress import checkpoint, cli, data, models, optim
from minicompress.commands import loaders
from minicompress.commands.distill import DEMO_ALPHA, DEMO_STUDENT, DEMO_T, demo_labels, train_students
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
    assert cli.main(["demo", "--quick", "--only", "distill", "--out", str(tmp_path)]) == 0
    table, log = capsys.readouterr()
    # progress in a log: one named line per epoch
    assert log.splitlines()[0].startswith("demo: baseline lenet300_100, epoch 1/1: 32/32 steps")
    assert log.splitlines()[1].startswith("distill: student (200 labels + soft targets on 2,000), epoch 1/1")
    assert log.splitlines()[2].startswith("distill: same student, labels only (200 images), epoch 1/1: 32/32 steps")
    # --quick keeps 2,000 training images: the student sees 200 labels
    assert "distillation -> 784-30-30-10" in table
    assert "200 labels + teacher's soft targets on all 2,000 images; same student on the 200 labels alone" in table


def test_demo_distillation_setting_gains_over_three_seeds():
    """The demo's setting (transfer set: the student sees a tenth of the labels, the teacher's soft targets cover
    every image; same student, T, alpha, schedule and code path as demo_row), scaled down to run in seconds:
    5,000 training images, a 784-100-10 teacher, 3 epochs. Distillation must beat the labels alone at every seed."""
    x, y = data.load_mnist(split="train")
    xt, yt = data.load_mnist(split="test")
    x, y, xt, yt = x[:5000], y[:5000], xt[:1000], yt[:1000]
    train_loader, test_loader = loaders("mnist", x, y, xt, yt, 64, 0)
    set_seed(0)
    teacher = models.from_spec("mlp:784-100-10")
    opt = optim.Adam(teacher.parameters(), 2e-3)
    fit(teacher, train_loader, 3, opt, scheduler=optim.CosineAnnealingLR(opt, 3), progress=False)
    gains = []
    for seed in (0, 1, 2):
        r = train_students(DEMO_STUDENT, teacher, x, y, test_loader, 3, seed, demo_labels(len(x)), DEMO_T,
                           DEMO_ALPHA, progress=False)
        gains.append(r["distilled"] - r["alone"])
        print(f"seed {seed}: {demo_labels(len(x))} labels + soft targets on {len(x)}: {r['distilled']:.2%}; "
              f"labels alone: {r['alone']:.2%}; gain {100 * gains[-1]:+.1f} points")
    assert min(gains) > 0.01, gains  # measured: +4.9, +4.7, +3.8 points


def test_distill_command_with_few_labels_compares_and_says_the_gain(teacher_file, capsys):
    code = cli.main(["distill", "--teacher", str(teacher_file), "--student", "mlp:784-16-10", "--labels", "300",
                     "--epochs", "1", "--compare", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "the student sees the labels of 300 of the 10,000 training images, the teacher's soft targets on all" in out
    assert "student on labels alone of the 300 labelled images" in out
    assert "points of test accuracy" in out


def test_distill_command_rejects_more_labels_than_images(teacher_file, capsys):
    assert cli.main(["distill", "--teacher", str(teacher_file), "--labels", "20000", "--no-progress"]) == 2
    assert "--labels 20000: the training set has only 10,000 images" in capsys.readouterr().err
