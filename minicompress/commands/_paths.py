"""Output paths of the writing commands, checked before any work so that nothing is lost and nothing is wasted.

Every command that writes a file calls check_output() first, before loading data or training:
  - --out must not be one of the command's inputs (same real path or same file: a link, `./s.npz`, ...), or the
    input would be replaced by a file no command reads back in its place;
  - an existing --out is replaced only with --force;
  - --out must not be a folder, and its folder must exist and be writable.
The save itself is atomic and, without --force, never clobbers a file that appeared meanwhile
(checkpoint.atomic_write).
"""
from __future__ import annotations

import os
from pathlib import Path

from minicompress.cli import CLIError


def add_force_argument(parser) -> None:
    parser.add_argument("--force", action="store_true", help="replace --out if it exists (never one of the inputs)")


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out, inputs=(), force: bool = False, option: str = "--out", folder: bool = False) -> Path | None:
    """Raise CLIError (one line: option, path, reason) unless `out` can be written; returns it as a Path.

    inputs: the files the command reads. folder=True: `out` is a folder the command fills (demo).
    """
    if out is None:
        return None
    out = Path(out)
    for source in inputs:
        if source is not None and Path(source).exists() and _same(out, source):
            raise CLIError(f"{option} {out}: is the input {source}; writing it would replace the input, choose "
                           "another file name")
    if folder:
        if out.exists() and not out.is_dir():
            raise CLIError(f"{option} {out}: exists and is not a folder")
        parent = out
        while not parent.exists() and parent != parent.parent:  # missing folders are created
            parent = parent.parent
    else:
        if out.is_dir():
            raise CLIError(f"{option} {out}: is a folder; give a file name, e.g. {out / 'model.npz'}")
        if out.exists() and not force:
            raise CLIError(f"{option} {out}: exists already; pass --force to replace it")
        parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise CLIError(f"{option} {out}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise CLIError(f"{option} {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {out}: folder {parent} is not writable")
    return out
