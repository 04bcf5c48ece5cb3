"""Tests of minicompress.pruning: the formula, PyTorch's semantics, bad inputs, schedules, storage, shrinking."""
import copy

import numpy as np
import pytest

import minicompress as mc
from minicompress import nn, optim
from minicompress import pruning as prune


def linear_with(weight, bias=None):
    weight = np.asarray(weight, dtype=np.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data = weight.copy()
    if bias is not None:
        layer.bias.data = np.asarray(bias, dtype=np.float32)
    return layer


def random_weights(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- the formula ---------------------------------------------------------------------------------------------------

def test_importance_is_absolute_value():
    w = np.array([-2.0, 0.5, -0.1, 3.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(prune.importance(w), np.array([2.0, 0.5, 0.1, 3.0, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(prune.importance(mc.tensor(w)), np.abs(w))


def test_l1_unstructured_prunes_smallest_magnitudes_on_concrete_numbers():
    layer = linear_with([[0.3, -0.1, 2.0], [-0.05, 1.0, -0.7]])
    prune.l1_unstructured(layer, "weight", amount=0.5)          # round(0.5 * 6) = 3 smallest |w|
    np.testing.assert_array_equal(layer.weight_mask.data, [[0, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(layer.weight.data, np.float32([[0, 0, 2.0], [0, 1.0, -0.7]]))
    np.testing.assert_array_equal(layer.weight_orig.data, np.float32([[0.3, -0.1, 2.0], [-0.05, 1.0, -0.7]]))


@pytest.mark.parametrize("n, amount", [(5, 0.5), (7, 0.5), (10, 0.25), (10, 0.35), (9, 1 / 3), (3, 0.5)])
def test_number_pruned_is_round_half_to_even(n, amount):
    layer = linear_with(random_weights((1, n)))
    prune.l1_unstructured(layer, "weight", amount=amount)
    assert int((layer.weight_mask.data == 0).sum()) == round(amount * n)


def test_int_amount_is_a_count():
    layer = linear_with(random_weights((3, 4)))
    prune.l1_unstructured(layer, "weight", amount=5)
    assert int((layer.weight_mask.data == 0).sum()) == 5


def test_ties_prune_lowest_flat_index_first():
    layer = linear_with(np.ones((2, 3)))
    prune.l1_unstructured(layer, "weight", amount=4)
    np.testing.assert_array_equal(layer.weight_mask.data, [[0, 0, 0], [0, 1, 1]])
    conv = nn.Conv2d(1, 4, 2)
    conv.weight.data = np.ones((4, 1, 2, 2), dtype=np.float32)
    prune.ln_structured(conv, "weight", amount=2, n=1, dim=0)
    np.testing.assert_array_equal(conv.weight_mask.data.reshape(4, -1).max(axis=1), [0, 0, 1, 1])


def test_repeated_pruning_acts_on_what_is_left():
    layer = linear_with(random_weights((4, 4)))
    prune.l1_unstructured(layer, "weight", amount=0.5)
    first = layer.weight_mask.data.copy()
    prune.l1_unstructured(layer, "weight", amount=0.5)
    assert int(layer.weight_mask.data.sum()) == 4                 # two calls of 0.5 leave 25%
    assert np.all(layer.weight_mask.data <= first)               # never revives a pruned weight
    # the survivors are the 4 largest |w|
    largest = np.argsort(-np.abs(layer.weight_orig.data).ravel(), kind="stable")[:4]
    assert set(np.flatnonzero(layer.weight_mask.data)) == set(largest)


def test_ln_structured_prunes_neurons_by_norm():
    layer = linear_with([[3.0, 0.0], [1.0, 1.0], [-0.5, -0.5], [0.0, -2.5]])
    prune.ln_structured(layer, "weight", amount=0.5, n=2, dim=0)  # L2 norms 3, 1.41, 0.71, 2.5
    np.testing.assert_array_equal(layer.weight_mask.data[:, 0], [1, 0, 0, 1])
    layer = linear_with([[3.0, 0.0], [1.0, 1.0], [-0.5, -0.5], [0.0, -2.5]])
    prune.ln_structured(layer, "weight", amount=1, n=1, dim=1)   # L1 norms of columns 4.5, 4.0
    np.testing.assert_array_equal(layer.weight_mask.data[0], [1, 0])
    np.testing.assert_allclose(prune.ln_norm(layer.weight_orig, np.inf, 0), [3.0, 1.0, 0.5, 2.5])


def test_global_unstructured_uses_one_threshold():
    a, b = linear_with([[0.1, 5.0], [0.2, 6.0]]), linear_with([[1.0, 2.0, 3.0]])
    prune.global_unstructured([(a, "weight"), (b, "weight")], amount=3)
    np.testing.assert_array_equal(a.weight_mask.data, [[0, 1], [0, 1]])
    np.testing.assert_array_equal(b.weight_mask.data, [[0, 1, 1]])


def test_random_unstructured_count_and_seed():
    a, b = linear_with(random_weights((5, 6))), linear_with(random_weights((5, 6)))
    prune.random_unstructured(a, "weight", 0.4, seed=3)
    prune.random_unstructured(b, "weight", 0.4, seed=3)
    assert int((a.weight_mask.data == 0).sum()) == 12
    np.testing.assert_array_equal(a.weight_mask.data, b.weight_mask.data)


def test_custom_from_mask_combines_with_existing_mask():
    layer = linear_with(random_weights((2, 2)))
    prune.custom_from_mask(layer, "weight", np.array([[1, 0], [1, 1]]))
    prune.custom_from_mask(layer, "weight", np.array([[1, 1], [0, 1]]))
    np.testing.assert_array_equal(layer.weight_mask.data, [[1, 0], [0, 1]])


# ---- amount 0 and 1 ------------------------------------------------------------------------------------------------

def test_amount_zero_reparametrises_with_all_ones():
    layer = linear_with(random_weights((3, 2)), bias=[0.1, 0.2, 0.3])
    prune.l1_unstructured(layer, "weight", amount=0.0)
    assert prune.is_pruned(layer)
    np.testing.assert_array_equal(layer.weight_mask.data, np.ones((3, 2)))
    np.testing.assert_array_equal(layer.weight.data, layer.weight_orig.data)


def test_amount_one_prunes_everything_leaving_the_bias():
    layer = linear_with(random_weights((3, 2)), bias=[0.1, 0.2, 0.3])
    prune.l1_unstructured(layer, "weight", amount=1.0)
    assert not layer.weight_mask.data.any()
    out = layer(np.ones((4, 2), dtype=np.float32)).data
    np.testing.assert_allclose(out, np.tile([0.1, 0.2, 0.3], (4, 1)))


# ---- bad inputs ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("amount, error, words", [
    (-0.1, ValueError, "[0, 1]"), (1.5, ValueError, "[0, 1]"), (float("nan"), ValueError, "nan"),
    (-1, ValueError, "allowed 0..6"), (7, ValueError, "only 6"), ("0.5", TypeError, "amount"),
    (True, TypeError, "amount"),
])
def test_bad_amount(amount, error, words):
    layer = linear_with(random_weights((2, 3)))
    with pytest.raises(error, match="l1_unstructured") as info:
        prune.l1_unstructured(layer, "weight", amount)
    assert words in str(info.value)
    assert not prune.is_pruned(layer)


def test_int_amount_counts_only_unpruned_entries():
    layer = linear_with(random_weights((2, 3)))
    prune.l1_unstructured(layer, "weight", 4)
    with pytest.raises(ValueError, match="only 2"):
        prune.l1_unstructured(layer, "weight", 3)


def test_unknown_name_lists_the_parameters():
    with pytest.raises(AttributeError, match=r"'wieght'.*\['weight', 'bias'\]"):
        prune.l1_unstructured(nn.Linear(2, 2), "wieght", 0.5)


@pytest.mark.parametrize("dim", [2, -3, 1.0])
def test_bad_dim(dim):
    with pytest.raises(IndexError, match="ln_structured: dim"):
        prune.ln_structured(nn.Linear(2, 3), "weight", 0.5, n=2, dim=dim)


def test_structured_needs_two_dims_and_positive_n():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        prune.ln_structured(nn.Linear(2, 3), "bias", 0.5, n=2, dim=0)
    with pytest.raises(ValueError, match="n=0"):
        prune.ln_structured(nn.Linear(2, 3), "weight", 0.5, n=0, dim=0)


def test_nan_weights_are_refused():
    layer = linear_with([[1.0, np.nan], [0.5, 2.0]])
    for call in (lambda: prune.l1_unstructured(layer, "weight", 0.5),
                 lambda: prune.ln_structured(layer, "weight", 0.5, n=1, dim=0),
                 lambda: prune.random_unstructured(layer, "weight", 0.5),
                 lambda: prune.global_unstructured([(layer, "weight")], 0.5)):
        with pytest.raises(ValueError, match="1 NaN"):
            call()
    assert not prune.is_pruned(layer)


def test_other_errors():
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="has to be pruned"):
        prune.remove(layer, "weight")
    with pytest.raises(ValueError, match=r"mask has shape \(3,\)"):
        prune.custom_from_mask(layer, "weight", np.ones(3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        prune.custom_from_mask(layer, "weight", np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="empty"):
        prune.global_unstructured([], 0.5)


# ---- reparametrisation, gradients, remove --------------------------------------------------------------------------

def test_reparametrisation_names_like_pytorch():
    layer = nn.Linear(3, 2)
    weight = layer.weight
    prune.l1_unstructured(layer, "weight", amount=0.5)
    assert [n for n, _ in layer.named_parameters()] == ["bias", "weight_orig"]
    assert [n for n, _ in layer.named_buffers()] == ["weight_mask"]
    assert layer.weight_orig is weight                      # optimizers holding it keep working
    assert prune.is_pruned(nn.Sequential(nn.ReLU(), layer))


def test_gradients_of_pruned_weights_are_zero_and_stay_pruned_under_sgd():
    mc.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    prune.l1_unstructured(model[0], "weight", amount=0.6)
    mask = model[0].weight_mask.data.copy()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = random_weights((8, 6), 1), np.arange(8) % 3
    for _ in range(3):
        opt.zero_grad()
        loss = mc.functional.cross_entropy(model(x), y)
        loss.backward()
        assert np.all(model[0].weight_orig.grad[mask == 0] == 0)
        assert np.any(model[0].weight_orig.grad[mask == 1] != 0)
        opt.step()
    model(x)
    assert np.all(model[0].weight.data[mask == 0] == 0)


def test_pre_hook_recomputes_weight_from_orig_and_mask():
    layer = linear_with([[1.0, -2.0], [3.0, 0.5]], bias=[0.0, 0.0])
    prune.l1_unstructured(layer, "weight", amount=2)
    layer.weight_orig.data = layer.weight_orig.data * 10
    out = layer(np.array([[1.0, 1.0]], dtype=np.float32)).data
    np.testing.assert_allclose(out, [[-20.0, 30.0]])


def test_remove_makes_pruning_permanent():
    layer = linear_with([[1.0, -2.0], [3.0, 0.5]], bias=[0.0, 0.0])
    orig = layer.weight
    prune.l1_unstructured(layer, "weight", amount=2)
    prune.remove(layer, "weight")
    assert not prune.is_pruned(layer)
    assert layer.weight is orig and isinstance(layer.weight, nn.Parameter)
    np.testing.assert_array_equal(layer.weight.data, [[0.0, -2.0], [3.0, 0.0]])
    assert sorted(n for n, _ in layer.named_parameters()) == ["bias", "weight"]
    assert list(layer.named_buffers()) == [] and len(layer._forward_pre_hooks) == 0


# ---- agreement with torch.nn.utils.prune ---------------------------------------------------------------------------

def torch_twin(torch, layer):
    if isinstance(layer, nn.Linear):
        twin = torch.nn.Linear(layer.in_features, layer.out_features)
    else:
        twin = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.weight.data))
        twin.bias.copy_(torch.from_numpy(layer.bias.data))
    return twin


def test_masks_agree_with_pytorch():
    torch = pytest.importorskip("torch")
    tp = pytest.importorskip("torch.nn.utils.prune")
    mc.manual_seed(1)
    for amount in (0.0, 0.3, 0.5, 0.77, 1.0, 7):
        ours = nn.Linear(9, 5)
        theirs = torch_twin(torch, ours)
        prune.l1_unstructured(ours, "weight", amount)
        tp.l1_unstructured(theirs, "weight", amount)
        np.testing.assert_array_equal(ours.weight_mask.data, theirs.weight_mask.numpy())
    for layer, dim in ((nn.Linear(7, 6), 0), (nn.Linear(7, 6), 1), (nn.Conv2d(3, 8, 3), 0), (nn.Conv2d(3, 8, 3), 1)):
        for n in (1, 2, float("inf")):
            for amount in (0.25, 0.5, 2):
                ours = copy.deepcopy(layer)
                theirs = torch_twin(torch, layer)
                prune.ln_structured(ours, "weight", amount, n=n, dim=dim)
                tp.ln_structured(theirs, "weight", amount, n=n, dim=dim)
                np.testing.assert_array_equal(ours.weight_mask.data, theirs.weight_mask.numpy())


def test_global_and_repeated_pruning_agree_with_pytorch():
    torch = pytest.importorskip("torch")
    tp = pytest.importorskip("torch.nn.utils.prune")
    mc.manual_seed(2)
    ours = [nn.Linear(10, 8), nn.Linear(8, 6), nn.Conv2d(2, 4, 3)]
    theirs = [torch_twin(torch, m) for m in ours]
    # repeated: l1 then l1 then ln_structured then global then l1 with an int count
    prune.l1_unstructured(ours[0], "weight", 0.3)
    tp.l1_unstructured(theirs[0], "weight", 0.3)
    prune.l1_unstructured(ours[0], "weight", 0.45)
    tp.l1_unstructured(theirs[0], "weight", 0.45)
    prune.ln_structured(ours[1], "weight", 0.5, n=2, dim=0)
    tp.ln_structured(theirs[1], "weight", 0.5, n=2, dim=0)
    prune.ln_structured(ours[0], "weight", 0.25, n=1, dim=1)
    tp.ln_structured(theirs[0], "weight", 0.25, n=1, dim=1)
    for amount in (0.4, 0.3, 25):
        prune.global_unstructured([(m, "weight") for m in ours], amount=amount)
        tp.global_unstructured([(m, "weight") for m in theirs], pruning_method=tp.L1Unstructured, amount=amount)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.weight_mask.data, b.weight_mask.numpy())
    prune.l1_unstructured(ours[1], "weight", 3)
    tp.l1_unstructured(theirs[1], "weight", 3)
    np.testing.assert_array_equal(ours[1].weight_mask.data, theirs[1].weight_mask.numpy())
    x = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(ours[0](x).data, theirs[0](torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
