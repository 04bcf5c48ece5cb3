"""Real data: the IDX file format, MNIST / Fashion-MNIST, an embedded MNIST subset, and a batch iterator.

The IDX format (LeCun et al.) is a tiny header followed by raw big-endian values:

    bytes 0-1   0x00 0x00
    byte  2     dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
    byte  3     number of dimensions d
    then        d sizes, each a big-endian uint32
    then        prod(sizes) values, row-major

MNIST ships as four such files (often gzip-compressed). `read_idx` checks every part of the header and that the
file holds exactly as many bytes as the header announces, so a truncated download fails loudly.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

# File names of both datasets, per split: (images, labels).
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# MD5 of the *decompressed* files. Checking the decompressed content accepts any mirror that recompressed them.
# MNIST: the published MD5s of the original files; Fashion-MNIST: the upstream raw files (see SOURCES.txt).
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

EMBEDDED_PATH = Path(__file__).resolve().parent / "_data" / "mnist_subset.npz"

# Mean and standard deviation of the full training set's pixels scaled to [0, 1]; for normalize="standard".
STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
MNIST_MEAN, MNIST_STD = STATS["mnist"]


# The largest IDX file read (MNIST's training images decompress to 47 MB); anything announcing more is refused
# before it is decompressed or allocated.
MAX_IDX_BYTES = 2**28


class IDXError(ValueError):
    """A file is not a valid IDX file (bad header, wrong length, unreadable compression)."""


def _read_bytes(path: Path, where: str) -> bytes:
    """Content of `path`, gunzipped if it starts with the gzip magic (whatever its name), never more than the
    header announces: the header is decompressed first, its size checked against MAX_IDX_BYTES, then at most
    that many bytes (+ 1, to detect trailing data) are decompressed. A small gzip file cannot expand to gigabytes."""
    if path.stat().st_size > MAX_IDX_BYTES + 1024:
        raise IDXError(f"{where}: {path.stat().st_size:,} bytes, more than the {MAX_IDX_BYTES:,} an IDX file may have")
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
    if not compressed:
        return path.read_bytes()  # at most MAX_IDX_BYTES + 1 KB, checked above
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(4)
            head += f.read(4 * head[3]) if len(head) == 4 else b""
            body = f.read(_declared_size(head, where) + 1)  # bounded: one byte more shows trailing data
    except (EOFError, OSError, zlib.error) as exc:
        raise IDXError(f"{where}: broken gzip stream ({exc}); the file is truncated or corrupt") from exc
    return head + body


def _declared_size(head: bytes, where: str) -> int:
    """Data bytes the header announces (0 if the header itself is incomplete: read_idx then says what is wrong)."""
    if len(head) < 4 or head[2] not in _IDX_DTYPES or len(head) < 4 + 4 * head[3]:
        return 0
    shape = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(head[3])]
    size = math.prod(shape) * _IDX_DTYPES[head[2]].itemsize
    if size > MAX_IDX_BYTES:
        raise IDXError(f"{where}: header shape {tuple(shape)} announces {size:,} data bytes, more than the "
                       f"{MAX_IDX_BYTES:,} allowed; refused before decompressing")
    return size


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian array of the shape in its header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_idx: no such file: {str(path)!r}")
    where = f"read_idx({str(path)!r})"
    data = _read_bytes(path, where)
    if len(data) < 4:
        raise IDXError(f"{where}: only {len(data)} bytes, an IDX header needs at least 4")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"{where}: bad magic number 0x{data[:4].hex()}: an IDX file starts with two zero bytes")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IDXError(f"{where}: unknown dtype code 0x{code:02X}; allowed: {allowed}")
    if ndim == 0:
        raise IDXError(f"{where}: number of dimensions is 0; it must be at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{where}: header announces {ndim} dimensions but the file has only {len(data)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd headers
    actual = len(data) - header
    if actual != expected:
        raise IDXError(
            f"{where}: header shape {shape} of {dtype.name} needs {expected} data bytes, the file has {actual} "
            f"({'truncated' if actual < expected else 'trailing bytes'})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def shared_data_dir() -> Path | None:
    """Folder holding full datasets: $MINICOMPRESS_DATA if set, else <repo>/../shared/data if it exists, else None."""
    env = os.environ.get("MINICOMPRESS_DATA")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / (name + ".gz"), folder / name):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_pair(root, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of `split` from the IDX files in `root` or `root/dataset`."""
    fn = f"load_{dataset.replace('-', '_')}"
    if split not in _FILES:
        raise ValueError(f"{fn}(split={split!r}): split must be 'train' or 'test'")
    root = Path(root)
    image_name, label_name = _FILES[split]
    # Accept both the dataset folder itself and its parent (e.g. ../shared/data).
    for folder in (root, root / dataset):
        images_path, labels_path = _find(folder, image_name), _find(folder, label_name)
        if images_path and labels_path:
            break
    else:
        raise FileNotFoundError(
            f"{fn}(root={str(root)!r}): no {image_name}[.gz] and {label_name}[.gz] in {str(root)!r} "
            f"or {str(root / dataset)!r}; download them with minicompress.data.download_dataset({dataset!r}, folder)"
        )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IDXError(f"{fn}: {images_path} holds {images.dtype} {images.shape}, expected uint8 (N, 28, 28)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IDXError(f"{fn}: {labels_path} holds shape {labels.shape}, expected ({len(images)},) to match the images")
    if labels.size and labels.max() > 9:
        raise IDXError(f"{fn}: {labels_path} has label {labels.max()}, labels must be in 0..9")
    return images, labels.astype(np.int64)


def load_mnist(root=None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images uint8 (N, 28, 28) and labels int64 (N,).

    root=None gives the embedded balanced subset (10,000 train / 2,000 test) that ships with the package;
    a folder gives the full set read from its IDX files (60,000 train / 10,000 test).
    """
    if root is not None:
        return _load_idx_pair(root, "mnist", split)
    if split not in _FILES:
        raise ValueError(f"load_mnist(split={split!r}): split must be 'train' or 'test'")
    if not EMBEDDED_PATH.is_file():
        raise FileNotFoundError(f"load_mnist: the embedded subset {EMBEDDED_PATH} is missing; "
                                "rebuild it with scripts/make_mnist_subset.py")
    with np.load(EMBEDDED_PATH, allow_pickle=False) as npz:
        return npz[f"x_{split}"], npz[f"y_{split}"].astype(np.int64)


def load_fashion_mnist(root=None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images uint8 (N, 28, 28) and labels int64 (N,) from the IDX files in `root`.

    There is no embedded copy: root=None means shared_data_dir(), and fails if that does not exist.
    """
    if root is None:
        root = shared_data_dir()
        if root is None:
            raise FileNotFoundError("load_fashion_mnist(root=None): no shared data folder; pass root= a folder with "
                                    "the IDX files or set MINICOMPRESS_DATA")
    return _load_idx_pair(root, "fashion-mnist", split)


def _decompressed_md5(path: Path) -> str:
    """MD5 of the content of `path` after gunzipping it when it is gzip-compressed."""
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
    digest = hashlib.md5()
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, folder, md5: str | None = None, opener=urllib.request.urlopen) -> Path:
    """Download `url` into `folder` (kept under the URL's file name) and return the path.

    `md5` is checked against the *decompressed* content, so a mirror that recompressed the file is accepted.
    The data goes to a temporary file in `folder` that is renamed into place only after the check succeeds,
    so an interrupted or corrupt download never leaves a half-written file under the final name.
    A file already present whose MD5 matches is not downloaded again. `opener(url)` returns a file-like
    response (urllib's urlopen by default; tests inject their own).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / url.rstrip("/").rsplit("/", 1)[-1]
    if target.is_file() and (md5 is None or _decompressed_md5(target) == md5):
        return target
    from minicompress.checkpoint import temporary_file

    fd, tmp = temporary_file(target)  # mode 0666 minus the umask, as any downloaded file (mkstemp: 0600)
    try:
        with os.fdopen(fd, "wb") as out, opener(url) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        if md5 is not None:
            try:
                got = _decompressed_md5(tmp)
            except (EOFError, OSError, zlib.error) as exc:
                raise IDXError(f"download({url!r}): broken gzip stream ({exc})") from exc
            if got != md5:
                raise IDXError(f"download({url!r}): MD5 of the decompressed content is {got}, expected {md5}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def download_dataset(dataset: str, folder, base_url: str | None = None, opener=urllib.request.urlopen) -> Path:
    """Download the four IDX .gz files of "mnist" or "fashion-mnist" into `folder`, each MD5-checked; return folder."""
    if dataset not in MD5:
        raise ValueError(f"download_dataset(dataset={dataset!r}): allowed: {sorted(MD5)}")
    base_url = base_url or MIRRORS[dataset]
    for name, md5 in MD5[dataset].items():
        download(base_url.rstrip("/") + "/" + name + ".gz", folder, md5=md5, opener=opener)
    return Path(folder)


class DataLoader:
    """Iterate over (x, y) batches: x float32 (B, 1, 28, 28), y int64 (B,).

    images: uint8 (N, H, W) or (N, C, H, W); labels: ints (N,).
    shuffle: a new permutation every epoch, drawn from np.random.default_rng(seed), so a given seed replays the
    same sequence of epochs. drop_last: skip the final batch when it is smaller than batch_size.
    normalize: "unit" gives x / 255 in [0, 1]; "standard" gives (x / 255 - mean) / std (MNIST's statistics
    by default, pass mean/std for another dataset); None keeps the raw 0..255 values as float32.
    Conversion happens per batch, so the full float32 dataset is never held in memory.
    max_shift: jitter, a data augmentation. Each image of every batch is moved by its own random whole number of
    pixels in [-max_shift, max_shift] down and across (drawn from the same generator as the shuffling), the pixels
    moved in filled with 0 (background). 0, the default, leaves the images as they are; `transform` never shifts.
    """

    def __init__(self, images, labels, batch_size: int = 64, shuffle: bool = False, seed=None,
                 drop_last: bool = False, normalize: str | None = "unit", mean: float = MNIST_MEAN,
                 std: float = MNIST_STD, max_shift: int = 0):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4:
            raise ValueError(f"DataLoader(images): shape {images.shape}, expected (N, H, W) or (N, C, H, W)")
        if labels.shape != (len(images),):
            raise ValueError(f"DataLoader(labels): shape {labels.shape}, expected ({len(images)},) to match images")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader(batch_size={batch_size!r}): must be an int >= 1")
        if normalize not in ("unit", "standard", None):
            raise ValueError(f"DataLoader(normalize={normalize!r}): allowed: 'unit', 'standard', None")
        if normalize == "standard" and not std > 0:
            raise ValueError(f"DataLoader(std={std!r}): must be > 0")
        if (not isinstance(max_shift, (int, np.integer)) or isinstance(max_shift, bool) or max_shift < 0
                or max_shift >= min(images.shape[2:])):
            raise ValueError(f"DataLoader(max_shift={max_shift!r}): must be an int >= 0 and smaller than the "
                             f"image size {images.shape[2:]}")
        self.images, self.labels = images, labels.astype(np.int64)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.normalize, self.mean, self.std = normalize, mean, std
        self.max_shift = int(max_shift)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Raw images (B, C, H, W) -> float32 model input, following `normalize`."""
        x = images.astype(np.float32)
        if self.normalize == "unit":
            x /= 255.0
        elif self.normalize == "standard":
            x = (x / np.float32(255.0) - np.float32(self.mean)) / np.float32(self.std)
        return x

    def __iter__(self):
        n = len(self.images)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            images = self.images[idx]
            if self.max_shift:
                images = shift_images(images, self.rng.integers(-self.max_shift, self.max_shift + 1,
                                                                size=(len(idx), 2)))
            yield self.transform(images), self.labels[idx]


def shift_images(images: np.ndarray, shifts) -> np.ndarray:
    """Move image n of (N, C, H, W) by shifts[n] = (down, right) whole pixels (negative: up, left); the pixels
    moved in are 0. out[n, c, i, j] = images[n, c, i - down, j - right] where that is inside the image, else 0."""
    images, shifts = np.asarray(images), np.asarray(shifts)
    if images.ndim != 4:
        raise ValueError(f"shift_images(images): shape {images.shape}, expected (N, C, H, W)")
    if shifts.shape != (len(images), 2) or not np.issubdtype(shifts.dtype, np.integer):
        raise ValueError(f"shift_images(shifts): shape {shifts.shape} dtype {shifts.dtype}, expected integers of "
                         f"shape ({len(images)}, 2), one (down, right) pair per image")
    n, _, h, w = images.shape
    pad = int(np.abs(shifts).max(initial=0))
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = np.arange(h)[None, :] + pad - shifts[:, :1]  # (N, H): the padded row each output row comes from
    cols = np.arange(w)[None, :] + pad - shifts[:, 1:]
    return padded[np.arange(n)[:, None, None, None], np.arange(images.shape[1])[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
