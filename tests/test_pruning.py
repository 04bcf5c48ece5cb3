"""Tests of minicompress.pruning: the formula, PyTorch's semantics, bad inputs, schedules, storage, shrinking."""
import copy
import math

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


# ---- schedules and loops -------------------------------------------------------------------------------------------

def small_mlp(seed=0):
    mc.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))


def zeros_in_masks(parameters):
    return [int((prune.mask_of(m, n) == 0).sum()) for m, n in parameters]


def test_agp_schedule_formula():
    # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 with s_i = 0.1, s_f = 0.9, t0 = 10, n = 4, dt = 5
    for t, expected in ((10, 0.1), (15, 0.9 - 0.8 * 0.75 ** 3), (20, 0.9 - 0.8 * 0.125), (30, 0.9), (3, 0.1), (99, 0.9)):
        assert prune.agp_sparsity(t, 0.9, 0.1, t0=10, n=4, dt=5) == pytest.approx(expected, abs=1e-12)


def test_gradual_pruning_callback_follows_the_schedule():
    model = small_mlp()
    params = prune.prunable(model)
    callback = prune.GradualPruning(params, final_sparsity=0.8, start_step=2, n_steps=3, frequency=2)
    for step in range(12):
        callback.on_step_end(model, step, 0.0)
        if step in (2, 4, 6, 8):
            s = prune.agp_sparsity(step, 0.8, 0.0, 2, 3, 2)
            assert zeros_in_masks(params) == [round(s * m.weight.data.size) for m, _ in params]
    assert [t for t, _ in callback.history] == [2, 4, 6, 8]
    assert callback.history[-1][1] == pytest.approx(0.8)


def test_gradual_pruning_runs_inside_fit():
    from minicompress import train
    model = small_mlp()
    x = np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32)
    loader = [(x[i:i + 16], np.arange(16) % 3) for i in range(0, 64, 16)]
    callback = prune.GradualPruning(prune.prunable(model), 0.5, n_steps=2, frequency=3, scope="global")
    train.fit(model, loader, 2, optim.SGD(model.parameters(), lr=0.05), callbacks=[callback], progress=False)
    total = sum(m.weight_orig.data.size for m, _ in prune.prunable(model))
    assert sum(zeros_in_masks(prune.prunable(model))) == round(0.5 * total)


def test_prune_to_sparsity_per_layer_and_global():
    model = small_mlp()
    params = prune.prunable(model)
    prune.prune_to_sparsity(params, [0.5, 0.25, 0.0])
    assert zeros_in_masks(params) == [60, 20, 0]
    prune.prune_to_sparsity(params, 0.1)                     # already sparser: nothing changes
    assert zeros_in_masks(params) == [60, 20, 2]
    prune.prune_to_sparsity(params, 0.6, scope="global")
    assert sum(zeros_in_masks(params)) == round(0.6 * 224)
    with pytest.raises(ValueError, match="scope"):
        prune.prune_to_sparsity(params, 0.5, scope="net")
    with pytest.raises(ValueError, match="sparsity=1.2"):
        prune.prune_to_sparsity(params, 1.2)


def test_iterative_pruning_rounds_and_lottery_rewind():
    model = small_mlp()
    init = prune.snapshot(model)
    calls = []

    def finetune(m, k):
        calls.append(k)
        for p in m.parameters():                            # stands in for training: every weight moves
            p.data = p.data + 1.0

    history = prune.iterative_pruning(model, 0.875, rounds=3, finetune=finetune, evaluate=lambda m: 0.5,
                                      rewind_to=init)
    assert calls == [1, 2, 3]
    sizes = [120, 80, 24]
    for k, row in enumerate(history, 1):
        s_k = 1 - 0.125 ** (k / 3)                          # 0.5, 0.75, 0.875
        assert row["sparsity"] == pytest.approx(sum(round(s_k * n) for n in sizes) / 224)
        assert row["accuracy"] == 0.5
    # after the last rewind and the +1 "training", the survivors are init + 1, the mask is kept
    layer = model[1]
    np.testing.assert_allclose(layer.weight_orig.data, init["1.weight"] + 1.0)
    np.testing.assert_allclose(model[1].bias.data, init["1.bias"] + 1.0)


def test_rewind_keeps_masks_and_resets_weights():
    model = small_mlp()
    init = prune.snapshot(model)
    prune.l1_unstructured(model[1], "weight", 0.5)
    mask = model[1].weight_mask.data.copy()
    model[1].weight_orig.data = model[1].weight_orig.data * 3
    prune.rewind(model, init)
    np.testing.assert_array_equal(model[1].weight_mask.data, mask)
    np.testing.assert_array_equal(model[1].weight.data, init["1.weight"] * mask)
    with pytest.raises(KeyError, match="rewind"):
        prune.rewind(model, {})


