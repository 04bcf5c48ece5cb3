"""Issue 13, property: random byte edits of every file kind give either the loader's own error or a model whose
arrays are exactly the original ones -- never another exception, never different numbers."""
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hostile_files import KINDS, assert_same_state, build, idx_gz, state

from minicompress import checkpoint, data


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    out = {}
    for kind in KINDS:
        path = build(kind, folder / f"{kind}.npz")
        out[kind] = (path.read_bytes(), state(checkpoint.load(path)))
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    out["idx"] = (idx_gz(folder / "images.gz", images).read_bytes(), images)
    return out


# An edit: (where, new byte). Positions are drawn anywhere in the file, or in its last 400 bytes (the zip
# directory and the metadata, where an edit changes structure rather than array values).
edits = st.lists(st.tuples(st.booleans(), st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=4)


def _apply(raw, changes, cut):
    raw = bytearray(raw)
    for tail, position, value in changes:
        i = (len(raw) - 1 - position % min(400, len(raw))) if tail else position % len(raw)
        raw[i] = value
    return bytes(raw[:len(raw) - cut])


def _rezip(raw, member, changes):
    """The same edits inside one member's content, the zip rewritten with valid CRCs (as a careful forger would):
    only the SHA-256 digest and the field checks stand between such a file and a wrong model."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        contents = [(info.filename, zf.read(info)) for info in zf.infolist()]
    name, content = contents[member % len(contents)]
    contents[member % len(contents)] = (name, _apply(content, changes, 0) if content else content)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in contents:
            zf.writestr(name, content)
    return out.getvalue()


def _write(raw):
    folder = Path(tempfile.mkdtemp())
    path = folder / "edited.bin"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=edits, cut=st.sampled_from([0, 0, 0, 1, 7, 100]), member=st.none() | st.integers(0, 100))
def test_an_edited_file_loads_exactly_or_fails_with_checkpoint_error(originals, kind, changes, cut, member):
    raw, expected = originals[kind]
    path = _write(_apply(raw, changes, cut) if member is None else _rezip(raw, member, changes))
    try:
        model = checkpoint.load(path)
    except checkpoint.CheckpointError as exc:
        assert str(path) in str(exc)
    else:
        assert_same_state(state(model), expected)
    finally:
        path.unlink()
        path.parent.rmdir()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=edits, cut=st.sampled_from([0, 0, 1, 4, 9]))
def test_an_edited_gzip_idx_file_reads_exactly_or_fails_with_idx_error(originals, changes, cut):
    raw, expected = originals["idx"]
    path = _write(_apply(raw, changes, cut))
    try:
        images = data.read_idx(path)
    except data.IDXError as exc:
        assert str(path) in str(exc)
    else:
        assert images.dtype == expected.dtype and images.shape == expected.shape
        assert images.tobytes() == expected.tobytes()
    finally:
        path.unlink()
        path.parent.rmdir()


# ---- crafted files: hostile values written with a valid digest, as a forger who read this code would ----------------

HOSTILE_VALUES = [True, False, -1, 0, 3, 2**40, -2**40, 1e308, 0.5, "x", "", None, [], {}, [2**31, 2**31], [-1]]


def _leaves(value, path=()):
    """Every (path, value) of a JSON document, containers included."""
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _leaves(child, path + (key,))


def _hostile_array(a, how):
    """One of ten hostile replacements of an array: reshaped, empty, another dtype, negated, huge, extreme, doubled."""
    extreme = np.iinfo(a.dtype).max if a.dtype.kind in "iu" else True if a.dtype.kind == "b" else np.nan
    variants = [lambda: a.ravel(), lambda: a.ravel()[:0], lambda: a.astype(np.float64), lambda: a.astype(np.int8),
                lambda: a.astype(bool), lambda: -a, lambda: a * 1e30, lambda: np.full_like(a, extreme),
                lambda: a.T.copy(), lambda: np.concatenate([a.ravel(), a.ravel()])]
    with np.errstate(all="ignore"):
        return variants[how % len(variants)]()


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit_meta=st.booleans(), pick=st.integers(0, 10**6), value=st.sampled_from(HOSTILE_VALUES),
       how=st.integers(0, 9))
def test_a_crafted_file_with_a_valid_digest_fails_with_checkpoint_error_or_runs(originals, kind, edit_meta, pick,
                                                                                  value, how):
    import time

    path = _write(originals[kind][0])
    arrays, meta = checkpoint.read_npz(path)
    if edit_meta:
        leaves = [p for p, _ in _leaves(meta) if p and p[0] not in ("format", "version", "kind")]
        *parent, last = leaves[pick % len(leaves)]
        target = meta
        for key in parent:
            target = target[key]
        target[last] = value
    else:
        key = sorted(arrays)[pick % len(arrays)]
        arrays[key] = _hostile_array(arrays[key], how)
    checkpoint.write_npz(path, arrays, meta)
    start = time.perf_counter()
    try:
        checkpoint.load(path)  # success means the probe forward pass gave finite logits
    except checkpoint.CheckpointError as exc:
        assert str(path) in str(exc)
    finally:
        path.unlink()
        path.parent.rmdir()
    assert time.perf_counter() - start < 2
