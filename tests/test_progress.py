"""Progress output: every bar names its stage, ends full, and in a log is one plain line per epoch."""
import sys

import numpy as np

from minicompress import data, models, optim
from minicompress.train import Progress, evaluate, fit, progress_bar


def _loader(n=100, batch_size=10):
    rng = np.random.default_rng(0)
    return data.DataLoader(rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), batch_size)


def test_in_a_log_fit_prints_one_plain_line_per_epoch(capsys):
    model = models.mlp([784, 10])
    fit(model, _loader(), 2, optim.SGD(model.parameters(), lr=0.01), desc="prune: fine-tune")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err and len(lines) == 2
    assert lines[0].startswith("prune: fine-tune, epoch 1/2: 10/10 steps, loss ")
    assert lines[1].startswith("prune: fine-tune, epoch 2/2: 10/10 steps, loss ") and ", acc " in lines[1]


def test_a_bar_cut_by_max_steps_ends_full(capsys, monkeypatch):
    """QAT's budget of 15 steps over 10-batch epochs: the second epoch's bar counts 5 steps and reaches 5/5
    (it used to show the whole epoch and stop half-way)."""
    model = models.mlp([784, 10])
    fit(model, _loader(), 2, optim.SGD(model.parameters(), lr=0.01), max_steps=15, desc="quantize: QAT")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("quantize: QAT, epoch 1/2: 10/10 steps")
    assert lines[1].startswith("quantize: QAT, epoch 2/2: 5/5 steps")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fit(model, _loader(), 2, optim.SGD(model.parameters(), lr=0.01), max_steps=15, desc="quantize: QAT")
    err = capsys.readouterr().err
    assert "quantize: QAT, epoch 2/2: 100%" in err and "5/5" in err


def test_transient_and_disabled_bars_print_nothing_in_a_log(capsys):
    model = models.mlp([784, 10])
    evaluate(model, _loader())                                          # leave=False: nothing in a log
    fit(model, _loader(), 1, optim.SGD(model.parameters(), lr=0.01), progress=False)
    assert capsys.readouterr().err == ""


def test_progress_bar_helper_counts_an_iterable(capsys):
    assert list(progress_bar(range(4), "benchmark: runs")) == [0, 1, 2, 3]
    with Progress("stage", total=3) as bar:
        bar.update(2, loss="0.5")
        bar.update()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("benchmark: runs: 4/4 steps, ")
    assert lines[1].startswith("stage: 3/3 steps, loss 0.5, ")
