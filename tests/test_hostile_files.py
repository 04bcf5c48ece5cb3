"""Issue 13, files: one loader for every kind; tampered, corrupted, crafted and oversized files all end in the
loader's own error (CheckpointError / IDXError) naming the file and the field, and the oversized ones fast."""
import io
import json
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hostile_files import KINDS, assert_same_state, build, idx_gz, rewrite, state

from minicompress import binary, checkpoint, data, pipeline, pruning
from minicompress import quantization as Q
from minicompress.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    return {kind: build(kind, folder / f"{kind}.npz") for kind in KINDS}


@pytest.fixture
def copy_of(files, tmp_path):
    def copy(kind):
        path = tmp_path / f"{kind}.npz"
        path.write_bytes(files[kind].read_bytes())
        return path
    return copy


# ---------------------------------------------------------------------------------------------------------------
# One loader for every kind
# ---------------------------------------------------------------------------------------------------------------

TECHNIQUE_LOADERS = {"model": checkpoint.load, "pruned": pruning.load_sparse, "quantized": Q.load_quantized,
                     "dynamic": Q.load_quantized, "compressed": pipeline.load_compressed, "binary": binary.load}


@pytest.mark.parametrize("kind", KINDS)
def test_load_opens_every_kind_as_its_own_loader_does(files, kind):
    model = checkpoint.load(files[kind])
    assert_same_state(state(model), state(TECHNIQUE_LOADERS[kind](files[kind])))
    expected = {"dynamic": "quantized", "compressed": "deep_compression"}.get(kind, kind)
    assert model.checkpoint_kind == expected == model.checkpoint_meta["kind"]
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    out = model(x)
    assert np.asarray(getattr(out, "data", out)).shape == (3, 10)


def test_kind_can_still_be_required(files):
    with pytest.raises(CheckpointError, match="holds kind 'pruned', expected 'model'"):
        checkpoint.load(files["pruned"], kind="model")


def test_checkpoint_imports_no_technique_and_loads_them_lazily(files):
    code = ("import sys; from minicompress import checkpoint; "
            "techniques = ['minicompress.' + m for m in ('pruning', 'quantization', 'binary', 'pipeline')]; "
            "before = [m for m in techniques if m in sys.modules]; "
            f"model = checkpoint.load({str(files['pruned'])!r}); "
            "print(before, 'minicompress.pruning' in sys.modules, type(model).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"})
    assert result.stdout.split() == ["[]", "True", "Sequential"], result.stderr


def test_an_unknown_kind_is_named(tmp_path):
    checkpoint.write_npz(tmp_path / "w.npz", {"a": np.ones(2)}, {"kind": "weird"})
    with pytest.raises(CheckpointError, match="kind 'weird', which no minicompress module reads"):
        checkpoint.load(tmp_path / "w.npz")


# ---------------------------------------------------------------------------------------------------------------
# Tampering: the digest
# ---------------------------------------------------------------------------------------------------------------


def _rezip(path, edit):
    """Rewrite the zip with edit(name, bytes) -> bytes applied to each member; the zip CRCs stay valid."""
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, edit(info.filename, zf.read(info))) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members:
            zf.writestr(name, content)


@pytest.mark.parametrize("kind", KINDS)
def test_an_edited_array_with_a_valid_zip_crc_is_caught_by_the_digest(copy_of, kind):
    path = copy_of(kind)
    with zipfile.ZipFile(path) as zf:
        target = max((i for i in zf.infolist() if i.filename != "__meta__.npy"), key=lambda i: i.file_size).filename

    def flip_last_byte(name, content):
        return content[:-1] + bytes([content[-1] ^ 0x01]) if name == target else content

    _rezip(path, flip_last_byte)
    with pytest.raises(CheckpointError, match="digest does not match.*edited or corrupted"):
        checkpoint.load(path)


def test_edited_metadata_is_caught_by_the_digest(copy_of):
    path = copy_of("model")
    _rezip(path, lambda name, content: content.replace(b"mlp:784-12-10", b"mlp:784-12-11")
           if name == "__meta__.npy" else content)
    with pytest.raises(CheckpointError, match="digest does not match"):
        checkpoint.load(path)


