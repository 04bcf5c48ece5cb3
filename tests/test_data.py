"""IDX reader, MNIST loaders, download and DataLoader."""
import gzip
import hashlib
import io
import struct

import numpy as np
import pytest

from minicompress import data
from minicompress.data import DataLoader, IDXError, read_idx


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """Encode `array` as an IDX file by hand (independent of the reader): header then big-endian values."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip_every_dtype(tmp_path, code, dtype, compress):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    raw = idx_bytes(array, code)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_read_idx_detects_gzip_by_content_not_name(tmp_path):
    path = tmp_path / "labels"  # no .gz suffix
    path.write_bytes(gzip.compress(idx_bytes(np.array([3, 1, 4], np.uint8), 0x08)))
    np.testing.assert_array_equal(read_idx(path), [3, 1, 4])


def test_read_idx_one_dimension_value(tmp_path):
    # Header fields are big-endian: 258 images means bytes 00 00 01 02.
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros(258, np.uint8), 0x08))
    assert path.read_bytes()[4:8] == b"\x00\x00\x01\x02"
    assert read_idx(path).shape == (258,)


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "dtype code 0x07"),
    (lambda b: b[:2] + b"\x08\x00" + b[4:], "dimensions is 0"),
    (lambda b: b[:3] + b"\x28" + b[4:], "header announces 40 dimensions"),
    (lambda b: b[:3] + b"\x05" + b[4:], r"needs \d+ data bytes"),
    (lambda b: b[:2], "needs at least 4"),
])
def test_read_idx_rejects_bad_files(tmp_path, mutate, message):
    good = idx_bytes(np.ones((4, 5, 6), np.uint8), 0x08)
    path = tmp_path / "bad.idx"
    path.write_bytes(mutate(good))
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert "bad.idx" in str(info.value)


def test_read_idx_wrong_length_header(tmp_path):
    # Header says 5 images of 2x2, file holds 4.
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 2, 2) + bytes(16)
    path = tmp_path / "short.idx"
    path.write_bytes(raw)
    with pytest.raises(IDXError, match=r"\(5, 2, 2\).*needs 20 data bytes, the file has 16"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.ones((50, 28, 28), np.uint8), 0x08))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(IDXError, match="broken gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_idx(tmp_path / "nothere.gz")


def write_fake_mnist(folder, n_train=30, n_test=10, images_shape=(28, 28), max_label=9):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, *images_shape), dtype=np.uint8)
        labels = (np.arange(n) % (max_label + 1)).astype(np.uint8)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 0x08)))
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x08))


def test_load_mnist_from_folder_or_parent(tmp_path):
    write_fake_mnist(tmp_path / "mnist")
    for root in (tmp_path / "mnist", tmp_path):
        x, y = data.load_mnist(root, "test")
        assert x.shape == (10, 28, 28) and x.dtype == np.uint8
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, np.arange(10))


def test_load_mnist_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split='valid'"):
        data.load_mnist(None, "valid")
    write_fake_mnist(tmp_path / "a", images_shape=(14, 14))
    with pytest.raises(IDXError, match=r"expected uint8 \(N, 28, 28\)"):
        data.load_mnist(tmp_path / "a")
    write_fake_mnist(tmp_path / "b", max_label=11)
    with pytest.raises(IDXError, match="label 11"):
        data.load_mnist(tmp_path / "b")


def test_real_mnist_label_counts(mnist_dir):
    x, y = data.load_mnist(mnist_dir, "train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    x_test, y_test = data.load_mnist(mnist_dir, "test")
    assert x_test.shape == (10000, 28, 28)
    assert np.bincount(y_test).sum() == 10000


def test_real_fashion_mnist(fashion_dir):
    x, y = data.load_fashion_mnist(fashion_dir, "test")
    assert x.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)  # Fashion-MNIST's test set is balanced


def test_embedded_subset_is_balanced_real_mnist():
    x, y = data.load_mnist()
    x_test, y_test = data.load_mnist(split="test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert x_test.shape == (2000, 28, 28) and x_test.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [200] * 10)
    # Real digits, not noise: MNIST's mean pixel is about 33 of 255 with most pixels exactly 0.
    assert 25 < x.mean() < 40 and (x == 0).mean() > 0.7
    assert len({image.tobytes() for image in x}) == len(x)  # no duplicates
    assert 2.5e6 > data.EMBEDDED_PATH.stat().st_size > 1e6


def test_embedded_subset_matches_full_files(mnist_dir):
    full_x, full_y = data.load_mnist(mnist_dir, "test")
    with np.load(data.EMBEDDED_PATH) as npz:
        idx = npz["source_index_test"]
        np.testing.assert_array_equal(npz["x_test"], full_x[idx])
        np.testing.assert_array_equal(npz["y_test"], full_y[idx])


def test_shared_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINICOMPRESS_DATA", str(tmp_path))
    assert data.shared_data_dir() == tmp_path
    monkeypatch.delenv("MINICOMPRESS_DATA")
    found = data.shared_data_dir()
    assert found is None or found.is_dir()


def test_download_file_url_checks_decompressed_md5(tmp_path):
    raw = idx_bytes(np.arange(12, dtype=np.uint8), 0x08)
    src = tmp_path / "src" / "labels.gz"
    src.parent.mkdir()
    src.write_bytes(gzip.compress(raw, mtime=0))
    cache = tmp_path / "cache"
    md5 = hashlib.md5(raw).hexdigest()  # of the decompressed bytes, not of the .gz
    path = data.download(src.as_uri(), cache, md5=md5)
    assert path == cache / "labels.gz" and path.read_bytes() == src.read_bytes()
    np.testing.assert_array_equal(read_idx(path), np.arange(12))
    assert sorted(p.name for p in cache.iterdir()) == ["labels.gz"]


def test_download_bad_md5_leaves_nothing(tmp_path):
    src = tmp_path / "x.gz"
    src.write_bytes(gzip.compress(b"not what we wanted"))
    cache = tmp_path / "cache"
    with pytest.raises(IDXError, match="MD5"):
        data.download(src.as_uri(), cache, md5="0" * 32)
    assert list(cache.iterdir()) == []


def test_download_interrupted_leaves_nothing_and_skips_good_cache(tmp_path):
    class Broken(io.BytesIO):
        def read(self, n=-1):
            chunk = super().read(4)
            if not chunk:
                raise ConnectionError("network went away")
            return chunk

    with pytest.raises(ConnectionError):
        data.download("http://example.invalid/y.gz", tmp_path, opener=lambda url: Broken(b"0123456789"))
    assert list(tmp_path.iterdir()) == []

    calls = []
    (tmp_path / "y.gz").write_bytes(b"abc")
    path = data.download("http://example.invalid/y.gz", tmp_path, md5=hashlib.md5(b"abc").hexdigest(),
                         opener=lambda url: calls.append(url))
    assert path.read_bytes() == b"abc" and calls == []


def test_download_dataset_from_file_mirror(tmp_path, monkeypatch):
    # A local "mirror" of recompressed files; the check uses the MD5 of the decompressed content.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5s = {}
    for i, name in enumerate(data.MD5["mnist"]):
        raw = idx_bytes(np.full(3, i, np.uint8), 0x08)
        (mirror / f"{name}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
        md5s[name] = hashlib.md5(raw).hexdigest()
    monkeypatch.setitem(data.MD5, "mnist", md5s)
    folder = data.download_dataset("mnist", tmp_path / "cache", base_url=mirror.as_uri())
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in md5s)
    with pytest.raises(ValueError, match="allowed"):
        data.download_dataset("cifar", tmp_path)


def test_real_mnist_passes_published_md5(mnist_dir, tmp_path):
    src = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    path = data.download(src.as_uri(), tmp_path, md5=data.MD5["mnist"]["t10k-labels-idx1-ubyte"])
    assert path.stat().st_size == src.stat().st_size


def test_dataloader_batches_and_normalisation():
    images = np.arange(10 * 28 * 28, dtype=np.int64).reshape(10, 28, 28) % 256
    images = images.astype(np.uint8)
    labels = np.arange(10)
    loader = DataLoader(images, labels, batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]  # last, smaller batch kept
    x0, y0 = batches[0]
    assert x0.shape == (4, 1, 28, 28) and x0.dtype == np.float32 and y0.dtype == np.int64
    np.testing.assert_allclose(x0[:, 0], images[:4] / 255.0, rtol=1e-6)
    assert x0.min() >= 0 and x0.max() <= 1

    dropped = DataLoader(images, labels, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]

    std = next(iter(DataLoader(images, labels, batch_size=10, normalize="standard")))[0]
    np.testing.assert_allclose(std, (images[:, None] / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-6)
    raw = next(iter(DataLoader(images, labels, batch_size=10, normalize=None)))[0]
    np.testing.assert_array_equal(raw, images[:, None].astype(np.float32))


def test_dataloader_shuffle_seed():
    images = np.zeros((20, 28, 28), np.uint8)
    labels = np.arange(20)

    def epochs(loader, n=2):
        return [np.concatenate([y for _, y in loader]) for _ in range(n)]

    a, b = epochs(DataLoader(images, labels, 6, shuffle=True, seed=1)), epochs(DataLoader(images, labels, 6, True, 1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])  # same seed replays the same epochs
    assert not np.array_equal(a[0], a[1])  # but each epoch is a new permutation
    assert sorted(a[0]) == list(range(20))  # every sample exactly once
    np.testing.assert_array_equal(epochs(DataLoader(images, labels, 6), 1)[0], labels)
    c = epochs(DataLoader(images, labels, 6, shuffle=True, seed=2), 1)[0]
    assert not np.array_equal(a[0], c)


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "batch_size=0"),
    ({"normalize": "minmax"}, "normalize='minmax'"),
    ({"labels": np.arange(3)}, r"labels.*\(3,\)"),
    ({"images": np.zeros((5, 784), np.uint8)}, r"images.*\(5, 784\)"),
    ({"max_shift": -1}, "max_shift=-1"),
    ({"max_shift": 1.5}, "max_shift=1.5"),
    ({"max_shift": 28}, r"max_shift=28.*\(28, 28\)"),
])
def test_dataloader_errors(kwargs, message):
    args = {"images": np.zeros((5, 28, 28), np.uint8), "labels": np.arange(5)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DataLoader(**args)


def test_shift_images_moves_each_image_by_its_own_shift():
    images = np.arange(1, 2 * 1 * 4 * 5 + 1).reshape(2, 1, 4, 5)
    out = data.shift_images(images, np.array([[1, -2], [0, 0]]))
    # image 0: one row down, two columns left, zeros moved in; image 1 unchanged
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0, 0, 0],
                                              [3, 4, 5, 0, 0],
                                              [8, 9, 10, 0, 0],
                                              [13, 14, 15, 0, 0]])
    np.testing.assert_array_equal(out[1], images[1])
    assert out.dtype == images.dtype
    # the formula out[n, c, i, j] = images[n, c, i - down, j - right], on random shifts
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 2, 7, 9)).astype(np.uint8)
    shifts = rng.integers(-3, 4, size=(6, 2))
    out = data.shift_images(images, shifts)
    for n, (down, right) in enumerate(shifts):
        for i in range(7):
            for j in range(9):
                inside = 0 <= i - down < 7 and 0 <= j - right < 9
                want = images[n, :, i - down, j - right] if inside else 0
                np.testing.assert_array_equal(out[n, :, i, j], want)


def test_shift_images_bad_input():
    with pytest.raises(ValueError, match=r"shift_images\(images\).*\(4, 4\)"):
        data.shift_images(np.zeros((4, 4)), np.zeros((4, 2), int))
    with pytest.raises(ValueError, match=r"shift_images\(shifts\).*\(3, 2\)"):
        data.shift_images(np.zeros((2, 1, 4, 4)), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="integers"):
        data.shift_images(np.zeros((2, 1, 4, 4)), np.zeros((2, 2)))
    assert data.shift_images(np.zeros((0, 1, 4, 4)), np.zeros((0, 2), int)).shape == (0, 1, 4, 4)


def test_dataloader_jitter_is_seeded_and_keeps_labels():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 28, 28)).astype(np.uint8)
    images[:, :3], images[:, -3:], images[:, :, :3], images[:, :, -3:] = 0, 0, 0, 0  # a blank border
    labels = np.arange(12)

    def batches(seed, max_shift):
        return [(x.copy(), y.copy()) for x, y in DataLoader(images, labels, 5, True, seed, max_shift=max_shift)]

    a, b = batches(3, 2), batches(3, 2)
    for (xa, ya), (xb, yb) in zip(a, b):  # the same seed gives the same shifts
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    plain = dict((int(y), x) for xs, ys in batches(3, 0) for x, y in zip(xs, ys))
    moved = 0
    for xs, ys in a:
        for x, y in zip(xs, ys):
            # each jittered image is its own image moved by at most 2 pixels each way: the pixel sum is kept
            # (the border is blank) and one of the 25 shifts gives it back
            assert np.isclose(x.sum(), plain[int(y)].sum(), rtol=1e-5)
            candidates = [data.shift_images(plain[int(y)][None], np.array([[d, r]]))[0]
                          for d in range(-2, 3) for r in range(-2, 3)]
            assert any(np.array_equal(x, c) for c in candidates)
            moved += not np.array_equal(x, plain[int(y)])
    assert moved >= 6  # 1 in 25 is left in place, so most of the 12 move
