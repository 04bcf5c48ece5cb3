"""Knowledge distillation end to end on the embedded MNIST subset: the teacher -> student loop and the pictures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minicompress import data, models, optim  # noqa: E402
from minicompress.distillation import distill, precompute_teacher_logits, softmax  # noqa: E402
from minicompress.train import evaluate, fit, predict, set_seed  # noqa: E402
from minicompress.viz import distillation as viz  # noqa: E402


@pytest.fixture(scope="module")
def mnist_small():
    x, y = data.load_mnist(split="train")
    xt, yt = data.load_mnist(split="test")
    return x[:2000], y[:2000], xt[:1000], yt[:1000]


@pytest.fixture(scope="module")
def teacher(mnist_small):
    x, y, _, _ = mnist_small
    set_seed(0)
    model = models.mlp([784, 64, 10])
    fit(model, data.DataLoader(x, y, 64, shuffle=True, seed=0), 2, optim.Adam(model.parameters(), 2e-3),
        progress=False)
    return model


def _student_run(mnist_small, teacher, **kw):
    x, y, xt, yt = mnist_small
    set_seed(1)
    student = models.mlp([784, 16, 10])
    loader = data.DataLoader(x, y, 64, shuffle=True, seed=1)
    history = distill(student, teacher, loader, 2, optim.Adam(student.parameters(), 2e-3), T=4.0, alpha=0.9,
                      test_loader=data.DataLoader(xt, yt, 500), progress=False, **kw)
    return student, history


def test_precomputed_teacher_logits_are_the_teachers_outputs(mnist_small, teacher):
    x, y, _, _ = mnist_small
    teacher.train()
    z_t = precompute_teacher_logits(teacher, data.DataLoader(x, y, 128, shuffle=True, seed=3))
    assert teacher.training  # mode restored
    np.testing.assert_allclose(z_t, predict(teacher, x[:, None].astype(np.float32) / 255), rtol=1e-5, atol=1e-5)


def test_distill_trains_the_student_and_leaves_the_teacher_alone(mnist_small, teacher):
    teacher.train()
    teacher.zero_grad()
    before = {k: v.copy() for k, v in teacher.state_dict().items()}
    student, history = _student_run(mnist_small, teacher)
    after = teacher.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(p.grad is None or not p.grad.any() for p in teacher.parameters())
    assert teacher.training  # eval during distillation, mode restored after
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert history["test_accuracy"][-1] > 0.6  # chance is 0.1; 16 hidden units, 2 epochs on 2,000 images


def test_precomputed_and_per_batch_teacher_give_the_same_training(mnist_small, teacher):
    s1, h1 = _student_run(mnist_small, teacher, precompute=True)
    s2, h2 = _student_run(mnist_small, teacher, precompute=False)
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-5)
    for a, b in zip(s1.parameters(), s2.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-6)
    # logits given directly: no teacher model needed at all
    x, y, _, _ = mnist_small
    z_t = precompute_teacher_logits(teacher, data.DataLoader(x, y))
    s3, h3 = _student_run(mnist_small, None, teacher_logits=z_t)
    np.testing.assert_allclose(h1["loss"], h3["loss"], rtol=1e-5)


def test_distill_bad_input(mnist_small, teacher):
    x, y, _, _ = mnist_small
    student = models.mlp([784, 8, 10])
    loader = data.DataLoader(x, y)
    opt = optim.SGD(student.parameters(), 0.1)
    with pytest.raises(ValueError, match=r"distill: temperature T must be a finite number > 0, got T=0"):
        distill(student, teacher, loader, 1, opt, T=0)
    with pytest.raises(ValueError, match=r"distill: alpha .* in \[0, 1\], got alpha=2"):
        distill(student, teacher, loader, 1, opt, alpha=2)
    with pytest.raises(ValueError, match=r"distill: give a teacher model or its precomputed teacher_logits"):
        distill(student, None, loader, 1, opt)
    with pytest.raises(ValueError, match=r"distill: teacher_logits must have shape \(2000, classes\)"):
        distill(student, None, loader, 1, opt, teacher_logits=np.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"kd_loss: teacher has 10 classes but student has 5"):
        distill(models.mlp([784, 5]), teacher, loader, 1, opt, progress=False)
    jitter = data.DataLoader(x, y, max_shift=2)
    with pytest.raises(ValueError, match=r"distill: train_loader shifts its images \(max_shift=2\).*precompute=False"):
        distill(student, teacher, jitter, 1, opt)
    with pytest.raises(ValueError, match=r"max_shift=2"):
        distill(student, None, jitter, 1, opt, teacher_logits=np.zeros((2000, 10)))


def test_jittered_distillation_shows_the_teacher_each_shifted_batch(mnist_small, teacher):
    # with max_shift the teacher must run on every batch, on the very images the student is given
    x, y, _, _ = mnist_small
    def as_array(v):
        return np.array(getattr(v, "data", v))

    seen = []
    handle = teacher.register_forward_pre_hook(lambda module, inputs_: seen.append(as_array(inputs_[0])))
    student = models.mlp([784, 8, 10])
    loader = data.DataLoader(x[:200], y[:200], 50, shuffle=True, seed=0, max_shift=2)
    inputs = []
    student.register_forward_pre_hook(lambda module, inputs_: inputs.append(as_array(inputs_[0])))
    try:
        distill(student, teacher, loader, 1, optim.SGD(student.parameters(), 0.1), precompute=False,
                progress=False)
    finally:
        handle.remove()
    assert len(seen) == 4
    for a, b in zip(seen, inputs):
        np.testing.assert_array_equal(a, b)
    plain = data.DataLoader(x[:200], y[:200], 50, shuffle=True, seed=0)
    assert not any(np.array_equal(a, b) for a, (b, _) in zip(seen, plain))  # they were shifted


def test_soft_target_picture_shows_softmax_at_each_T(mnist_small, teacher):
    x, y, _, _ = mnist_small
    z = predict(teacher, x[:1, None].astype(np.float32) / 255)[0]
    Ts = (1, 2, 5, 20)
    fig = viz.plot_soft_targets(z, Ts, image=x[0], label=int(y[0]))
    axes = fig.axes
    assert len(axes) == 1 + len(Ts)
    for ax, T in zip(axes[1:], Ts):
        heights = [bar.get_height() for bar in ax.patches]
        np.testing.assert_allclose(heights, softmax(z.astype(np.float64), T), rtol=1e-12)
    plt.close(fig)


def test_gradient_picture_T2_keeps_the_scale():
    rng = np.random.default_rng(0)
    z_s, z_t = rng.normal(size=(32, 10)), rng.normal(scale=3, size=(32, 10))
    Ts = np.array([1.0, 10.0, 100.0])
    fig = viz.plot_gradient_vs_T(z_s, z_t, rng.integers(0, 10, 32), Ts)
    with_T2, without = (line.get_ydata() for line in fig.axes[0].get_lines()[:2])
    np.testing.assert_allclose(with_T2, without * Ts**2)
    assert without[2] < without[1] / 50  # ~1/T^2 when unscaled
    assert 0.5 < with_T2[2] / with_T2[1] < 2  # about constant with T^2
    plt.close(fig)


def test_accuracy_picture_and_its_shape_check():
    fig = viz.plot_accuracy_vs_T_alpha([1, 4], [0.5, 0.9], [[0.9, 0.95], [0.92, 0.96]], student_alone=0.9,
                                       teacher=0.98)
    assert len(fig.axes[0].get_lines()) == 4
    plt.close(fig)
    with pytest.raises(ValueError, match=r"accuracy has shape \(2,\), expected .* \(2, 2\)"):
        viz.plot_accuracy_vs_T_alpha([1, 4], [0.5, 0.9], [0.9, 0.95])


def test_distilled_student_is_evaluated_like_any_model(mnist_small, teacher):
    _, _, xt, yt = mnist_small
    student, history = _student_run(mnist_small, teacher)
    assert evaluate(student, data.DataLoader(xt, yt, 500), progress=False) == history["test_accuracy"][-1]


def test_distill_refuses_a_labelled_mask_of_the_wrong_shape(mnist_small, teacher):
    x, y, _, _ = mnist_small
    student = models.mlp([784, 16, 10])
    with pytest.raises(ValueError, match=r"distill: labeled must be a bool mask of shape \(2000,\)"):
        distill(student, teacher, data.DataLoader(x, y, 64), 1, optim.Adam(student.parameters(), 2e-3),
                labeled=np.ones(10, bool), progress=False)


def test_distill_without_labels_learns_from_the_soft_targets_alone(mnist_small, teacher):
    # no label at all (alpha < 1 but every image unlabelled): the soft term alone still teaches the student
    _, history = _student_run(mnist_small, teacher, labeled=np.zeros(2000, bool))
    assert history["test_accuracy"][-1] > 0.5
