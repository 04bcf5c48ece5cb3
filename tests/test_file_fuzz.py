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
