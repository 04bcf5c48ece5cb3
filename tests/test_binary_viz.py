"""Pictures of minicompress.viz.binary: each draws what it claims (checked on the plotted data)."""

import matplotlib.pyplot as plt
import numpy as np

from minicompress import binary
from minicompress.viz import binary as vb


def test_sign_and_ste_plot_shows_the_ste_gradients():
    fig = vb.plot_sign_and_ste()
    left, right = fig.axes
    x, y = left.lines[0].get_data()
    np.testing.assert_array_equal(y, np.where(x >= 0, 1, -1))
    ste = {line.get_label(): line.get_ydata() for line in right.lines}
    x = right.lines[0].get_xdata()
    np.testing.assert_array_equal(ste["ste"], (np.abs(x) <= 1).astype(float))
    np.testing.assert_allclose(ste["approxsign"], np.where(np.abs(x) <= 1, 2 - 2 * np.abs(x), 0))
    plt.close(fig)


def test_recorder_plots_and_bits_per_layer():
    model = binary.binary_mlp([20, 16, 3])
    rec = binary.LatentWeightRecorder(model)
    for epoch in range(3):
        for _, layer in binary.binary_layers(model):
            layer.weight.data *= -0.9 if epoch == 0 else 0.9  # epoch 0 flips every sign, later ones none
        rec.on_epoch_end(model, epoch, {})
    fig = vb.plot_latent_histograms(rec)
    assert [line.get_label() for line in fig.axes[0].lines] == ["before training", "after epoch 2", "after epoch 3"]
    plt.close(fig)
    fig = vb.plot_sign_flips(rec)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1, 1e-7, 1e-7])
    plt.close(fig)
    fig = vb.plot_bits_per_layer(binary.pack_model(model.eval()))
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights[:2] == [32 * 20 * 16, 32 * 16 * 3]  # float32 bits
    assert heights[2:4] == [8 * 16 * 3, 8 * 3 * 2]  # packed: ceil(K / 8) bytes per row
    plt.close(fig)
