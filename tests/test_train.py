"""fit / evaluate / predict: learning on real digits, callbacks, seeds, modes."""
import sys

import numpy as np
import pytest

import minicompress as mc
from minicompress import data, models, nn, optim
from minicompress.train import History, TrainingDiverged, evaluate, fit, predict, set_seed


@pytest.fixture(scope="module")
def digits():
    """2,500 training and 500 test images of the embedded MNIST subset."""
    x, y = data.load_mnist(split="train")
    xt, yt = data.load_mnist(split="test")
    return x[::4], y[::4], xt[::4], yt[::4]


class Recorder:
    def __init__(self):
        self.steps, self.epochs = [], []

    def on_step_end(self, model, step, loss):
        assert model.training and isinstance(loss, float)
        self.steps.append((step, loss))

    def on_epoch_end(self, model, epoch, history):
        self.epochs.append((epoch, len(history["loss"])))


class EpochOnly:
    def __init__(self):
        self.calls = 0

    def on_epoch_end(self, model, epoch, history):
        self.calls += 1


def test_fit_learns_real_digits_and_calls_callbacks(digits):
    x, y, xt, yt = digits
    set_seed(0)
    model = models.mlp([784, 32, 10])
    train = data.DataLoader(x, y, batch_size=50, shuffle=True, seed=0)
    test = data.DataLoader(xt, yt, batch_size=250)
    rec, epoch_only = Recorder(), EpochOnly()
    history = fit(model, train, 3, optim.Adam(model.parameters(), lr=3e-3), test_loader=test,
                  callbacks=[rec, epoch_only], progress=False)
    assert isinstance(history, History)
    assert all(len(history[k]) == 3 for k in ("loss", "accuracy", "test_accuracy", "lr", "time"))
    assert history["loss"][2] < history["loss"][0]
    assert history["test_accuracy"][-1] > 0.85  # a 784-32-10 MLP on 2,500 real digits (0.87 measured)
    # Steps count from 0 over the whole run; epochs from 0, after their metrics are in the history.
    assert [s for s, _ in rec.steps] == list(range(3 * len(train)))
    assert rec.epochs == [(0, 1), (1, 2), (2, 3)]
    assert epoch_only.calls == 3
    # The recorded batch losses average to the epoch loss (all batches have the same size here).
    np.testing.assert_allclose(np.mean([loss for _, loss in rec.steps[:50]]), history["loss"][0], rtol=1e-5)
    assert history["test_accuracy"][-1] == evaluate(model, test, progress=False)


def test_fit_is_reproducible_with_seeds(digits):
    x, y, _, _ = digits

    def run():
        set_seed(1)
        model = models.mlp([784, 16, 10])
        loader = data.DataLoader(x[:500], y[:500], batch_size=50, shuffle=True, seed=3)
        history = fit(model, loader, 2, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), progress=False)
        return model.state_dict(), history

    (a, ha), (b, hb) = run(), run()
    assert ha["loss"] == hb["loss"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_fit_seed_argument_seeds_dropout(digits):
    x, y, _, _ = digits
    losses = []
    for _ in range(2):
        set_seed(5)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 10))
        loader = data.DataLoader(x[:200], y[:200], batch_size=50)
        mc.manual_seed(123)  # disturb the generator: fit(seed=...) must reset it
        losses.append(fit(model, loader, 1, optim.SGD(model.parameters(), lr=0.1), progress=False, seed=7)["loss"])
    assert losses[0] == losses[1]


def test_fit_scheduler_and_custom_loss(digits):
    x, y, _, _ = digits
    model = models.mlp([784, 10])
    opt = optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def loss_fn(logits, targets):
        calls.append(len(targets))
        return mc.functional.cross_entropy(logits, targets, reduction="sum") / len(targets)

    loader = data.DataLoader(x[:100], y[:100], batch_size=40)
    history = fit(model, loader, 3, opt, loss_fn=loss_fn, scheduler=optim.StepLR(opt, step_size=1, gamma=0.5),
                  progress=False)
    np.testing.assert_allclose(history["lr"], [0.1, 0.05, 0.025])
    assert calls == [40, 40, 20] * 3
    assert history["test_accuracy"] == []


