"""Checks on the paths a command will write, made before any work starts.

A run of minutes that ends in a traceback because ``--out`` points under a regular file or into a
read-only folder wastes the run; a video or report written over last week's loses it. Commands
call `check_output` on their ``--out`` first, and each problem is one line naming the path.
`sha256_file` is the one file hash that every record of provenance uses (models, ONNX files,
captures, run records).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["OutputError", "check_output", "sha256_file"]


class OutputError(ValueError):
    """An output path cannot be written, or writing it would replace an existing file."""


def check_output(path: str | Path, *, folder: bool = False, force: bool = False) -> Path:
    """Raises `OutputError` unless ``path`` can be written; returns it as a `Path`.

    ``folder``: the path is a folder that is created or written into (a dataset, a run
    directory); otherwise it is a file, and an existing file is only replaced with ``force``
    (the command's ``--force``).
    """
    path = Path(path)
    if path.is_dir() and not folder:
        raise OutputError(f"{path}: is a folder; give a file name")
    if path.exists() and not path.is_dir() and folder:
        raise OutputError(f"{path}: exists and is not a folder")
    if path.is_file() and not force:
        raise OutputError(f"{path}: exists already; pass --force to overwrite it")
    nearest = path if path.is_dir() else path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise OutputError(f"{path}: cannot be created, {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot be written, {nearest} is not writable")
    return path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