def _raw_meta_file(path, meta, arrays=None):
    """An .npz holding `arrays` and this exact metadata (no digest computed)."""
    text = meta if isinstance(meta, (bytes, str)) else json.dumps(meta)
    text = text.encode() if isinstance(text, str) else text
    np.savez(path, __meta__=np.frombuffer(text, np.uint8), **(arrays or {"a": np.ones(2)}))
    return path


@pytest.mark.parametrize("version,message", [
    (True, "not a version number"), (-1, "not a version number"), (1.0, "not a version number"),
    (1, "version 1 carries no integrity digest.*re-create"), (3, "upgrade minicompress"),
])
def test_format_versions(tmp_path, version, message):
    path = _raw_meta_file(tmp_path / "v.npz", {"format": "minicompress", "version": version, "kind": "model"})
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


# ---------------------------------------------------------------------------------------------------------------
# Crafted files with a valid digest: every field checked for type and range
# ---------------------------------------------------------------------------------------------------------------


def _set(key, value):
    def change(arrays, meta):
        arrays[key] = value
    return change


def _layer_config(index, key, value):
    def change(arrays, meta):
        meta["layers"][index]["config"][key] = value
    return change


def _meta_path(path_keys, value):
    def change(arrays, meta):
        target = meta
        for k in path_keys[:-1]:
            target = target[k]
        target[path_keys[-1]] = value
    return change


CRAFTED = [
    ("model", _set("1.weight", np.full((12, 784), np.nan, np.float32)), "'1.weight' holds NaN or Inf"),
    ("model", _meta_path(["training"], 1), "'training' = 1 must be bool"),
    ("model", _meta_path(["spec"], "mlp:784-4000-10"), "has 3,180,010 parameters but the file holds"),
    ("model", _meta_path(["spec"], "mlp:784-100000-100000-10"), "more than the 67,108,864 allowed"),
    ("pruned", _meta_path(["tensors", 0, "shape"], [100000, 100000]), "more than the 67,108,864 allowed"),
    ("pruned", _meta_path(["tensors", 0, "shape"], [12, 785]), "does not fit the model"),
    ("pruned", _meta_path(["tensors", 0, "pruned"], 1), "'pruned' = 1 must be bool"),
    ("pruned", _meta_path(["tensors", 0, "format"], "coo"), "array 'index' is missing"),
    ("pruned", _meta_path(["tensors", 0, "dtype"], "complex64"), "not a numeric dtype"),
    ("quantized", _layer_config(2, "qmin", 300), "qmin = 300 > qmax = 15"),
    ("quantized", _layer_config(2, "qmax", True), "'qmax' = True must be int"),
    ("quantized", _layer_config(2, "weight_shape", [100000, 100000]), "more than the 67,108,864 allowed"),
    ("quantized", _layer_config(2, "packed_bits", 8), "weights packed at 8 bits but declared 4-bit"),
    ("quantized", _set("2.weight_packed", np.zeros(4703, np.uint8)), "4703 packed bytes do not hold 9408 4-bit"),
    ("quantized", _layer_config(0, "qmax", 3), "zero point .* outside"),
    ("quantized", _meta_path(["spec"], 1e308), "'spec' = 1e\\+308 must be str"),
    ("dynamic", _meta_path(["layers", 0, "type"], "Linear"), "expected 'DynamicQuantizedLinear'"),
    ("quantized", _set("2.weight_scale", np.full(12, np.nan, np.float32)), "'weight_scale' holds NaN"),
    ("quantized", _set("2.output_scale", np.float32(-1.0)), "scale must be > 0"),
    ("quantized", _set("3.input_scale", np.float32(0.5)), "the layer before outputs"),
    ("quantized", _meta_path(["mode"], "float"), "must be 'dynamic' or 'integer'"),
    ("dynamic", _meta_path(["layers", 0, "name"], "2"), "is not a Linear layer"),
    ("dynamic", _layer_config(0, "bits", 40), r"'bits' = 40 must be in \[2, 16\]"),
    ("compressed", _set("1.weight/codebook", np.full(8, np.nan, np.float32)), "'codebook' holds NaN"),
    ("compressed", _set("1.weight/gap_lengths", np.ones(2, np.uint8)), "code lengths does not fit"),
    ("compressed", _meta_path(["layers", "1", "entries"], 10**9), r"'entries' = 1000000000 must be in"),
    ("compressed", _meta_path(["layers", "1", "gap_n_bits"], 2), "must be in"),
    ("binary", _set("1.running_var", -np.ones(16, np.float32)), "negative variance"),
    ("binary", _set("1.bits", np.zeros((16, 3), np.uint8)), "cannot be rebuilt.*bits must be uint8 of shape"),
    ("binary", _meta_path(["layers", 1, "in_features"], True), "must be ints"),
    ("binary", _meta_path(["layers", 2, "num_features"], 10**9), "must be ints"),
    ("binary", _meta_path(["layers", 0, "type"], "Conv9d"), "unknown layer type"),
    # 15 inputs fit the same 2 bytes per row as 16: only running the layers shows they do not fit together
    ("binary", _meta_path(["layers", 3, "in_features"], 15), r"PackedBinaryLinear\(in_features=15\): expected input"),
    ("binary", _meta_path(["spec"], "binary_mlp:99999999999-10"), "does not start with an input size"),
]