def test_fit_stops_on_nan_and_checks_epochs(digits):
    x, y, _, _ = digits
    model = models.mlp([784, 10])
    loader = data.DataLoader(x[:64], y[:64], batch_size=32)
    with pytest.raises(ValueError, match="epochs=-1"):
        fit(model, loader, -1, optim.SGD(model.parameters(), lr=0.1), progress=False)
    with pytest.raises(FloatingPointError, match="epoch 1, step 0"):
        fit(model, loader, 1, optim.SGD(model.parameters(), lr=0.1), loss_fn=lambda z, t: z.sum() * np.nan,
            progress=False)


class FixedScores(nn.Module):
    """Predicts class = (first pixel value) % 10 via one-hot logits, so accuracy is known exactly."""

    def forward(self, x):
        x = x.data if isinstance(x, mc.Tensor) else x
        classes = x.reshape(len(x), -1)[:, 0].astype(np.int64) % 10
        return mc.Tensor(np.eye(10, dtype=np.float32)[classes])


def test_evaluate_exact_accuracy_and_restores_mode():
    images = np.zeros((10, 28, 28), np.uint8)
    images[:, 0, 0] = np.arange(10)
    labels = np.arange(10)
    labels[:3] = (labels[:3] + 1) % 10  # 3 of 10 wrong
    model = FixedScores().train()
    loader = data.DataLoader(images, labels, batch_size=4, normalize=None)
    assert evaluate(model, loader, progress=False) == pytest.approx(0.7)
    assert model.training
    model.eval()
    evaluate(model, loader, progress=False)
    assert not model.training
    with pytest.raises(ValueError, match="no samples"):
        evaluate(model, [], progress=False)


def test_predict_batches_eval_mode_and_no_graph():
    set_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.Dropout(0.5), nn.Linear(20, 10)).train()
    x = np.random.default_rng(0).random((37, 1, 28, 28), dtype=np.float32)
    out = predict(model, x, batch_size=8)
    assert out.shape == (37, 10) and isinstance(out, np.ndarray) and out.dtype == np.float32
    model.eval()
    with mc.no_grad():
        full = model(x).data
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-6)  # dropout was off, batching changes nothing
    model.train()
    loader = data.DataLoader((x[:, 0] * 255).astype(np.uint8), np.zeros(37, np.int64), batch_size=10)
    assert predict(model, loader).shape == (37, 10)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_progress_bar_shows_loss_and_accuracy(digits, capsys, monkeypatch):
    x, y, _, _ = digits
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: a tqdm bar
    model = models.mlp([784, 10])
    fit(model, data.DataLoader(x[:100], y[:100], batch_size=50), 1, optim.SGD(model.parameters(), lr=0.1),
        desc="train")
    err = capsys.readouterr().err
    assert "train, epoch 1/1" in err and "loss=" in err and "acc=" in err and "2/2" in err


