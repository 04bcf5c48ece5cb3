"""Step-by-step animations and slider views on small models: the frames come from the run, and each update redraws
with the value it was given."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from minicompress import binary, data, models, optim, pipeline, pruning  # noqa: E402
from minicompress import quantization as Q  # noqa: E402
from minicompress.distillation import distill, softmax  # noqa: E402
from minicompress.train import fit, set_seed  # noqa: E402
from minicompress.viz import animate, live  # noqa: E402


@pytest.fixture(scope="module")
def small():
    """600 training and 300 test images of the embedded MNIST subset, and an MLP 784-32-10 trained one epoch."""
    x, y = data.load_mnist(split="train")
    xt, yt = data.load_mnist(split="test")
    x, y, xt, yt = x[:600], y[:600], xt[:300], yt[:300]
    train = data.DataLoader(x, y, 50, shuffle=True, seed=0)
    test = data.DataLoader(xt, yt, 300)
    set_seed(0)
    model = models.mlp([784, 32, 10])
    fit(model, train, 1, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), progress=False)
    return dict(model=model, train=train, test=test, x_test=test.transform(xt[:, None]), y_test=yt)


def titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_pruning_animation_follows_the_agp_schedule(small):
    set_seed(0)
    model = models.mlp([784, 32, 10])
    layers = pruning.prunable(model)
    gradual = pruning.GradualPruning(layers, 0.8, n_steps=4, frequency=3)
    rec = animate.PruningRecorder(gradual, model[1], small["test"], name="layer 1")
    fit(model, small["train"], 2, optim.SGD(model.parameters(), lr=0.1), callbacks=[gradual, rec], progress=False)
    assert [f["step"] for f in rec.frames] == [0, 3, 6, 9, 12]
    anim = animate.pruning_animation(rec)
    assert len(anim) == 5
    for k, f in enumerate(rec.frames):
        s_t = pruning.agp_sparsity(f["step"], 0.8, 0.0, 0, 4, 3)
        assert f["scheduled"] == pytest.approx(s_t)
        assert f["sparsity"] == pytest.approx(round(s_t * f["mask"].size) / f["mask"].size)
        assert np.array_equal(~f["mask"], pruning.unstructured_mask(np.abs(f["weights"]), s_t) == 0)
    fig = anim.figure(3)
    assert f"step 9: sparsity {100 * rec.frames[3]['sparsity']:.1f}%" in titles(fig)
    assert f"test accuracy {100 * rec.frames[3]['accuracy']:.1f}%" in titles(fig)
    assert len(anim.key_frames(3).axes) == 3 * 4
    plt.close("all")


def test_quantization_grid_frames_have_the_bits_asked_for(small):
    w = small["model"][1].weight
    anim = animate.quantization_grid_animation(w, bits=(8, 4, 2), name="layer 1")
    assert [f["bits"] for f in anim.frames] == [8, 4, 2]
    for f in anim.frames:
        assert len(np.unique(f["w_hat"])) <= 2 ** f["bits"]
        assert f["mse"] == pytest.approx(float(np.mean((Q.quantize_tensor(w.data, f["bits"], symmetric=True)
                                                       .dequantize() - w.data) ** 2)))
    assert [f["mse"] for f in anim.frames] == sorted(f["mse"] for f in anim.frames)  # fewer bits, larger error
    assert any(t.startswith("4 bits: 16 levels") for t in titles(anim.figure(1)))
    plt.close("all")


def test_qat_recorder_frames(small):
    qat = Q.prepare_qat(small["model"], bits=4)
    layer = next(m for m in qat if hasattr(m, "weight_qparams"))
    rec = animate.QATRecorder(layer, small["test"], every=4)
    fit(qat, small["train"], 1, optim.SGD(qat.parameters(), lr=0.01), callbacks=[rec], progress=False)
    assert [f["step"] for f in rec.frames] == [0, 4, 8]
    assert rec.frames[0]["changed"] == 0.0
    assert rec.frames[-1]["scale"] == pytest.approx(float(np.ravel(layer.weight_qparams()[0])[0]))
    anim = animate.qat_animation(rec, "layer 1")
    assert "staircase at S" in titles(anim.figure(2))[0]
    plt.close("all")


def test_distillation_frames(small):
    z = np.array([4.0, 1.0, 0.0, -1.0])
    anim = animate.temperature_animation(z, Ts=(1, 5, 20))
    assert [f["T"] for f in anim.frames] == [1, 5, 20]
    np.testing.assert_allclose(anim.frames[1]["p"], softmax(z, 5))
    top = np.sort(softmax(z, 20))[::-1]
    assert f"T = 20: top two {top[0]:.2f}, {top[1]:.2f}" in titles(anim.figure(2))

    teacher = small["model"]
    set_seed(1)
    student = models.mlp([784, 16, 10])
    x0 = small["x_test"][:1]
    from minicompress.train import predict
    rec = animate.StudentRecorder(student, x0, predict(teacher, x0)[0], T=4)
    distill(student, teacher, small["train"], 2, optim.SGD(student.parameters(), lr=0.1), T=4, alpha=0.9,
            callbacks=[rec], progress=False)
    assert [f["epoch"] for f in rec.frames] == [0, 1, 2]
    np.testing.assert_allclose(rec.frames[-1]["q"], softmax(predict(student, x0)[0].astype(np.float64), 4))
    assert rec.frames[-1]["kl"] < rec.frames[0]["kl"]
    assert "epoch 2" in titles(animate.student_animation(rec).figure(2))
    plt.close("all")


def test_binary_animation_from_latent_recorder(small):
    set_seed(0)
    model = binary.binary_mlp([784, 16, 10])
    rec = binary.LatentWeightRecorder(model)
    fit(model, small["train"], 2, optim.Adam(model.parameters(), lr=0.01),
        callbacks=[binary.ClipLatentWeights(), rec], progress=False)
    anim = animate.binary_animation(rec, "1")
    assert len(anim) == 3
    assert anim.frames[2]["flips"] == rec.flips["1"]
    assert f"{rec.flips['1'][1]:,} of {rec.n_weights['1']:,} flipped" in titles(anim.figure(2))
    plt.close("all")


def test_deep_compression_stages(small, tmp_path):
    model = small["model"]
    import copy
    model = copy.deepcopy(model)
    rec = animate.StageRecorder(model[1])
    rec.record("dense float32", model, pipeline.dense_bytes(model), 0.9)
    pruning.prune_to_sparsity(pruning.prunable(model), 0.8)
    rec.record("pruned", model, pruning.sparse_size(model)[-1]["bytes"], 0.85)
    pipeline.share_and_finetune(model, small["train"], bits=3, epochs=0)
    rec.record("weight sharing", model, pipeline.fixed_width_bytes(model), 0.84)
    anim = animate.deep_compression_animation(rec, "layer 1")
    assert [f["weights"].size for f in rec.frames] == [784 * 32, round(0.2 * 784 * 32), round(0.2 * 784 * 32)]
    assert len(np.unique(rec.frames[2]["weights"])) <= 8 and len(rec.frames[2]["codebook"]) == 8
    assert rec.frames[1]["codebook"] is None
    fig = anim.figure(2)
    assert f"weight sharing: {rec.frames[2]['bytes']:,} B" in titles(fig)
    assert "8 shared values" in titles(fig)[1]
    size = len(anim.gif_bytes(dpi=30))
    assert 0 < size < 300_000
    plt.close("all")


def test_slider_updates_redraw_with_the_value_given(small):
    model, x, y = small["model"], small["x_test"], small["y_test"]
    update = live.updater(live.pruning_view, model=model, x=x, y=y, layer=1)
    fig, result = update(amount=0.7)
    assert result["amount"] == 0.7 and result["sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert fig.axes[0].get_title().startswith("amount 0.70")
    assert not pruning.is_pruned(model[1])  # the notebook's model is not touched

    update = live.updater(live.quantization_view, model=model, x=x, y=y)
    (_, per_tensor), (_, per_channel) = update(bits=3, per_channel=False), update(bits=3, per_channel=True)
    assert per_tensor["bits"] == 3 and per_channel["mse"] < per_tensor["mse"]

    z_s, z_t = np.array([1.0, 0.5, 0.0]), np.array([3.0, 1.0, -1.0])
    update = live.updater(live.distillation_view, student_logits=z_s, teacher_logits=z_t, label=0)
    fig, result = update(T=4.0, alpha=1.0)
    np.testing.assert_allclose(result["grad"], 4.0 * (softmax(z_s, 4) - softmax(z_t, 4)), rtol=1e-10)
    assert fig.axes[0].get_title().startswith("T = 4, alpha = 1")

    set_seed(0)
    bnns = {"weights": binary.binary_mlp([784, 16, 16, 10]),
            "weights + activations": binary.binary_mlp([784, 16, 16, 10], binary_activations=True)}
    update = live.updater(live.binary_view, models=bnns, x=x, y=y)
    fig, result = update(mode="weights + activations")
    assert result["binary_inputs"] and result["mode"] == "weights + activations"
    assert fig.axes[0].get_title() == "weights + activations: activations +-1"
    _, result = update(mode="weights")
    assert not result["binary_inputs"]
    fig = live.static_picture(live.pruning_view, [dict(amount=0.5), dict(amount=0.9)], model=model, x=x, y=y)
    assert [ax.get_title()[:11] for ax in fig.axes[::2]] == ["amount 0.50", "amount 0.90"]
    plt.close("all")


def test_graph_and_sharing_views(small):
    fig, result = live.updater(live.graph_view, panels=1, f=lambda t: t * t + 3 * t)(x=-1.5)
    assert result == dict(x=-1.5, y=-2.25, grad=0.0)
    assert fig.axes[0].get_title() == "x = -1.5: y = -2.25, dy/dx = 0"

    import copy
    model = copy.deepcopy(small["model"])
    pruning.prune_to_sparsity(pruning.prunable(model), 0.9)
    update = live.updater(live.sharing_view, model=model, x=small["x_test"], y=small["y_test"])
    fig, result = update(bits=2)
    assert result["bits"] == 2 and result["k"] == 4
    assert fig.axes[0].get_title().startswith("2 bits: accuracy")
    assert pruning.is_pruned(model[1])  # the notebook's model is not touched
    plt.close("all")


def test_live_without_kernel_shows_the_static_picture(small, capsys):
    panel = live.live(live.pruning_view, {"amount": [0.5, 0.9]}, [dict(amount=0.5)], model=small["model"],
                      x=small["x_test"], y=small["y_test"])
    assert panel is None
    assert "static picture" in capsys.readouterr().out


def test_summary_labels_do_not_overlap():
    from minicompress.viz.summary import labels_overlap, plot_summary
    # the demo's rows crowd around 96% and ratios 4 to 16; two points even coincide
    rows = [dict(technique=t, accuracy=a, ratio=r) for t, a, r in [
        ("dense float32", 0.9665, 1), ("pruned 90%", 0.962, 7.9), ("int8 PTQ", 0.966, 3.97), ("int8 QAT", 0.966, 3.97),
        ("4-bit QAT", 0.958, 7.6), ("distilled student", 0.937, 10.6), ("student on labels", 0.9405, 10.6),
        ("binary", 0.88, 29), ("Deep Compression", 0.96, 38), ("pruned 95% + int8", 0.955, 16)]]
    ax = plot_summary(rows)
    texts = [t for t in ax.texts if t.get_text()]
    assert [t.get_text() for t in texts] == [r["technique"] for r in rows]
    assert not labels_overlap(texts)
    plt.close("all")
