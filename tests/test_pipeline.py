"""Deep Compression pipeline: relative positions with fillers, lossless layer coding, the whole chain on MNIST."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import checkpoint, data, models, nn, pipeline, pruning, quantization
from minicompress.train import fit


def test_relative_positions_with_fillers_on_concrete_numbers():
    """Positions 1, 3, 12 with 2-bit gaps (G = 4): gaps 2, 2, 9; the gap of 9 becomes two fillers of 4, then 1."""
    gaps, filler = pipeline.relative_positions([1, 3, 12], gap_bits=2)
    np.testing.assert_array_equal(gaps + 1, [2, 2, 4, 4, 1])
    np.testing.assert_array_equal(filler, [False, False, True, True, False])
    np.testing.assert_array_equal(pipeline.absolute_positions(gaps, filler), [1, 3, 12])


@settings(max_examples=30, deadline=None)
@given(st.sets(st.integers(0, 500), max_size=60), st.integers(1, 8))
def test_relative_positions_round_trip(positions, gap_bits):
    positions = np.array(sorted(positions), dtype=np.int64)
    gaps, filler = pipeline.relative_positions(positions, gap_bits)
    assert gaps.min(initial=0) >= 0 and gaps.max(initial=0) < 2**gap_bits
    np.testing.assert_array_equal(pipeline.absolute_positions(gaps, filler), positions)


@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_layer_coding_is_lossless(density):
    rng = np.random.default_rng(0)
    codebook = np.sort(rng.standard_normal(16)).astype(np.float32)
    indices = rng.integers(0, 16, size=(30, 40))
    indices[rng.random((30, 40)) >= density] = -1
    arrays, info = pipeline.encode_layer(indices, codebook)
    expected = np.where(indices >= 0, codebook[np.maximum(indices, 0)], 0)
    np.testing.assert_array_equal(pipeline.decode_layer(arrays, info), expected)
    assert 1 <= info["gap_bits"] <= 8


def test_huffman_beats_fixed_width_on_a_skewed_layer():
    """Most weights sit in a few clusters: entropy coding must store them in fewer bytes than fixed width."""
    rng = np.random.default_rng(1)
    indices = rng.choice(32, size=(100, 100), p=np.r_[[0.4, 0.3], np.full(30, 0.3 / 30)])
    indices[rng.random((100, 100)) > 0.1] = -1
    arrays, info = pipeline.encode_layer(indices, np.linspace(-1, 1, 32, dtype=np.float32))
    fixed_bytes = (info["entries"] * (info["gap_bits"] + 6)) / 8 + 32 * 4
    assert pipeline.payload_bytes(arrays) < fixed_bytes


def test_deep_compression_on_the_embedded_subset(tmp_path):
    """The whole chain on a small MLP: every stage smaller than the last, the file loads back to the same accuracy."""
    mc.manual_seed(0)
    x, y = data.load_mnist()
    xt, yt = data.load_mnist(split="test")
    train = data.DataLoader(x[:3000], y[:3000], batch_size=64, shuffle=True, seed=0)
    test = data.DataLoader(xt[:1000], yt[:1000], batch_size=500)
    model = models.mlp([784, 32, 10])
    fit(model, train, 2, mc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), progress=False)
    stages = pipeline.deep_compression(model, train, test, tmp_path / "model.npz", sparsity=[0.9, 0.5], bits=4,
                                       prune_rounds=2, prune_epochs=1, share_epochs=1)
    names = [s["stage"] for s in stages]
    assert names == ["dense float32", "pruned + fine-tuned", "weight sharing + fine-tuned", "Huffman coded",
                     "loaded back from file"]
    sizes = [s["bytes"] for s in stages[:4]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == (784 * 32 + 32 + 32 * 10 + 10) * 4
    assert stages[-1]["accuracy"] == stages[-2]["accuracy"]  # the file holds exactly the evaluated model
    assert stages[-1]["accuracy"] > 0.8
    loaded = pipeline.load_compressed(tmp_path / "model.npz")
    for name, m in loaded.named_modules():
        if isinstance(m, nn.Linear):
            assert np.mean(m.weight.data == 0) >= 0.49
            assert len(np.unique(m.weight.data[m.weight.data != 0])) <= 16


def test_bad_input_explains(tmp_path):
    with pytest.raises(ValueError, match="no weight-shared layer"):
        pipeline.encode_model(models.mlp([784, 10]))
    checkpoint.write_npz(tmp_path / "other.npz", {"a": np.zeros(1)}, {"kind": "pruned"})
    with pytest.raises(ValueError, match="kind"):
        pipeline.load_compressed(tmp_path / "other.npz")


def test_cli_compress_writes_a_file_that_loads_back(tmp_path, capsys):
    from minicompress import cli

    model_path, out = tmp_path / "m.npz", tmp_path / "m.dc.npz"
    assert cli.main(["train", "--model", "mlp:784-16-10", "--epochs", "1", "--out", str(model_path),
                     "--no-progress"]) in (0, None)
    assert cli.main(["compress", str(model_path), "--sparsity", "0.8,0.5", "--bits", "3", "--rounds", "1",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Huffman coded" in printed and "loaded back from file" in printed
    # both the payload (what the ratios count) and the file on disk, each with its ratio
    dense = 4 * (784 * 16 + 16 + 16 * 10 + 10)
    lines = {line.split(":")[0]: line for line in printed.splitlines()}
    payload = int(lines["payload"].split()[1].replace(",", ""))
    assert f"{dense / payload:.1f}x smaller than dense float32 ({dense:,} bytes)" in lines["payload"]
    file_bytes = out.stat().st_size
    assert lines["file on disk"].startswith(f"file on disk: {file_bytes:>9,} bytes, {dense / file_bytes:.1f}x: ")
    assert payload < file_bytes
    model = pipeline.load_compressed(out)
    assert len(np.unique(model[1].weight.data)) <= 2**3 + 1  # 8 shared values and the pruned zeros
    assert cli.main(["compress", str(model_path), "--sparsity", "1.5"]) == 2


def test_bad_sparsities_and_models_without_spec_explain():
    x, y = data.load_mnist()
    loader = data.DataLoader(x[:64], y[:64])
    with pytest.raises(ValueError, match="got 1 sparsities for 2 parameters"):
        pipeline.prune_and_finetune(models.mlp([784, 16, 10]), loader, [0.5], rounds=1)
    with pytest.raises(ValueError, match=r"sparsity=nan must be in \[0, 1\]"):
        pipeline.prune_and_finetune(models.mlp([784, 16, 10]), loader, float("nan"), rounds=1)
    bare = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ValueError, match="encode_model: the model has no .spec"):
        pipeline.encode_model(bare)


def test_fixed_width_bytes_by_hand():
    """One layer 2 x 4 with survivors at flat positions 0 and 5, a 2-entry codebook, no bias: 2-bit cluster symbols
    (k + 1 = 3 symbols); gap width 3 stores both gaps (1 and 5) in 2 entries: 2 * (3 + 2) = 10 bits -> 2 bytes,
    plus 8 bytes of codebook."""
    model = models.mlp([4, 2])
    model[1].bias = None
    model[1].weight.data[...] = np.array([[0.5, 0, 0, 0], [0, -0.5, 0, 0]], dtype=np.float32)
    quantization.share_weights(model[1], bits=1)
    assert pipeline.fixed_width_bytes(model) == 2 + 8


def test_prune_and_finetune_with_zero_epochs_prunes_without_training():
    model = models.lenet300_100()
    x, y = data.load_mnist()
    loader = data.DataLoader(x[:64], y[:64], 32)
    before = [p.data.copy() for p in model.parameters()]
    pipeline.prune_and_finetune(model, loader, 0.5, rounds=2, epochs_per_round=0)
    for (module, name), w0 in zip(pruning.prunable(model), before[::2]):
        w = getattr(module, name).data
        assert np.isclose((w == 0).mean(), 0.5, atol=1e-3)  # the target sparsity, reached in the last round
        np.testing.assert_array_equal(w[w != 0], w0[w != 0])  # survivors untouched: no fine-tuning ran
    for bad in ({"rounds": 0}, {"epochs_per_round": -1}, {"rounds": 1.5}, {"epochs_per_round": True}):
        with pytest.raises(ValueError, match="prune_and_finetune"):
            pipeline.prune_and_finetune(model, loader, 0.5, **bad)
