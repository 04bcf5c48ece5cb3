"""Checkpoints: named NumPy arrays plus JSON metadata in one .npz file, written atomically, read without pickle,
checked for tampering, size and sense before anything is built from them.

File layout (a plain .npz, readable by `np.load` anywhere):
    <name>    one entry per array, dtype and shape preserved bit for bit
    __meta__  uint8 array holding UTF-8 JSON: {"format": "minicompress", "version": 2, "kind": ..., "sha256": ...}

`kind` says what the file holds: "model" for save(); each technique registers the kind it writes ("pruned",
"quantized", "binary", "deep_compression") with `register_kind`, and `load(path)` opens every kind.

Why not pickle: np.load(..., allow_pickle=True) on a file from the internet can run arbitrary code, so
minicompress never stores Python objects, only arrays and JSON.

Sections: 1. the format; 2. writing without losing a file; 3. reading without trusting the file;
4. checking metadata fields (used by every technique's reader); 5. one loader for every kind; 6. zoo models.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import math
import os
import signal
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np

# ====================================================================================================================
# 1. The format
# ====================================================================================================================

FORMAT = "minicompress"
# Version 2 adds "sha256" to the metadata: a digest of every array (name, dtype, shape, bytes) and of the rest of
# the metadata. Version-1 files (no digest) are refused: an edit to them cannot be detected. Re-create them
# (train / prune / quantize again) with this minicompress.
VERSION = 2
META_KEY = "__meta__"

# Sane maxima, checked before anything is allocated. The zoo's largest model has 431,080 parameters (1.7 MB);
# a file declaring more than MAX_ELEMENTS entries in one tensor or MAX_FILE_BYTES of arrays in all is refused,
# and so is a zip whose arrays would expand to more than MAX_EXPANSION times the file's size (+ 16 MB): a small
# file must not be able to claim a lot of memory (minicompress writes its files uncompressed, ratio 1).
MAX_ELEMENTS = 2**26           # 67 million entries: 256 MB as float32
MAX_FILE_BYTES = 2**28         # all arrays of one file together, uncompressed: 256 MB
MAX_EXPANSION = 64
MAX_META_BYTES = 2**24         # the JSON metadata
MAX_META_DEPTH = 16            # nesting of JSON lists / dicts
MAX_MEMBERS = 10_000           # arrays in one file (the largest file written holds about 50)
_ALLOWED_KINDS = "biuf"        # bool, signed / unsigned integers, floats: no complex, strings, objects, records


class CheckpointError(ValueError):
    """A file is not a readable minicompress checkpoint (truncated, corrupt, tampered with, foreign, too large, or
    of the wrong kind). The message names the file and what is wrong."""


def digest(arrays: dict, meta: dict) -> str:
    """SHA-256 over every array (sorted by name: name, dtype, shape, then its C-order bytes) and over the
    metadata without its "sha256" field (canonical JSON: sorted keys)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        head = json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8")
        h.update(len(head).to_bytes(8, "little") + head)
        h.update(a.nbytes.to_bytes(8, "little"))
        h.update(a.tobytes())
    body = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True, allow_nan=False)
    h.update(body.encode("utf-8"))
    return h.hexdigest()


# ====================================================================================================================
# 2. Writing without losing a file
# ====================================================================================================================
# The file is written to a temporary file in the same folder, then linked into place: os.link fails if the
# target exists, so a file that appeared meanwhile (another command writing the same output) is never clobbered.
# With overwrite=True the temporary file replaces the target with os.replace (atomic: the old file or the new
# one, never half of one). The temporary file is removed whatever happens, also on SIGTERM.
# Modes: a new file follows the umask (0644 with the usual 022), as `open` does; a replaced file keeps its mode.


