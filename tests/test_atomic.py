"""`skillcell.atomic`: a write either completes or leaves the old file/folder as it was, and is fsynced."""

import os

import numpy as np
import pytest

from skillcell.atomic import AtomicFile, atomic_dir, atomic_open, atomic_write_bytes, atomic_write_text, is_temporary


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "run.yaml"
    atomic_write_text(path, "a: 1\n")
    atomic_write_bytes(path, b"a: 2\n")
    assert path.read_bytes() == b"a: 2\n"
    assert [p.name for p in path.parent.iterdir()] == ["run.yaml"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.zip"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), atomic_open(path) as f:
        f.write(b"half")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_the_file_and_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = atomic_write_bytes(tmp_path / "x.bin", b"1")
    assert any(is_temporary(p) for p in synced)  # the data, before the rename
    assert str(tmp_path) in synced  # the rename
    assert path.read_bytes() == b"1"


def test_a_streaming_writer_gets_a_path_with_its_extension(tmp_path):
    target = AtomicFile(tmp_path / "arrays.npz", suffix=".npz")
    np.savez(target.tmp, a=np.arange(3))  # numpy appends .npz unless the name has it
    assert is_temporary(target.tmp) and not (tmp_path / "arrays.npz").exists()
    target.commit()
    assert np.load(tmp_path / "arrays.npz")["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    final = tmp_path / "dataset"
    with atomic_dir(final) as stage:
        (stage / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new"
    with pytest.raises(RuntimeError), atomic_dir(final) as stage:
        (stage / "a.txt").write_text("broken")
        raise RuntimeError("export failed")
    assert (final / "a.txt").read_text() == "new"
    with atomic_dir(final) as stage:
        (stage / "b.txt").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]
