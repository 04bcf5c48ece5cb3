"""Checkpoints: named NumPy arrays plus JSON metadata in one .npz file, written atomically, read without pickle.

File layout (a plain .npz, readable by `np.load` anywhere):
    <name>    one entry per array, dtype and shape preserved bit for bit
    __meta__  uint8 array holding UTF-8 JSON: {"format": "minicompress", "version": 1, "kind": ..., ...}

`kind` says what the file holds: "model" for save()/load(); technique modules use their own kinds
("pruned", "quantized", "binary", ...) through write_npz/read_npz.

Why not pickle: np.load(..., allow_pickle=True) on a file from the internet can run arbitrary code, so
minicompress never stores Python objects, only arrays and JSON.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT = "minicompress"
VERSION = 1
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A file is not a readable minicompress checkpoint (truncated, corrupt, foreign or of the wrong kind)."""


def write_npz(path, arrays: dict, meta: dict, compress: bool = False) -> Path:
    """Write `arrays` (name -> ndarray) and `meta` (JSON-serialisable, must contain "kind") to `path` atomically.

    The file is written to a temporary file in the same folder and then renamed over `path` with os.replace,
    so a crash mid-write leaves either the old file or the new one, never half of one.
    compress=False by default so the file size reflects the stored arrays (sizes are compared across techniques).
    """
    path = Path(path)
    if "kind" not in meta or not isinstance(meta["kind"], str):
        raise ValueError(f"write_npz(meta={meta!r}): meta needs a string 'kind', e.g. 'model'")
    header = {"format": FORMAT, "version": VERSION, **meta}
    try:
        meta_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    except TypeError as exc:
        raise ValueError(f"write_npz: meta must be JSON-serialisable ({exc})") from exc
    payload = {}
    for name, value in arrays.items():
        if name == META_KEY:
            raise ValueError(f"write_npz: array name {META_KEY!r} is reserved for the metadata")
        value = np.asarray(value)
        if value.dtype == object:
            raise ValueError(f"write_npz: array {name!r} has dtype object; only numeric/bool arrays can be stored")
        payload[name] = value
    payload[META_KEY] = np.frombuffer(meta_bytes, dtype=np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def read_npz(path, kind: str | None = None) -> tuple[dict, dict]:
    """Read a file written by write_npz: returns (arrays: dict name -> ndarray, meta: dict).

    Loads with allow_pickle=False. Raises FileNotFoundError for a missing file and CheckpointError for a
    truncated or corrupt file, a file not written by minicompress, a newer format version, or (when `kind` is
    given) a file holding another kind.
    """
    path = Path(path)
    where = f"read_npz({str(path)!r})"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{where}: not a .npz archive (truncated or corrupt, or another format)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{where}: cannot read the archive, it is truncated or corrupt ({exc})") from exc
    if META_KEY not in arrays:
        raise CheckpointError(f"{where}: a .npz without {META_KEY!r}, so not written by minicompress "
                              f"(arrays: {sorted(arrays)[:5]})")
    raw = arrays.pop(META_KEY)
    try:
        meta = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: metadata is not valid JSON, the file is corrupt ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: metadata says format {meta.get('format') if isinstance(meta, dict) else meta!r}"
                              f", expected {FORMAT!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CheckpointError(f"{where}: format version {meta.get('version')!r}, this minicompress reads up to "
                              f"{VERSION}; upgrade minicompress")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{where}: holds kind {meta.get('kind')!r}, expected {kind!r}")
    return arrays, meta


def save(model, path, meta: dict | None = None) -> Path:
    """Save a zoo model: its state_dict (every parameter and buffer) and its spec, so load() can rebuild it.

    `meta` adds JSON-serialisable facts (e.g. {"test_accuracy": 0.98, "dataset": "mnist"}).
    """
    spec = getattr(model, "spec", None)
    if not isinstance(spec, str):
        raise ValueError(f"save({type(model).__name__}): the model has no .spec string, so load() could not rebuild "
                         "it; build it with minicompress.models, or use write_npz(path, model.state_dict(), meta)")
    header = {**(meta or {}), "kind": "model", "spec": spec, "training": bool(model.training)}
    return write_npz(path, model.state_dict(), header)


def load(path):
    """Rebuild the zoo model saved by save(): models.from_spec(meta["spec"]) then load_state_dict(strict=True).

    The model comes back in the train/eval mode it was saved in. meta is available as model.checkpoint_meta.
    """
    from minicompress import models

    arrays, meta = read_npz(path, kind="model")
    try:
        model = models.from_spec(meta["spec"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"load({str(path)!r}): cannot rebuild model spec {meta.get('spec')!r} ({exc})") from exc
    try:
        # A pruned model stores <name>_orig and <name>_mask: re-create that reparametrisation first, so the
        # model comes back pruned with the same masks (added by the pruning engineer).
        if any(key.endswith("_mask") and key[:-5] + "_orig" in arrays for key in arrays):
            from minicompress import pruning

            pruning.restore_pruning(model, arrays)
        model.load_state_dict(arrays, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"load({str(path)!r}): arrays do not fit model {meta['spec']!r} ({exc})") from exc
    model.train(meta.get("training", False))
    model.checkpoint_meta = meta
    return model
