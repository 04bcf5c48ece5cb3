"""Modules and layers: registration, state dicts, hooks, train/eval, layer gradients, PyTorch layouts."""

import numpy as np
import pytest

import minicompress as mc
from minicompress import gradcheck, nn

rng = np.random.default_rng(2)


def layer_gradcheck(layer, x):
    """Check d(layer(x))/dx and d/dparams with every parameter in float64."""
    names = [n for n, _ in layer.named_parameters()]
    params = [p.data.astype(np.float64) for _, p in layer.named_parameters()]

    def run(x_, *ps):
        for name, p in zip(names, ps):
            module, attr = _owner(layer, name)
            module._parameters[attr] = p  # gradcheck's float64 tensor stands in for the parameter
        return layer(x_)

    return gradcheck(run, [x] + params)


def _owner(root, dotted):
    *path, attr = dotted.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    return module, attr


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(3, 2, bias=False)
        self.register_buffer("steps", np.zeros(1, dtype=np.int64))
        self.note = "not registered"

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_registration_of_parameters_buffers_and_children():
    m = TwoLayer()
    assert [n for n, _ in m.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight"]
    assert [n for n, _ in m.named_buffers()] == ["steps"]
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "act", "fc2"]
    assert [n for n, _ in m.named_children()] == ["fc1", "act", "fc2"]
    assert m.steps.dtype == np.int64
    assert "note" not in m.state_dict()
    assert list(m.state_dict()) == ["steps", "fc1.weight", "fc1.bias", "fc2.weight"]


def test_parameters_can_be_deleted_and_replaced_by_plain_tensors():
    """What pruning does: weight becomes weight_orig * weight_mask, recomputed by a forward pre-hook."""
    lin = nn.Linear(3, 2)
    orig = lin.weight
    del lin.weight
    lin.register_parameter("weight_orig", orig)
    lin.register_buffer("weight_mask", np.array([[1, 0, 1], [0, 1, 1]], dtype=np.float32))

    def recompute(module, inputs):
        module.weight = module.weight_orig * module.weight_mask

    handle = lin.register_forward_pre_hook(recompute)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    lin(x).sum().backward()
    assert [n for n, _ in lin.named_parameters()] == ["bias", "weight_orig"]
    np.testing.assert_array_equal(lin.weight_orig.grad == 0, lin.weight_mask.data == 0)
    handle.remove()
    assert not lin._forward_pre_hooks


def test_pre_hook_can_replace_the_inputs():
    relu = nn.ReLU()
    relu.register_forward_pre_hook(lambda module, inputs: (inputs[0] * -1,))
    np.testing.assert_array_equal(relu(np.array([1.0, -2.0])).data, [0, 2])


def test_assigning_a_non_parameter_to_a_parameter_name_is_an_error():
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign Tensor to parameter 'weight'"):
        lin.weight = mc.tensor(np.zeros((2, 2)))


def test_state_dict_round_trip_is_bit_exact_and_a_copy():
    a, b = TwoLayer(), TwoLayer()
    state = a.state_dict()
    state["fc1.weight"] += 1  # a copy: the model is untouched
    assert not np.array_equal(state["fc1.weight"], a.fc1.weight.data)
    b.load_state_dict(a.state_dict())
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=n)


def test_load_state_dict_errors_name_the_keys_and_shapes():
    m = TwoLayer()
    state = m.state_dict()
    del state["fc1.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['fc1.bias'\], unexpected keys \['extra'\]"):
        m.load_state_dict(state)
    result = m.load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc1.bias"] and result.unexpected_keys == ["extra"]
    state = m.state_dict()
    state["fc2.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"'fc2.weight' has shape \(3, 3\) in the state dict but \(2, 3\)"):
        m.load_state_dict(state)


def test_train_and_eval_reach_every_module():
    m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(2)))
    m.eval()
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())


def test_zero_grad_clears_every_parameter():
    m = TwoLayer()
    m(np.ones((2, 4), dtype=np.float32)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_layouts_and_default_initialisation_as_pytorch():
    mc.manual_seed(0)
    lin, conv = nn.Linear(784, 300), nn.Conv2d(3, 16, 5)
    assert lin.weight.shape == (300, 784) and lin.bias.shape == (300,)
    assert conv.weight.shape == (16, 3, 5, 5)
    for layer, fan_in in ((lin, 784), (conv, 75)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(layer.weight.data).max() <= bound
        assert np.abs(layer.weight.data).max() > 0.95 * bound  # uniform over the whole range
        assert layer.weight.dtype == np.float32


@pytest.mark.parametrize(
    "layer,shape",
    [
        (nn.Linear(4, 3), (5, 4)),
        (nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 5, 5)),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2)), (2, 1, 6, 6)),
        (nn.Sequential(nn.AvgPool2d(2), nn.Sigmoid()), (2, 2, 4, 4)),
        (nn.BatchNorm1d(3), (6, 3)),
        (nn.BatchNorm2d(2), (3, 2, 2, 2)),
    ],
)
def test_layer_gradients(layer, shape):
    assert layer_gradcheck(layer, rng.standard_normal(shape))


def test_batch_norm_layer_eval_mode_gradients_and_running_stats():
    bn = nn.BatchNorm1d(3)
    for _ in range(3):
        bn(rng.standard_normal((8, 3)).astype(np.float32) * 2 + 1)
    assert not np.allclose(bn.running_mean.data, 0)
    bn.eval()
    assert layer_gradcheck(bn, rng.standard_normal((4, 3)))


def test_layers_against_torch():
    torch = pytest.importorskip("torch")
    mc.manual_seed(3)
    ours = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 5))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 5))
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items() if k in theirs.state_dict()},
                           strict=False)
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        np.testing.assert_allclose(ours(x).data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert set(ours.state_dict()) <= set(theirs.state_dict())


def test_layer_errors_name_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Linear\(in_features=784\): input has 100 features in its last axis, shape \(64, 100\)"):
        nn.Linear(784, 10)(np.zeros((64, 100)))
    with pytest.raises(ValueError, match=r"Conv2d\(in_channels=3\): input has 1 channels, shape \(8, 1, 28, 28\)"):
        nn.Conv2d(3, 6, 5)(np.zeros((8, 1, 28, 28)))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(num_features=4\): expected a 4-D input with 4 channels"):
        nn.BatchNorm2d(4)(np.zeros((2, 3, 5, 5)))
    with pytest.raises(ValueError, match="Linear: in_features must be a positive int, got 0"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match="Sequential: argument 1 is a int, not a Module"):
        nn.Sequential(nn.ReLU(), 3)


def test_sequential_indexing_and_repr():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and len(seq[:2]) == 2
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in repr(seq)


def test_replacing_a_child_or_parameter_keeps_its_position():
    """As PyTorch: swapping layer "1" of a Sequential must not move it to the end (that would reorder forward)."""
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    setattr(seq, "1", nn.Tanh())
    assert [type(m).__name__ for m in seq] == ["Linear", "Tanh", "Linear"]
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(np.zeros((2, 2), dtype=np.float32))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]


def test_average_pooling_is_not_a_kind_of_max_pooling():
    assert not isinstance(nn.AvgPool2d(2), nn.MaxPool2d) and not isinstance(nn.MaxPool2d(2), nn.AvgPool2d)
