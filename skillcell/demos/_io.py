"""Crash-safe file writes and a dataset lock.

Every file a dataset holds is written to a temporary file in the same folder, flushed to disk and
renamed over its final name (`os.replace`, atomic on POSIX and Windows), so a reader sees either
the old file or the complete new one, and a process killed at any instant leaves at most a
``.tmp`` file behind, never a damaged episode or manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["TMP_SUFFIX", "atomic_write", "dataset_lock", "sha256_bytes", "sha256_file"]

TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    # The rename itself must reach the disk too; directories cannot be opened on Windows.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Writes ``path`` through ``write(file)`` into a temporary sibling, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def dataset_lock(folder: str | Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``folder/.lock`` (POSIX ``flock``; a no-op elsewhere).

    Two recorders appending to one dataset would otherwise both read the manifest, pick the same
    next episode id and each overwrite the other's manifest.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: single-writer use only
        yield
        return
    with open(folder / ".lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