def test_fit_stops_after_max_steps_mid_epoch():
    """A budget in optimizer steps (QAT, codebook fine-tuning): 5 steps of a 10-batch epoch, then stop."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), rng.integers(0, 10, 40)
    model = models.mlp([784, 10])
    steps = []

    class Count:
        def on_step_end(self, model, step, loss):
            steps.append(step)

    history = fit(model, data.DataLoader(x, y, batch_size=4), 3, optim.SGD(model.parameters(), lr=0.1),
                  callbacks=[Count()], progress=False, max_steps=5)
    assert steps == [0, 1, 2, 3, 4] and len(history["loss"]) == 1
    with pytest.raises(ValueError, match=r"fit\(max_steps=-1\)"):
        fit(model, data.DataLoader(x, y), 1, optim.SGD(model.parameters(), lr=0.1), max_steps=-1)


# ---- issue 13: no silently wrong numbers ---------------------------------------------------------------------------


def test_fit_refuses_an_empty_training_set(digits):
    x, y, _, _ = digits
    model = models.mlp([784, 10])
    for loader in (data.DataLoader(x[:0], y[:0]), data.DataLoader(x[:10], y[:10], batch_size=32, drop_last=True)):
        with pytest.raises(ValueError, match="fit: train_loader gave no batches in epoch 1; the training set is empty"):
            fit(model, loader, 2, optim.SGD(model.parameters(), lr=0.1), progress=False)


def test_fit_stops_on_divergence_before_the_update_with_one_clear_error(digits):
    x, y, _, _ = digits
    set_seed(0)
    model = models.mlp([784, 32, 10])
    loader = data.DataLoader(x[:256], y[:256], batch_size=32)
    with pytest.raises(TrainingDiverged, match=r"fit: the loss became (nan|inf) at epoch 1, step \d+: training "
                                               r"diverged; try a smaller learning rate \(lr=1e\+30\)") as info:
        fit(model, loader, 1, optim.SGD(model.parameters(), lr=1e30), progress=False)
    assert isinstance(info.value, ValueError)  # so the command line prints it as one line


def test_nan_or_inf_inputs_are_refused_by_fit_evaluate_and_predict(digits):
    x, y, _, _ = digits
    model = models.mlp([784, 10])
    images = np.full((4, 1, 28, 28), 0.5, dtype=np.float32)
    images[2, 0, 3, 4] = np.nan
    batches = [(images, y[:4])]
    with pytest.raises(ValueError, match=r"evaluate: the input batch of shape \(4, 1, 28, 28\) holds 1 non-finite "
                                         r"values \(first: nan\); inputs must be finite"):
        evaluate(model, batches, progress=False)
    images[2, 0, 3, 4] = np.inf
    with pytest.raises(ValueError, match=r"predict: .* holds 1 non-finite values \(first: inf\)"):
        predict(model, images)
    with pytest.raises(ValueError, match=r"fit \(epoch 1, step 0\): the input batch"):
        fit(model, batches, 1, optim.SGD(model.parameters(), lr=0.1), progress=False)


def test_nan_weights_are_refused_not_scored(digits):
    x, y, xt, yt = digits
    model = models.mlp([784, 16, 10])
    list(model.parameters())[-1].data[3] = np.nan
    name = next(n for n, p in model.named_parameters() if not np.isfinite(p.data).all())
    loader = data.DataLoader(xt, yt, batch_size=100)
    with pytest.raises(ValueError, match=f"evaluate: the model output holds .* parameter '{name}' is not finite"):
        evaluate(model, loader, progress=False)
    with pytest.raises(ValueError, match=f"predict: the model output holds .* parameter '{name}'"):
        predict(model, xt[:10, None].astype(np.float32))
    with pytest.raises(ValueError, match=f"fit: parameter '{name}' holds NaN or Inf before training"):
        fit(model, loader, 1, optim.SGD(model.parameters(), lr=0.1), progress=False)


def test_labels_outside_the_classes_are_an_error_not_zero_accuracy():
    model = FixedScores()
    images = np.zeros((3, 1, 28, 28), dtype=np.float32)
    for bad in (10, -1):
        with pytest.raises(ValueError, match=f"evaluate: label {bad} is out of range; the model has 10 classes, "
                                             "labels 0..9"):
            evaluate(model, [(images, np.array([0, bad, 0]))], progress=False)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_predict_checks_batch_size(batch_size):
    with pytest.raises(ValueError, match=f"predict\\(batch_size={batch_size!r}\\): must be an int >= 1"):
        predict(models.mlp([784, 10]), np.zeros((3, 784), dtype=np.float32), batch_size=batch_size)
