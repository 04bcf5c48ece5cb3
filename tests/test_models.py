"""The model zoo: the papers' architectures, their sizes, specs, and that they learn."""

import numpy as np
import pytest

import minicompress as mc
from minicompress import functional as F
from minicompress import models, optim


def n_params(model):
    return sum(p.size for p in model.parameters())


def test_architectures_have_the_papers_parameter_counts():
    assert n_params(models.lenet300_100()) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert n_params(models.lenet5()) == 61_706
    assert n_params(models.lenet5_caffe()) == 20 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 5010 == 431_080
    assert n_params(models.mlp([784, 30, 30, 10])) == 784 * 30 + 30 + 30 * 30 + 30 + 30 * 10 + 10


@pytest.mark.parametrize("spec", ["lenet300_100", "lenet5", "lenet5_caffe", "mlp:784-30-30-10", "mlp:784-20-10:tanh",
                                  "mlp:784-20-20-10:dropout=0.5", "mlp:784-20-10:tanh:dropout=0.25"])
def test_models_map_images_to_ten_logits_and_rebuild_from_spec(spec):
    model = models.from_spec(spec)
    assert model.spec == spec
    out = model(np.zeros((3, 1, 28, 28), dtype=np.float32))
    assert out.shape == (3, 10) and out.dtype == np.float32
    assert list(models.from_spec(model.spec).state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("spec", ["resnet", "mlp:", "mlp:784-x-10", "mlp:784", "mlp:784-10:gelu",
                                  "mlp:784-10:dropout=1.5", "mlp:784-10:dropout=x", "mlp:784-10:tanh:tanh"])
def test_bad_specs_explain(spec):
    with pytest.raises(ValueError, match="mlp|from_spec"):
        models.from_spec(spec)


def test_mlp_dropout_after_each_hidden_activation_only_in_training():
    model = models.mlp([784, 16, 16, 10], dropout=0.5)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    x = np.random.default_rng(0).normal(size=(4, 1, 28, 28)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model(x).data, model(x).data)  # eval: no dropout, deterministic
    model.train()
    assert not np.array_equal(model(x).data, model(x).data)
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match=f"mlp: dropout must be a number in \\[0, 1\\), got {bad!r}"):
            models.mlp([784, 10], dropout=bad)


@pytest.mark.parametrize("spec", ["lenet300_100", "lenet5"])
def test_models_can_fit_a_small_batch(spec):
    """Sanity check of the whole stack: a model memorises 32 random images in 100 steps."""
    mc.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    model = models.from_spec(spec)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert (model(x).data.argmax(axis=1) == y).mean() == 1.0


def test_dropout_mlp_goes_through_quantization_and_shrink():
    # Dropout is the identity in eval mode, so the Sequential-only tools must pass it through untouched
    from minicompress import pruning
    from minicompress import quantization as Q

    mc.manual_seed(0)
    model = models.mlp([784, 32, 32, 10], dropout=0.5)
    model.eval()
    x = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    reference = model(x).data
    quantized = Q.quantize_static(model, [x], bits=8)
    assert np.abs(quantized(x).data - reference).max() < 0.05 * np.abs(reference).max()
    np.testing.assert_allclose(pruning.shrink(model)(x).data, reference, rtol=1e-5, atol=1e-5)
    qat = Q.prepare_qat(model)
    qat.eval()
    assert np.abs(qat(x).data - reference).max() < 0.05 * np.abs(reference).max()  # fake-quantized, dropout off
