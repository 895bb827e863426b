"""Content hashes and the dataset lock (crash-safe writes are `skillcell.atomic`'s)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["dataset_lock", "sha256_bytes"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
