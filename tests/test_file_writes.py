"""Issue 13, writing: atomic saves that never clobber a file unless asked, leave no temporary file (even on
SIGTERM), follow the umask and keep the mode of a replaced file; any OSError is one line from the CLI."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minicompress import checkpoint, cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_follows_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        checkpoint.write_npz(tmp_path / "m.npz", {"a": np.ones(2)}, {"kind": "t"})
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == mode


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = checkpoint.write_npz(tmp_path / "m.npz", {"a": np.ones(2)}, {"kind": "t"})
    path.chmod(0o640)
    checkpoint.write_npz(path, {"a": np.zeros(2)}, {"kind": "t"}, overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(checkpoint.read_npz(path)[0]["a"], np.zeros(2))


def test_without_overwrite_an_existing_file_is_refused_and_kept(tmp_path):
    path = checkpoint.write_npz(tmp_path / "m.npz", {"a": np.ones(2)}, {"kind": "t"})
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="exists already"):
        checkpoint.write_npz(path, {"a": np.zeros(2)}, {"kind": "t"}, overwrite=False)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]


def test_a_file_that_appears_during_the_write_is_not_clobbered(tmp_path):
    path = tmp_path / "m.npz"

    def write(f):  # another command finishes first, while this one is still writing
        path.write_bytes(b"the other command's result")
        f.write(b"this command's result")

    with pytest.raises(FileExistsError, match="appeared while this command ran; nothing was overwritten"):
        checkpoint.atomic_write(path, write, overwrite=False)
    assert path.read_bytes() == b"the other command's result"
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left
    checkpoint.atomic_write(path, lambda f: f.write(b"forced"), overwrite=True)
    assert path.read_bytes() == b"forced" and os.listdir(tmp_path) == ["m.npz"]


def test_a_folder_is_not_a_file_name(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        checkpoint.write_npz(tmp_path, {"a": np.ones(2)}, {"kind": "t"})


def test_sigterm_during_a_save_removes_the_temporary_file(tmp_path):
    code = ("import os, signal; from minicompress import checkpoint\n"
            "def write(f):\n"
            "    f.write(b'half of a file')\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    f.write(b'never reached')\n"
            f"checkpoint.atomic_write({str(tmp_path / 'm.npz')!r}, write)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "terminated while writing" in result.stderr and "temporary file was removed" in result.stderr
    assert os.listdir(tmp_path) == []


def test_the_previous_sigterm_handler_is_back_after_a_save(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    checkpoint.atomic_write(tmp_path / "m.bin", lambda f: f.write(b"x"))
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("error,expected", [
    (PermissionError(13, "Permission denied", "out/m.npz"), "out/m.npz: Permission denied"),
    (OSError(28, "No space left on device", "m.npz"), "m.npz: No space left on device"),
    (IsADirectoryError(21, "is a folder, not a file name", "adir"), "adir: is a folder, not a file name"),
])
def test_cli_turns_any_oserror_into_one_line(monkeypatch, capsys, error, expected):
    from minicompress.commands import train

    def fail(args):
        raise error

    monkeypatch.setattr(train, "run", fail)
    monkeypatch.delenv("MINICOMPRESS_DEBUG", raising=False)
    assert cli.main(["train", "--out", "x.npz"]) == 2
    err = capsys.readouterr().err
    assert err == f"minicompress train: error: {expected}\n"


def test_a_downloaded_dataset_file_follows_the_umask(tmp_path):
    from minicompress import data

    src = tmp_path / "x.gz"
    src.write_bytes(b"abc")
    old = os.umask(0o022)
    try:
        path = data.download(src.as_uri(), tmp_path / "cache")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644 and os.listdir(tmp_path / "cache") == ["x.gz"]
