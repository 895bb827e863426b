"""Crash-safe writes: the one atomic writer of skillcell, for files and for folders.

A file is written to a temporary sibling (same folder, so the rename cannot cross file systems),
flushed and fsynced, renamed over its final name (`os.replace`, atomic on POSIX and Windows), and
the folder is fsynced so that the rename itself reaches the disk. A reader sees the old file or the
complete new one; a process killed at any instant leaves at most a hidden temporary sibling
(`is_temporary` recognizes one).

- `atomic_write_bytes` / `atomic_write_text`: data already in memory (YAML, HTML, a model zip).
- `AtomicFile`: a writer that streams to a path of its own (ffmpeg, ``np.savez``, ONNX): it writes
  to `AtomicFile.tmp`, then `commit` or `discard`; as a context manager it commits on success.
- `atomic_dir`: a folder built in a staging sibling and renamed into place complete (dataset
  exports); `replace_dir` is that final swap for a folder built elsewhere on the same file system.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["AtomicFile", "atomic_dir", "atomic_open", "atomic_write_bytes", "atomic_write_text", "fsync_dir",
           "is_temporary", "replace_dir"]

_TEMPORARY = re.compile(r"^\..+\.\d+-[0-9a-f]{8}(\.tmp|\.staging|\.replaced)")


def fsync_dir(folder: str | Path) -> None:
    """Flushes ``folder``'s entries (a rename into it) to disk; directories cannot be opened on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sibling(path: Path, kind: str, suffix: str = "") -> Path:
    # pid and a random token: two processes (or threads) writing the same target never share a temporary.
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{kind}{suffix}")


def is_temporary(name: str | Path) -> bool:
    """Whether ``name`` is one of this module's temporary siblings (left behind by an interrupted write)."""
    return bool(_TEMPORARY.match(Path(name).name))


class AtomicFile:
    """``path`` written through the temporary sibling `tmp`, renamed into place by `commit`.

    ``suffix`` ends the temporary name, for writers that pick a format from the extension (ffmpeg:
    ``.mp4``). On an exception inside ``with AtomicFile(path) as f:`` the temporary is deleted and
    ``path`` is left as it was.
    """

    def __init__(self, path: str | Path, *, suffix: str = ""):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _sibling(self.path, ".tmp", suffix)

    def commit(self) -> Path:
        """fsyncs the temporary, renames it over `path` and fsyncs the folder; returns `path`."""
        try:
            _fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that becomes ``path`` only when the ``with`` block ends without an exception."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not a 'w' mode")
    with AtomicFile(path) as target, open(target.tmp, mode, **kwargs) as f:
        yield f
        f.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (module docstring); returns ``path`` as a `Path`."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """`atomic_write_bytes` of ``text`` encoded (UTF-8 by default; newlines as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync_file(Path(root) / name)
        fsync_dir(root)


def replace_dir(src: str | Path, dst: str | Path) -> Path:
    """Moves the complete folder ``src`` to ``dst`` (same file system), replacing a folder there.

    Every file under ``src`` is fsynced first. An old ``dst`` is moved aside and deleted only once
    the new one is in place; if the rename fails, the old one is put back.
    """
    src, dst = Path(src), Path(dst)
    _fsync_tree(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    aside = None
    if dst.exists():
        aside = _sibling(dst, ".replaced")
        os.replace(dst, aside)
    try:
        os.replace(src, dst)
    except BaseException:
        if aside is not None:
            os.replace(aside, dst)
        raise
    fsync_dir(dst.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return dst


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A staging folder next to ``path`` that `replace_dir` moves into place when the ``with`` block ends
    without an exception (replacing a folder already at ``path``); on an exception it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(path, ".staging")
    staging.mkdir()
    try:
        yield staging
        replace_dir(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
