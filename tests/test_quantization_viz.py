"""The quantization pictures draw what they claim."""
import numpy as np

from minicompress import quantization as Q
from minicompress.viz import quantization as viz


def test_weight_histogram_draws_the_grid():
    w = np.linspace(-1, 0.5, 200)
    ax = viz.plot_weight_histogram(w, bits=3)
    grid = sorted(line.get_xdata()[0] for line in ax.lines[:-1])
    scale = np.float32(1.0) / np.float32(3.5)  # symmetric 3 bits: max|w| / ((3 - -4) / 2)
    np.testing.assert_allclose(grid, scale * np.arange(-4, 4), rtol=1e-6)
    assert len(viz.plot_weight_histogram(w, bits=8).lines) == 3  # only the range ends, plus zero


def test_error_vs_bits_falls_and_per_channel_helps():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 50)) * np.logspace(-2, 0, 8)[:, None]  # channels of very different size
    err = viz.quantization_errors(w, range(2, 9))
    assert all(a > b for a, b in zip(err["per-tensor"], err["per-tensor"][1:]))
    assert all(c < t for c, t in zip(err["per-channel"], err["per-tensor"]))
    assert len(viz.plot_error_vs_bits(w).lines) == 2


def test_staircase_and_ste_gradient():
    left, right = viz.plot_fake_quant_staircase(scale=0.5, zero_point=0, qmin=-2, qmax=1)
    x, y = left.lines[1].get_xdata(), left.lines[1].get_ydata()
    assert set(np.round(np.unique(y), 6)) == {-1.0, -0.5, 0.0, 0.5}
    grad = right.lines[0].get_ydata()
    inside = (np.round(x / 0.5) >= -2) & (np.round(x / 0.5) <= 1)
    np.testing.assert_array_equal(grad, inside.astype(grad.dtype))
    np.testing.assert_array_equal(y, Q.dequantize(Q.quantize(x, 0.5, 0, -2, 1), 0.5, 0))
