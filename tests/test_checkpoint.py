"""Checkpoints: bit-exact round trips, atomic writes, and clear errors for bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

from minicompress import checkpoint, models, nn
from minicompress.checkpoint import CheckpointError, load, read_npz, save, write_npz


def randomize(model, seed=0):
    """Fill every parameter and buffer with random values, so a round trip cannot pass by luck."""
    rng = np.random.default_rng(seed)
    for t in list(model.parameters()) + list(model.buffers()):
        t.data[...] = rng.standard_normal(t.shape).astype(t.data.dtype)
    return model


@pytest.mark.parametrize("spec", ["lenet300_100", "lenet5", "mlp:784-30-30-10"])
def test_save_load_bit_exact(tmp_path, spec):
    model = randomize(models.from_spec(spec)).eval()
    path = save(model, tmp_path / "m.npz", meta={"test_accuracy": 0.98})
    back = load(path)
    assert back.spec == spec and type(back) is type(model) and not back.training
    assert back.checkpoint_meta["test_accuracy"] == 0.98
    a, b = model.state_dict(), back.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
        assert a[key].tobytes() == b[key].tobytes(), key  # bit for bit, including -0.0 and NaN payloads


def test_buffers_round_trip(tmp_path):
    # A model with buffers (batch norm running statistics) keeps them exactly.
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    model.spec = "custom"
    randomize(model, 1)
    state = model.state_dict()
    assert any("running" in k for k in state)
    write_npz(tmp_path / "c.npz", state, {"kind": "model", "spec": "custom"})
    arrays, meta = read_npz(tmp_path / "c.npz", kind="model")
    assert meta["format"] == "minicompress" and meta["version"] == checkpoint.VERSION
    for key in state:
        assert arrays[key].tobytes() == state[key].tobytes() and arrays[key].dtype == state[key].dtype


def test_write_npz_keeps_dtypes_and_is_plain_npz(tmp_path):
    arrays = {"q": np.array([-128, 0, 127], np.int8), "bits": np.packbits([1, 0, 1]), "s": np.float64(0.1),
              "mask": np.array([True, False])}
    path = write_npz(tmp_path / "x.npz", arrays, {"kind": "quantized", "bits": 8}, compress=True)
    with np.load(path, allow_pickle=False) as npz:  # readable by plain NumPy
        assert json.loads(npz["__meta__"].tobytes())["kind"] == "quantized"
    back, meta = read_npz(path, kind="quantized")
    assert meta["bits"] == 8
    for key, value in arrays.items():
        assert back[key].dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(back[key], value)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    write_npz(path, {"a": np.ones(3)}, {"kind": "t"})
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        write_npz(path, {"a": np.zeros(3)}, {"kind": "t"})
    assert path.read_bytes() == before  # old file intact
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary left behind


@pytest.mark.parametrize("arrays,meta,message", [
    ({"a": np.ones(2)}, {}, "kind"),
    ({"__meta__": np.ones(2)}, {"kind": "t"}, "reserved"),
    ({"a": np.array([None])}, {"kind": "t"}, "dtype object"),
    ({"a": np.ones(2)}, {"kind": "t", "f": object()}, "JSON"),
])
def test_write_npz_rejects_bad_input(tmp_path, arrays, meta, message):
    with pytest.raises(ValueError, match=message):
        write_npz(tmp_path / "x.npz", arrays, meta)
    assert not (tmp_path / "x.npz").exists()


@pytest.fixture
def good_file(tmp_path):
    return save(randomize(models.mlp([784, 10])), tmp_path / "good.npz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load(tmp_path / "nope.npz")


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_file(good_file, keep):
    raw = good_file.read_bytes()
    good_file.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(good_file)


def test_corrupt_bytes(good_file):
    raw = bytearray(good_file.read_bytes())
    middle = len(raw) // 2  # inside the weight data: the zip CRC no longer matches
    raw[middle:middle + 64] = bytes(64)
    good_file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load(good_file)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a .npz"):
        read_npz(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3))
    with pytest.raises(CheckpointError, match="not written by minicompress"):
        read_npz(other)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __meta__=np.frombuffer(b'{"format": "minicompress", "version": 1, "kind": "t"}', np.uint8),
             evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="dtype object"):  # object arrays need pickle: refused
        read_npz(pickled)
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as zf:
        zf.writestr("readme.txt", "a zip, not an npz")
    with pytest.raises(CheckpointError):
        read_npz(tmp_path / "plain.zip")


@pytest.mark.parametrize("meta_bytes,message", [
    (b"\xff\xfe", "not valid JSON"),
    (b'{"format": "keras", "version": 1, "kind": "model"}', "format 'keras'"),
    (b'{"format": "minicompress", "version": 99, "kind": "model"}', "version 99"),
])
def test_bad_metadata(tmp_path, meta_bytes, message):
    path = tmp_path / "m.npz"
    np.savez(path, __meta__=np.frombuffer(meta_bytes, np.uint8))
    with pytest.raises(CheckpointError, match=message):
        read_npz(path)


def test_wrong_kind_and_unrebuildable(tmp_path, good_file):
    write_npz(tmp_path / "q.npz", {"a": np.ones(2)}, {"kind": "quantized"})
    with pytest.raises(CheckpointError, match="kind 'quantized', expected 'model'"):
        load(tmp_path / "q.npz", kind="model")
    write_npz(tmp_path / "s.npz", {"a": np.ones(2)}, {"kind": "model", "spec": "resnet50"})
    with pytest.raises(CheckpointError, match="resnet50"):
        load(tmp_path / "s.npz")
    arrays, meta = read_npz(good_file)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version")}
    write_npz(tmp_path / "w.npz", {**arrays, "extra": np.ones(1)}, meta)
    with pytest.raises(CheckpointError, match="do not fit"):
        load(tmp_path / "w.npz")


def test_save_needs_spec(tmp_path):
    with pytest.raises(ValueError, match="no .spec"):
        save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "x.npz")