@contextlib.contextmanager
def _removed_on_sigterm(tmp: Path):
    """While writing, SIGTERM removes the temporary file and exits with 143 (128 + 15, as the shell reports)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        tmp.unlink(missing_ok=True)
        sys.stdout.flush()
        sys.stderr.write(f"minicompress: terminated while writing {tmp.name}; the temporary file was removed\n")
        os._exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def temporary_file(path: Path) -> tuple[int, Path]:
    """A new file next to `path`, created with mode 0666 minus the umask (mkstemp would give 0600)."""
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{attempt}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file next to it", str(path))


def atomic_write(path, write, overwrite: bool = True) -> Path:
    """Call write(f) on a binary file object, then put the result at `path` atomically (see above).

    overwrite=False raises FileExistsError if `path` exists, also if it appeared while `write` ran.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file name", str(path))
    if not overwrite and path.exists():
        raise FileExistsError(errno.EEXIST, "exists already (pass --force / overwrite=True to replace it)",
                              str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)
    try:
        with _removed_on_sigterm(tmp):
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(tmp, path.stat().st_mode & 0o7777)  # a replaced file keeps its mode
                os.replace(tmp, path)
            else:
                _link_into_place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _link_into_place(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # fails with FileExistsError if the target exists: never clobbers
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "appeared while this command ran; nothing was overwritten "
                                            "(pass --force to replace it)", str(path)) from None
    except OSError:
        # file systems without hard links (some network and FAT mounts): check, then rename
        if path.exists():
            raise FileExistsError(errno.EEXIST, "appeared while this command ran; nothing was overwritten",
                                  str(path)) from None
        os.replace(tmp, path)


def write_npz(path, arrays: dict, meta: dict, compress: bool = False, overwrite: bool = True) -> Path:
    """Write `arrays` (name -> ndarray) and `meta` (JSON-serialisable, must contain "kind") to `path` atomically.

    The metadata gets "format", "version" and "sha256" (see `digest`). compress=False by default so the file
    size reflects the stored arrays (sizes are compared across techniques). overwrite=False refuses an existing
    file (FileExistsError), even one created while writing.
    """
    if "kind" not in meta or not isinstance(meta["kind"], str):
        raise ValueError(f"write_npz(meta={meta!r}): meta needs a string 'kind', e.g. 'model'")
    header = {"format": FORMAT, "version": VERSION,
              **{k: v for k, v in meta.items() if k not in ("format", "version", "sha256")}}
    payload = {}
    for name, value in arrays.items():
        if name == META_KEY:
            raise ValueError(f"write_npz: array name {META_KEY!r} is reserved for the metadata")
        value = np.asarray(value)
        if value.dtype.kind not in _ALLOWED_KINDS or value.dtype.fields is not None:
            raise ValueError(f"write_npz: array {name!r} has dtype {value.dtype}; only numeric/bool arrays can be "
                             "stored (dtype object needs pickle)")
        payload[name] = value
    try:
        header["sha256"] = digest(payload, header)
        meta_bytes = json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"write_npz: meta must be JSON-serialisable, without NaN or Inf ({exc})") from exc
    payload[META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)
    save = np.savez_compressed if compress else np.savez
    return atomic_write(path, lambda f: save(f, **payload), overwrite=overwrite)


# ====================================================================================================================
# 3. Reading without trusting the file
# ====================================================================================================================
# Order of the checks: the zip directory (names, compression methods, declared sizes against MAX_FILE_BYTES);
# then each array's .npy header (dtype, shape against MAX_ELEMENTS and against the bytes the member holds) before
# its data is read; the zip CRC; the JSON metadata (size, nesting, no NaN); the version; the SHA-256 digest.


def _refuse_constant(name):
    raise ValueError(f"{name} is not allowed in the metadata")