def test_sensitivity_analysis_prunes_each_layer_alone_on_a_copy():
    model = small_mlp()
    x = np.random.default_rng(1).standard_normal((32, 12)).astype(np.float32)
    reference = model(x).data

    def agreement(m):
        m.eval()
        return float((m(x).data.argmax(1) == reference.argmax(1)).mean())

    rows = prune.sensitivity_analysis(model, agreement, sparsities=(0.0, 0.5, 1.0))
    assert [(r["layer"], r["sparsity"]) for r in rows] == [(f"{i}.weight", s) for i in (1, 3, 5) for s in (0.0, 0.5, 1.0)]
    assert all(r["accuracy"] == 1.0 for r in rows if r["sparsity"] == 0.0)
    assert not prune.is_pruned(model)


def test_sparsity_report_counts_zeros_of_effective_weights():
    model = small_mlp()
    prune.l1_unstructured(model[1], "weight", 30)
    model[3].bias.data[:2] = 0.0
    rows = {r["name"]: r for r in prune.sparsity_report(model)}
    assert rows["1.weight"]["zeros"] == 30 and rows["1.weight"]["left"] == pytest.approx(0.75)
    assert rows["3.bias"]["zeros"] == 2
    assert rows["total"]["params"] == 120 + 10 + 80 + 8 + 24 + 3
    assert rows["total"]["zeros"] == 32
    assert "1.weight" in prune.format_report(list(rows.values()))


# ---- sparse storage ------------------------------------------------------------------------------------------------

def test_sparse_formats_exact_byte_counts():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 784)).astype(np.float32)
    mask = (rng.random(w.shape) < 0.08).astype(np.float32)
    k, n = int(mask.sum()), w.size
    c = prune.sparse_candidates(w * mask, mask)
    assert prune.payload_bytes(c["bitmask"]) == math.ceil(n / 8) + 4 * k
    assert prune.payload_bytes(c["csr"]) == 4 * k + 2 * k + 2 * 301           # uint16 columns and row pointers
    assert prune.payload_bytes(c["coo"]) == 4 * k + 4 * k                      # flat index needs uint32
    assert "dense" not in c                                                   # a mask cannot be stored densely
    fmt, arrays = prune.encode_sparse(w * mask, mask)
    assert fmt == "bitmask"                                                   # 8% > 1/16: the bitmask wins
    very_sparse = (rng.random(w.shape) < 0.01).astype(np.float32)
    assert prune.encode_sparse(w * very_sparse, very_sparse)[0] == "csr"
    assert prune.encode_sparse(w)[0] == "dense"


@pytest.mark.parametrize("fmt", ["dense", "bitmask", "csr", "coo"])
@pytest.mark.parametrize("shape", [(7,), (5, 9), (4, 3, 2, 2), (1, 1)])
def test_sparse_round_trip_is_exact(fmt, shape):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(shape).astype(np.float32)
    mask = (rng.random(shape) < 0.4).astype(np.float32)
    mask.reshape(-1)[0] = 1
    w.reshape(-1)[0] = 0.0                                   # a kept weight that happens to be 0 stays kept
    arrays = prune.sparse_candidates(w * mask, None if fmt == "dense" else mask)[fmt]
    values, kept = prune.decode_sparse(fmt, arrays, shape)
    np.testing.assert_array_equal(values, w * mask)
    if fmt != "dense":
        np.testing.assert_array_equal(kept, mask.astype(bool))


# ---- shrinking: smaller dense model, same outputs ------------------------------------------------------------------

def test_shrink_mlp_removes_neurons_and_keeps_outputs():
    model = small_mlp()
    prune.ln_structured(model[1], "weight", 0.5, n=2, dim=0)     # 5 dead neurons with nonzero bias
    prune.ln_structured(model[5], "weight", 3, n=1, dim=1)       # 3 unused inputs of the last layer
    small = prune.shrink(model)
    assert [m.weight.shape for m in small if isinstance(m, nn.Linear)] == [(5, 12), (5, 5), (3, 5)]
    assert small.spec == "mlp:12-5-5-3"
    x = np.random.default_rng(2).standard_normal((6, 12)).astype(np.float32)
    model.eval()
    np.testing.assert_allclose(small(x).data, model(x).data, rtol=1e-5, atol=1e-6)
    assert prune.is_pruned(model) and not prune.is_pruned(small)


def test_shrink_lenet5_like_conv_net_removes_filters():
    mc.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 2 * 2, 10), nn.ReLU(), nn.Linear(10, 4))
    prune.ln_structured(model[0], "weight", 2, n=1, dim=0)       # filters folded into the unpadded conv
    prune.ln_structured(model[3], "weight", 3, n=1, dim=0)       # filters folded through Flatten
    small = prune.shrink(model)
    assert small[0].weight.shape == (4, 1, 3, 3) and small[3].weight.shape == (5, 4, 3, 3)
    assert small[7].weight.shape == (10, 20)
    x = np.random.default_rng(5).standard_normal((3, 1, 12, 12)).astype(np.float32)
    model.eval()
    np.testing.assert_allclose(small(x).data, model(x).data, rtol=1e-4, atol=1e-5)
    assert prune.inference_ms(small, x, repeats=2) > 0


