"""Training loop: fit, evaluate and predict, with a tqdm progress bar, a per-epoch History and callbacks.

One training step is the four lines every PyTorch tutorial has:

    logits = model(x); loss = loss_fn(logits, y)
    optimizer.zero_grad(); loss.backward(); optimizer.step()

Callbacks let compression techniques act during training without their own loop. A callback is any object with
one or both of these methods (a missing method is simply not called):

    on_step_end(model, step, loss)
        after optimizer.step() of every batch.
        step: int, index of the step just taken, counted from 0 over the whole run (not reset per epoch);
              step + 1 optimizer steps have been taken so far.
        loss: float, the loss of that batch.
        Used by gradual pruning (update the mask on schedule), QAT (update observers), BinaryConnect (clip the
        latent weights to [-1, 1] right after the update).
    on_epoch_end(model, epoch, history)
        after the epoch's metrics are appended to history (and after the scheduler steps).
        epoch: int, index of the epoch just finished, from 0; history: the History so far (read or append to it).

Progress. Every bar names its stage (fit(desc="prune: fine-tune") shows "prune: fine-tune, epoch 1/3"). On a
terminal or in a notebook it is a tqdm bar; when stderr is neither (a log file, CI), a bar would write one
carriage-return line per refresh, so ``Progress`` prints one plain line when the bar closes instead:

    prune: fine-tune, epoch 1/3: 157/157 steps, loss 0.2113, acc 0.9402, 2.1 s

Callbacks run in the order given. Seeds: fit(seed=s) calls set_seed(s) before the first batch, which seeds the
generator behind weight initialisation and dropout (minicompress.manual_seed); shuffling is seeded by the
DataLoader's own `seed`. Build the model after set_seed(s) to also reproduce its initial weights.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from tqdm.auto import tqdm

import minicompress as mc
from minicompress import functional as F


class History(dict):
    """Per-epoch metrics, one list entry per epoch.

    "loss": mean training loss over the epoch's samples; "accuracy": training accuracy measured on the fly
    (in train mode, while the weights change); "test_accuracy": evaluate() on test_loader after the epoch
    (empty when fit has no test_loader); "lr": learning rate of the first param group during the epoch;
    "time": seconds spent on the epoch's training steps.
    """

    KEYS = ("loss", "accuracy", "test_accuracy", "lr", "time")

    def __init__(self):
        super().__init__({key: [] for key in self.KEYS})

    def __repr__(self):
        last = {k: (round(v[-1], 4) if v else None) for k, v in self.items()}
        return f"History(epochs={len(self['loss'])}, last={last})"


def _in_notebook() -> bool:
    """True in a Jupyter kernel, where tqdm.auto draws a widget that redraws in place."""
    return "ipykernel" in sys.modules and type(sys.stderr).__module__.startswith("ipykernel")


class Progress:
    """A labelled progress bar over ``total`` steps, advanced with update(); use it as a context manager.

    A tqdm bar when stderr is a terminal or in a notebook (where tqdm.auto draws a widget); otherwise nothing
    while it runs and, on close, one plain line "desc: n/total steps, key value, ..., seconds" to stderr, so
    logs get one line per bar (per epoch for fit) instead of carriage-return spill. A transient bar
    (leave=False, such as evaluate's) prints nothing in a log. enabled=False shows nothing at all.
    """

    def __init__(self, desc: str, total: int | None = None, enabled: bool = True, leave: bool = True):
        self.desc, self.total, self.leave, self.n, self.postfix = desc, total, leave, 0, {}
        self.start = time.perf_counter()
        self.live = enabled and (_in_notebook() or sys.stderr.isatty())
        self.plain = enabled and not self.live and leave
        self.bar = tqdm(total=total, desc=desc, leave=leave) if self.live else None

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by n steps; postfix values (already formatted strings or numbers) are shown after the count."""
        self.n += n
        self.postfix.update(postfix)
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.plain:
            self.plain = False
            count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
            extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
            print(f"{self.desc}: {count} steps{extra}, {time.perf_counter() - self.start:.1f} s", file=sys.stderr,
                  flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(iterable, desc: str, total: int | None = None, enabled: bool = True, leave: bool = True):
    """Yield the items of ``iterable`` while a ``Progress`` named ``desc`` counts them (total: len(iterable)
    when it has one). For loops in benchmarks and commands that are not a fit()."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(desc, total, enabled, leave) as bar:
        for item in iterable:
            yield item
            bar.update()


def set_seed(seed: int) -> None:
    """Seed minicompress's generator (weight initialisation, dropout) and NumPy's legacy global generator."""
    mc.manual_seed(seed)
    np.random.seed(seed)


class TrainingDiverged(ValueError, FloatingPointError):
    """The loss became NaN or infinite during fit: the weights blew up, most often from a too large learning rate."""


def _first_bad(array) -> str:
    bad = array[~np.isfinite(array)]
    return f"{bad.size} non-finite values (first: {bad.flat[0]})"


def _nonfinite_parameter(model):
    """Name of the first parameter holding NaN or Inf, or None (also for models without named_parameters)."""
    named = getattr(model, "named_parameters", lambda: ())()
    return next((name for name, p in named if not np.isfinite(p.data).all()), None)


def _check_inputs(x, where: str) -> None:
    """NaN or Inf inputs give a loss or an accuracy that means nothing: refuse them."""
    x = x.data if isinstance(x, mc.Tensor) else np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise ValueError(f"{where}: the input batch of shape {x.shape} holds {_first_bad(x)}; inputs must be finite")


def _check_outputs(model, logits, where: str) -> np.ndarray:
    logits = np.asarray(logits)
    if not np.isfinite(logits).all():
        name = _nonfinite_parameter(model)
        cause = f"parameter {name!r} is not finite" if name else "no parameter is NaN or Inf, so a layer overflowed"
        raise ValueError(f"{where}: the model output holds {_first_bad(logits)}: {cause}")
    return logits


def _count_correct(logits, y, where: str) -> int:
    """Correct argmax predictions; a label outside 0..classes-1 could never be matched, so it is an error."""
    y = np.asarray(y)
    classes = logits.shape[1]
    if y.size and (y.min() < 0 or y.max() >= classes):
        bad = y[(y < 0) | (y >= classes)][0]
        raise ValueError(f"{where}: label {bad} is out of range; the model has {classes} classes, "
                         f"labels 0..{classes - 1}")
    return int((logits.argmax(axis=1) == y).sum())


def fit(model, train_loader, epochs: int, optimizer, loss_fn=None, test_loader=None, callbacks=(),
        progress: bool = True, scheduler=None, seed: int | None = None, max_steps: int | None = None,
        desc: str | None = None) -> History:
    """Train `model` for `epochs` passes over `train_loader`; returns a History (see its docstring).

    train_loader / test_loader: iterables of (x float32 (B, ...), y int64 (B,)), e.g. data.DataLoader.
    loss_fn(logits, y) -> scalar Tensor; default F.cross_entropy (mean over the batch).
    scheduler: optional LR schedule whose step() is called once after each epoch (e.g. optim.StepLR).
    callbacks: see the module docstring for the exact signatures.
    progress: a bar per epoch showing the running loss and accuracy (see ``Progress``), named
    "<desc>, epoch e/E" (desc: the stage, e.g. "distill: student (labels only)"), or "epoch e/E" without desc.
    max_steps: stop after this many optimizer steps in all, even in the middle of an epoch (QAT and codebook
    fine-tuning budgets are counted in steps); that last, partial epoch is recorded in the History as well.
    Refused with ValueError: an epoch without batches (empty training set), NaN or Inf in the parameters before
    training or in an input batch, labels outside 0..classes-1; a loss that becomes NaN or Inf raises
    TrainingDiverged (a ValueError) before that step's update.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"fit(epochs={epochs!r}): must be an int >= 0")
    if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 0):
        raise ValueError(f"fit(max_steps={max_steps!r}): must be an int >= 0 or None")
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    name = _nonfinite_parameter(model)
    if name is not None:
        raise ValueError(f"fit: parameter {name!r} holds NaN or Inf before training; nothing can be learned from it")
    if seed is not None:
        set_seed(seed)
    history = History()
    step = 0
    for epoch in range(epochs):
        if max_steps is not None and step >= max_steps:
            break
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        # the bar counts the steps this epoch will really take, so a max_steps cut ends it full, not half-way
        total = len(train_loader) if hasattr(train_loader, "__len__") else None
        if max_steps is not None and total is not None:
            total = min(total, max_steps - step)
        label = f"epoch {epoch + 1}/{epochs}" if desc is None else f"{desc}, epoch {epoch + 1}/{epochs}"
        bar = Progress(label, total, enabled=progress)
        for x, y in train_loader:
            _check_inputs(x, f"fit (epoch {epoch + 1}, step {step})")
            # an overflow shows up as a non-finite loss, reported below with its step and its cure: no warnings
            with np.errstate(over="ignore", invalid="ignore"):
                logits = model(x)
                loss = loss_fn(logits, y)
                batch_loss = float(loss.item())
                if not np.isfinite(batch_loss):  # checked before the update: the weights stay those of this step
                    raise TrainingDiverged(
                        f"fit: the loss became {batch_loss} at epoch {epoch + 1}, step {step}: training diverged; "
                        f"try a smaller learning rate (lr={optimizer.param_groups[0]['lr']:g})")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            total_loss += batch_loss * len(y)
            correct += _count_correct(logits.data, y, "fit")
            seen += len(y)
            bar.update(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
            for cb in callbacks:
                if hasattr(cb, "on_step_end"):
                    cb.on_step_end(model, step, batch_loss)
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        bar.close()
        if seen == 0:
            raise ValueError(f"fit: train_loader gave no batches in epoch {epoch + 1}; the training set is empty "
                             "(or smaller than one batch with drop_last), so there is nothing to learn from")
        history["time"].append(time.perf_counter() - start)
        history["loss"].append(total_loss / seen)
        history["accuracy"].append(correct / seen)
        history["lr"].append(float(optimizer.param_groups[0]["lr"]))
        if test_loader is not None:
            history["test_accuracy"].append(evaluate(model, test_loader, progress=False))
        if scheduler is not None:
            scheduler.step()
        for cb in callbacks:
            if hasattr(cb, "on_epoch_end"):
                cb.on_epoch_end(model, epoch, history)
    return history


def predict(model, data, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Logits (N, classes) as an ndarray, computed in eval mode under no_grad (the mode is restored after).

    data: an array of model inputs (N, ...), processed `batch_size` rows at a time, or an iterable of
    (x, y) batches such as a DataLoader (y is ignored).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"predict(batch_size={batch_size!r}): must be an int >= 1")
    if isinstance(data, np.ndarray):
        if len(data) == 0:
            raise ValueError("predict: got an empty array")
        batches = (data[i:i + batch_size] for i in range(0, len(data), batch_size))
        total = -(-len(data) // batch_size)
    else:
        batches = (x for x, _ in data)
        total = len(data) if hasattr(data, "__len__") else None
    was_training = model.training
    model.eval()
    try:
        with mc.no_grad():
            outputs = []
            for x in progress_bar(batches, "predict", total, progress, leave=False):
                _check_inputs(x, "predict")
                outputs.append(_check_outputs(model, model(x).data, "predict"))
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("predict: data gave no batches")
    return np.concatenate(outputs)


def evaluate(model, loader, progress: bool = True) -> float:
    """Accuracy in [0, 1] of argmax(model(x)) against y over all batches of `loader`.

    Runs in eval mode (dropout off, batch norm uses running statistics) under no_grad; restores the mode after.
    NaN or Inf inputs or outputs and labels outside 0..classes-1 are refused with ValueError: they would give an
    accuracy that means nothing. `model` may also be a plain function of the inputs returning logits as an array
    (e.g. binary.PackedBinaryModel).
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    correct = seen = 0
    try:
        with mc.no_grad():
            with Progress("evaluate", len(loader) if hasattr(loader, "__len__") else None, progress,
                          leave=False) as bar:
                for x, y in loader:
                    _check_inputs(x, "evaluate")
                    out = model(x)
                    logits = out.data if isinstance(out, mc.Tensor) else out
                    correct += _count_correct(_check_outputs(model, logits, "evaluate"), y, "evaluate")
                    seen += len(y)
                    bar.update(acc=f"{correct / seen:.4f}")
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return correct / seen