def _depth(value, limit):
    """Nesting depth of lists / dicts, without recursion (a deep file cannot overflow the stack)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, d = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    name = info.filename[:-4]
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"{where}: array {name!r} has .npy format {version}, expected 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, fortran, dtype = read_header(f)
        except Exception as exc:  # the header is a Python literal: a corrupt one fails in many ways (TokenError...)
            raise CheckpointError(f"{where}: array {name!r} has a corrupt .npy header ({type(exc).__name__}: "
                                  f"{exc})") from None
        if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise CheckpointError(f"{where}: array {name!r} has dtype {dtype}; only bool, integer and float arrays "
                                  "are allowed")
        if not all(isinstance(n, int) and n >= 0 for n in shape) or len(shape) > 32:
            raise CheckpointError(f"{where}: array {name!r} declares shape {shape}")
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            raise CheckpointError(f"{where}: array {name!r} declares shape {shape}, {count:,} entries, more than "
                                  f"the {MAX_ELEMENTS:,} allowed")
        needed, present = count * dtype.itemsize, info.file_size - f.tell()
        if needed != present:
            raise CheckpointError(f"{where}: array {name!r} declares shape {shape} of {dtype} ({needed:,} bytes) "
                                  f"but holds {present:,} bytes")
        data = f.read(needed)
        if len(data) != needed or f.read(1):  # reading to the end also checks the zip CRC
            raise CheckpointError(f"{where}: array {name!r} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


def _read_arrays(path: Path, where: str) -> dict:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        if len(infos) > MAX_MEMBERS:
            raise CheckpointError(f"{where}: {len(infos):,} zip entries, more than the {MAX_MEMBERS:,} allowed")
        if len(set(names)) != len(names):
            raise CheckpointError(f"{where}: {len(names) - len(set(names))} zip entries repeat a name")
        total, limit = 0, min(MAX_FILE_BYTES, MAX_EXPANSION * path.stat().st_size + 2**24)
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise CheckpointError(f"{where}: zip entry {info.filename!r} is not an array (.npy)")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise CheckpointError(f"{where}: array {info.filename[:-4]!r} uses zip compression method "
                                      f"{info.compress_type}; only stored (0) and deflate (8) are read")
            if info.flag_bits & 0x1:
                raise CheckpointError(f"{where}: array {info.filename[:-4]!r} is encrypted")
            total += info.file_size
            if total > limit:
                raise CheckpointError(f"{where}: the zip directory declares more than {limit:,} bytes of arrays "
                                      f"for a file of {path.stat().st_size:,} bytes; refused before reading")
        return {info.filename[:-4]: _read_member(zf, info, where) for info in infos}


def _parse_meta(raw: np.ndarray, where: str) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_META_BYTES:
        raise CheckpointError(f"{where}: {META_KEY!r} must be a 1-d uint8 array of at most {MAX_META_BYTES:,} "
                              f"bytes, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise CheckpointError(f"{where}: metadata nested too deeply, the file is corrupt") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{where}: metadata is not valid JSON, the file is corrupt ({exc})") from exc
    if _depth(meta, MAX_META_DEPTH) > MAX_META_DEPTH:
        raise CheckpointError(f"{where}: metadata nested deeper than {MAX_META_DEPTH} levels, the file is corrupt")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{where}: metadata says format {found!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: format version {version!r} is not a version number (an int >= 1)")
    if version > VERSION:
        raise CheckpointError(f"{where}: format version {version}, this minicompress reads up to {VERSION}; "
                              "upgrade minicompress")
    if version < VERSION:
        raise CheckpointError(f"{where}: format version {version} carries no integrity digest, so edits to it "
                              "cannot be detected; re-create the file with this minicompress")
    if not isinstance(meta.get("kind"), str):
        raise CheckpointError(f"{where}: metadata field 'kind' must be a string, got {meta.get('kind')!r}")
    return meta


def read_npz(path, kind: str | None = None) -> tuple[dict, dict]:
    """Read a file written by write_npz: returns (arrays: dict name -> ndarray, meta: dict without "sha256").

    Never unpickles and never allocates more than the checks above allow. Raises FileNotFoundError for a
    missing file and CheckpointError for a truncated, corrupt, tampered, oversized or foreign file, a newer
    format version, or (when `kind` is given) a file holding another kind.
    """
    path = Path(path)
    where = f"read_npz({str(path)!r})"
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such file" if not path.exists() else "not a file", str(path))
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{where}: not a .npz archive (truncated or corrupt, or another format)")
    try:
        arrays = _read_arrays(path, where)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError, SyntaxError, TypeError, OverflowError, MemoryError) as exc:
        raise CheckpointError(f"{where}: cannot read the archive, it is truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from exc
    if META_KEY not in arrays:
        raise CheckpointError(f"{where}: a .npz without {META_KEY!r}, so not written by minicompress "
                              f"(arrays: {sorted(arrays)[:5]})")
    meta = _parse_meta(arrays.pop(META_KEY), where)
    claimed = meta.pop("sha256", None)
    if claimed != digest(arrays, meta):
        raise CheckpointError(f"{where}: the SHA-256 digest does not match the arrays and metadata: the file was "
                              "edited or corrupted after it was written")
    if kind is not None and meta["kind"] != kind:
        raise CheckpointError(f"{where}: holds kind {meta['kind']!r}, expected {kind!r}")
    return arrays, meta


# ====================================================================================================================
# 4. Checking metadata fields
# ====================================================================================================================
# A digest stops accidental and naive edits; a file crafted with a recomputed digest must still fail with a
# CheckpointError naming the field, never an IndexError or a model computing garbage. Readers use these helpers.


def field(meta: dict, key: str, types, where: str, allow_none: bool = False):
    """meta[key], checked to be of `types` (bool is never accepted as an int or float)."""
    if not isinstance(meta, dict) or key not in meta:
        raise CheckpointError(f"{where}: metadata field {key!r} is missing")
    value = meta[key]
    if value is None and allow_none:
        return None
    types = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise CheckpointError(f"{where}: metadata field {key!r} = {value!r} must be "
                              f"{' or '.join(t.__name__ for t in types)}")
    return value


def int_field(meta: dict, key: str, where: str, lo: int | None = None, hi: int | None = None) -> int:
    value = field(meta, key, int, where)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise CheckpointError(f"{where}: metadata field {key!r} = {value} must be in [{lo}, {hi}]")
    return value


def shape_field(meta: dict, key: str, where: str) -> tuple:
    """A list of non-negative ints whose product is at most MAX_ELEMENTS."""
    value = field(meta, key, list, where)
    if len(value) > 32 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value):
        raise CheckpointError(f"{where}: metadata field {key!r} = {value!r} is not a shape")
    if math.prod(value) > MAX_ELEMENTS:
        raise CheckpointError(f"{where}: metadata field {key!r} declares shape {value}, {math.prod(value):,} "
                              f"entries, more than the {MAX_ELEMENTS:,} allowed")
    return tuple(value)


def array(arrays: dict, key: str, where: str, kinds: str = _ALLOWED_KINDS, ndim: int | None = None,
          finite: bool = True) -> np.ndarray:
    """arrays[key], checked for presence, dtype kind ("f" float, "iu" integers, "b" bool), ndim and finiteness."""
    if key not in arrays:
        raise CheckpointError(f"{where}: array {key!r} is missing")
    a = arrays[key]
    if a.dtype.kind not in kinds:
        raise CheckpointError(f"{where}: array {key!r} has dtype {a.dtype}, expected kind {kinds!r}")
    if ndim is not None and a.ndim != ndim:
        raise CheckpointError(f"{where}: array {key!r} has shape {a.shape}, expected {ndim} dimension(s)")
    if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
        raise CheckpointError(f"{where}: array {key!r} holds NaN or Inf")
    return a


def check_finite_arrays(arrays: dict, where: str) -> None:
    """Every float array finite: a NaN weight would only show up later as a meaningless accuracy."""
    for key, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{where}: array {key!r} holds NaN or Inf")


def check_running_var(arrays: dict, where: str) -> None:
    """Batch norm variances must be >= 0 (their square root divides the activations)."""
    for key, a in arrays.items():
        if key.endswith("running_var") and a.size and (a < 0).any():
            raise CheckpointError(f"{where}: array {key!r} holds a negative variance {a.min()}")


# ====================================================================================================================
# 5. One loader for every kind
# ====================================================================================================================
# Each technique module calls register_kind(kind, build) when it is imported; build(arrays, meta, where, **options)
# returns the model. checkpoint itself imports no technique: load() imports the module of a known kind lazily.

_BUILDERS: dict = {}
KIND_MODULES = {"model": __name__, "pruned": "minicompress.pruning", "quantized": "minicompress.quantization",
                "binary": "minicompress.binary", "deep_compression": "minicompress.pipeline"}
# Anything a builder raises on a crafted file becomes a CheckpointError naming the file (never a raw traceback).
_BUILD_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError, OverflowError,
                 ZeroDivisionError, MemoryError)


def register_kind(kind: str, build) -> None:
    """Make load() able to open files of `kind`: build(arrays, meta, where, **options) -> model."""
    _BUILDERS[kind] = build


def builder(kind: str, where: str):
    if kind not in _BUILDERS and kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[kind])
    if kind not in _BUILDERS:
        raise CheckpointError(f"{where}: holds kind {kind!r}, which no minicompress module reads; known kinds: "
                              f"{sorted(KIND_MODULES)}")
    return _BUILDERS[kind]


def load(path, kind: str | None = None, **options):
    """Open any file the project writes: a zoo model ("model"), a pruned, quantized, binary or Deep Compression
    file. `kind` restricts what is accepted. The model gets .checkpoint_meta (the file's metadata) and
    .checkpoint_kind."""
    arrays, meta = read_npz(path, kind=kind)
    where = f"load({str(path)!r})"
    build = builder(meta["kind"], where)
    try:
        model = build(arrays, meta, where, **options)
        _probe(model, where)
    except CheckpointError:
        raise
    except _BUILD_ERRORS as exc:
        raise CheckpointError(f"{where}: the {meta['kind']} file does not describe a valid model "
                              f"({type(exc).__name__}: {exc})") from exc
    with contextlib.suppress(AttributeError):
        model.checkpoint_meta, model.checkpoint_kind = meta, meta["kind"]
    return model


def _probe(model, where: str) -> None:
    """Run the rebuilt model once on a zero input of the shape its spec takes (eval mode, no gradient), so that
    layers that do not fit together, or a model computing NaN, fail here and not in the middle of an evaluation."""
    spec = getattr(model, "spec", None)
    kind, _, rest = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind in ("mlp", "binary_mlp"):
        first = rest.split("-")[0]
        if not first.isdigit() or not 0 < int(first) <= 2**20:
            raise CheckpointError(f"{where}: spec {spec!r} does not start with an input size in [1, 2^20]")
        x = np.zeros((1, int(first)), np.float32)
    elif spec in ("lenet300_100", "lenet5", "lenet5_caffe"):
        x = np.zeros((1, 1, 28, 28), np.float32)
    else:
        return  # a model built by hand: its input shape is unknown
    from minicompress.tensor import Tensor, no_grad

    training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with no_grad():
            out = model(x)
    finally:
        if hasattr(model, "train"):
            model.train(training)
    out = np.asarray(out.data if isinstance(out, Tensor) else out)
    if out.ndim != 2 or out.shape[0] != 1 or not np.isfinite(out).all():
        raise CheckpointError(f"{where}: the rebuilt model maps a zero input to {out.shape} {out.ravel()[:3]}, "
                              "not finite logits")


# ====================================================================================================================
# 6. Zoo models (kind "model")
# ====================================================================================================================


def save(model, path, meta: dict | None = None, overwrite: bool = True) -> Path:
    """Save a zoo model: its state_dict (every parameter and buffer) and its spec, so load() can rebuild it.

    `meta` adds JSON-serialisable facts (e.g. {"test_accuracy": 0.98, "dataset": "mnist"}).
    """
    spec = getattr(model, "spec", None)
    if not isinstance(spec, str):
        raise ValueError(f"save({type(model).__name__}): the model has no .spec string, so load() could not rebuild "
                         "it; build it with minicompress.models, or use write_npz(path, model.state_dict(), meta)")
    header = {**(meta or {}), "kind": "model", "spec": spec, "training": bool(model.training)}
    return write_npz(path, model.state_dict(), header, overwrite=overwrite)


def build_zoo_model(spec, where: str):
    """models.from_spec(spec), refusing a spec whose parameters the file's arrays could not even hold (a tiny file
    declaring huge layers must not allocate gigabytes)."""
    from minicompress import models

    if not isinstance(spec, str):
        raise CheckpointError(f"{where}: metadata field 'spec' = {spec!r} must be a model spec string")
    try:
        needed = models.parameter_count(spec)
    except ValueError as exc:
        raise CheckpointError(f"{where}: cannot rebuild model spec {spec!r} ({exc})") from exc
    if needed > MAX_ELEMENTS:
        raise CheckpointError(f"{where}: spec {spec!r} declares {needed:,} parameters, more than the "
                              f"{MAX_ELEMENTS:,} allowed")
    return models.from_spec(spec), needed


def _build_model(arrays, meta, where):
    model, needed = build_zoo_model(meta.get("spec"), where)
    present = sum(a.size for a in arrays.values())
    if present < needed:
        raise CheckpointError(f"{where}: spec {meta['spec']!r} has {needed:,} parameters but the file holds "
                              f"{present:,} numbers")
    training = field(meta, "training", bool, where) if "training" in meta else False
    check_finite_arrays(arrays, where)
    check_running_var(arrays, where)
    try:
        # A pruned model stores <name>_orig and <name>_mask: re-create that reparametrisation first, so the
        # model comes back pruned with the same masks (pruning registers restore_pruning when imported).
        if any(key.endswith("_mask") and key[:-5] + "_orig" in arrays for key in arrays):
            importlib.import_module("minicompress.pruning").restore_pruning(model, arrays)
        model.load_state_dict(arrays, strict=True)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{where}: arrays do not fit model {meta['spec']!r} ({exc})") from exc
    model.train(training)
    return model


register_kind("model", _build_model)