def test_shrink_keeps_dead_units_with_nonzero_output_before_a_padded_conv():
    mc.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Sigmoid(), nn.Conv2d(3, 2, 3, padding=1))
    prune.ln_structured(model[0], "weight", 1, n=1, dim=0)       # sigmoid(b) != 0 would meet zero padding
    small = prune.shrink(model)
    assert small[0].weight.shape == (3, 1, 3, 3)
    with pytest.raises(TypeError, match="Sequential"):
        prune.shrink(nn.Linear(2, 2))


# ---- save / load ---------------------------------------------------------------------------------------------------

def pruned_lenet(seed=0):
    from minicompress import models
    mc.manual_seed(seed)
    model = models.mlp([784, 30, 20, 10])
    prune.l1_unstructured(model[1], "weight", 0.9)
    prune.l1_unstructured(model[1], "weight", 0.5)
    prune.ln_structured(model[3], "weight", 0.25, n=2, dim=0)
    prune.l1_unstructured(model[1], "bias", 3)
    return model


def test_save_sparse_load_sparse_keeps_masks_exactly(tmp_path):
    model = pruned_lenet()
    payload = prune.save_sparse(model, tmp_path / "m.npz")
    assert payload == prune.sparse_size(model)[-1]["bytes"]
    loaded = prune.load_sparse(tmp_path / "m.npz")
    for layer, name in [(1, "weight"), (3, "weight"), (1, "bias")]:
        np.testing.assert_array_equal(getattr(loaded[layer], name + "_mask").data,
                                      getattr(model[layer], name + "_mask").data)
        np.testing.assert_array_equal(prune.effective(loaded[layer], name), prune.effective(model[layer], name))
    np.testing.assert_array_equal(loaded[5].weight.data, model[5].weight.data)
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
    assert [r["zeros"] for r in prune.sparsity_report(loaded)] == [r["zeros"] for r in prune.sparsity_report(model)]
    assert (tmp_path / "m.npz").stat().st_size < 4 * sum(r["params"] for r in prune.sparsity_report(model)[:-1])


def test_checkpoint_save_load_keeps_masks(tmp_path):
    from minicompress import checkpoint
    model = pruned_lenet()
    checkpoint.save(model, tmp_path / "m.npz")
    loaded = checkpoint.load(tmp_path / "m.npz")
    assert prune.is_pruned(loaded)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).data, model(x).data)


# ---- pictures ------------------------------------------------------------------------------------------------------

def test_plots_draw():
    from minicompress.viz import pruning as viz
    model = small_mlp()
    prune.l1_unstructured(model[1], "weight", 0.5)
    ax = viz.plot_weight_histogram(model[1].weight_orig, mask=model[1].weight_mask)
    assert len(ax.lines) == 2 and ax.lines[0].get_xdata()[0] < 0 < ax.lines[1].get_xdata()[0]
    assert viz.plot_mask(model[1].weight_mask).images
    assert len(viz.plot_sensitivity([dict(layer="a", sparsity=0.5, accuracy=0.9),
                                     dict(layer="b", sparsity=0.5, accuracy=0.8)]).lines) == 2
    assert len(viz.plot_accuracy_vs_sparsity({"one-shot": [(0.5, 0.9), (0.9, 0.5)]}).lines) == 1
    assert viz.plot_weight_histogram(np.arange(10.0), amount=0.3).lines[1].get_xdata()[0] == 2.0


def test_gradual_pruning_per_layer_targets():
    model = small_mlp()
    params = prune.prunable(model)
    callback = prune.GradualPruning(params, [0.9, 0.5, 0.25], n_steps=2, frequency=1)
    for step in range(3):
        callback.on_step_end(model, step, 0.0)
    assert zeros_in_masks(params) == [108, 40, 6]
    assert callback.history[1] == (1, [pytest.approx(0.9 - 0.9 / 8), pytest.approx(0.5 - 0.5 / 8),
                                       pytest.approx(0.25 - 0.25 / 8)])
    with pytest.raises(ValueError, match="GradualPruning: got 2 sparsities for 3"):
        prune.GradualPruning(params, [0.9, 0.5])


def test_seed_example_runs_with_only_the_import_changed(capsys):
    import minicompress.pruning as prune_module              # was: import torch.nn.utils.prune as prune

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            return self.linear(x)

    model = Net()
    prune_module.l1_unstructured(model.linear, 'weight', amount=0.5)
    print(model.linear.weight_orig)
    assert "Parameter containing" in capsys.readouterr().out
    assert int((model.linear.weight.data == 0).sum()) == 4