@pytest.mark.parametrize("kind,change,message", CRAFTED, ids=[f"{k}-{m[:30]}" for k, _, m in CRAFTED])
def test_crafted_fields_are_refused_with_the_loaders_error(copy_of, kind, change, message):
    path = rewrite(copy_of(kind), change)
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)


def test_huffman_lengths_that_break_kraft_are_refused(copy_of):
    def break_kraft(arrays, meta):
        lengths = arrays["1.weight/cluster_lengths"]
        arrays["1.weight/cluster_lengths"] = np.where(lengths > 0, 1, 0).astype(np.uint8)  # every code 1 bit long

    with pytest.raises(CheckpointError, match="Kraft"):
        checkpoint.load(rewrite(copy_of("compressed"), break_kraft))


def test_sparse_indices_out_of_range_are_refused(tmp_path):
    model = checkpoint.load(build("model", tmp_path / "m.npz"))
    mask = np.zeros((12, 784), np.float32)
    mask[:, 0] = 1  # one survivor per row: CSR or COO is the smallest format
    pruning.custom_from_mask(model[1], "weight", mask)
    pruning.save_sparse(model, tmp_path / "p.npz")
    arrays, meta = checkpoint.read_npz(tmp_path / "p.npz")
    fmt = next(t["format"] for t in meta["tensors"] if t["key"] == "1.weight")
    key = {"csr": "1.weight:col", "coo": "1.weight:index"}[fmt]
    arrays[key] = arrays[key].copy()
    arrays[key][-1] = np.iinfo(arrays[key].dtype).max
    checkpoint.write_npz(tmp_path / "p.npz", arrays, meta)
    with pytest.raises(CheckpointError, match=f"{fmt.upper()} .*indices out of"):
        checkpoint.load(tmp_path / "p.npz")


@pytest.mark.parametrize("dtype", ["complex64", "<U3", "S4", "V8"])
def test_complex_string_and_void_arrays_are_refused(tmp_path, dtype):
    path = _raw_meta_file(tmp_path / "c.npz", {"format": "minicompress", "version": 2, "kind": "model"},
                          {"w": np.zeros(3, dtype=dtype)})
    with pytest.raises(CheckpointError, match="only bool, integer and float arrays"):
        checkpoint.load(path)


@pytest.mark.parametrize("depth,message", [(100_000, "nested too deeply"), (20, "deeper than 16")])
def test_deeply_nested_metadata_is_refused(tmp_path, depth, message):
    nested = "[" * depth + "]" * depth
    meta = '{"format": "minicompress", "version": 2, "kind": "model", "x": ' + nested + "}"
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(_raw_meta_file(tmp_path / "d.npz", meta))


def test_nan_in_metadata_is_refused_on_write_and_read(tmp_path):
    with pytest.raises(ValueError, match="without NaN"):
        checkpoint.write_npz(tmp_path / "n.npz", {}, {"kind": "model", "acc": float("nan")})
    path = _raw_meta_file(tmp_path / "n.npz", '{"format": "minicompress", "version": 2, "kind": "m", "a": NaN}')
    with pytest.raises(CheckpointError, match="NaN is not allowed"):
        checkpoint.load(path)


def test_too_many_or_repeated_zip_entries_are_refused(tmp_path, files, monkeypatch):
    path = tmp_path / "twice.npz"
    with zipfile.ZipFile(files["model"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr("1.bias.npy", src.read("1.bias.npy"))  # one name twice: which copy counts is ambiguous
    with pytest.raises(CheckpointError, match="1 zip entries repeat a name"):
        checkpoint.load(path)
    monkeypatch.setattr(checkpoint, "MAX_MEMBERS", 3)
    _refused_fast(checkpoint.load, files["model"], CheckpointError, "5 zip entries, more than the 3 allowed")


def test_an_unknown_zip_compression_method_is_refused(tmp_path, files):
    path = tmp_path / "lzma.npz"
    with zipfile.ZipFile(files["model"]) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(CheckpointError, match="compression method 14; only stored"):
        checkpoint.load(path)


# ---------------------------------------------------------------------------------------------------------------
# Memory and time bombs: refused before allocating, well under a second
# ---------------------------------------------------------------------------------------------------------------


def _refused_fast(load, path, error, message):
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        load(path)
    assert time.perf_counter() - start < 0.5


def test_an_npy_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)})
    with zipfile.ZipFile(tmp_path / "h.npz", "w") as zf:
        zf.writestr("w.npy", header.getvalue() + bytes(64))
    _refused_fast(checkpoint.load, tmp_path / "h.npz", CheckpointError, r"declares shape \(100000, 100000\)")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000)})
    with zipfile.ZipFile(tmp_path / "s.npz", "w") as zf:
        zf.writestr("w.npy", header.getvalue() + bytes(64))
    _refused_fast(checkpoint.load, tmp_path / "s.npz", CheckpointError, "4,000,000 bytes.*but holds 64 bytes")


@pytest.mark.parametrize("kind,change,message", [
    ("model", _meta_path(["spec"], "mlp:784-100000-100000-10"), "declares 10,079,600,010 parameters, more than"),
    ("model", _meta_path(["spec"], "mlp:784-8000-8000-10"), "declares 70,368,010 parameters, more than"),
    ("model", _meta_path(["spec"], "mlp:784-5000-10"), "has 3,975,010 parameters but the file holds 9,550"),
    ("pruned", _meta_path(["tensors", 1, "shape"], [100000, 100000]), "10,000,000,000 entries, more than"),
    ("quantized", _layer_config(2, "weight_shape", [100000, 100000]), "10,000,000,000 entries, more than"),
    ("compressed", _meta_path(["layers", "1", "shape"], [100000, 100000]), "10,000,000,000 entries, more than"),
])
def test_declared_sizes_are_checked_before_allocating(copy_of, kind, change, message):
    _refused_fast(checkpoint.load, rewrite(copy_of(kind), change), CheckpointError, message)


def test_a_deflate_bomb_is_refused_from_the_zip_directory(tmp_path, files):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(files["model"]) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr("extra.npy", bytes(64 * 2**20))  # 64 MB of zeros: about 64 KB on disk
    assert path.stat().st_size < 2**20
    _refused_fast(checkpoint.load, path, CheckpointError, "declares more than .* bytes of arrays.*before reading")


def test_a_zip_directory_declaring_more_than_the_maximum_is_refused(tmp_path, files, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_FILE_BYTES", 2**14)  # instead of writing 256 MB
    _refused_fast(checkpoint.load, files["model"], CheckpointError, "declares more than 16,384 bytes")


def test_an_idx_header_announcing_gigabytes_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_bytes(bytes([0, 0, 8, 3]) + (400000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
                                + bytes(1000)))
    _refused_fast(data.read_idx, path, data.IDXError, "announces 313,600,000 data bytes.*before decompressing")


def test_a_gzip_idx_expanding_past_its_header_is_read_only_that_far(tmp_path):
    images = np.zeros((10, 28, 28), np.uint8)
    path = idx_gz(tmp_path / "t.gz", images)
    np.testing.assert_array_equal(data.read_idx(path), images)
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path.write_bytes(gzip_bytes(header + bytes(48 * 2**20)))  # 48 MB of zeros behind a 10-image header
    _refused_fast(data.read_idx, path, data.IDXError, "trailing bytes")


def gzip_bytes(content):
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream, fast level
    return compressor.compress(content) + compressor.flush()
