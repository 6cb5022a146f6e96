"""Atomic writes, the run-folder lock and leftovers of killed writers."""

import errno
import os
import stat

import pytest
import torch

from botnet import files
from botnet.errors import ConfigError, describe


def test_atomic_write_gives_plain_permissions_and_syncs_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    old_mask = os.umask(0o027)
    try:
        files.atomic_write(str(tmp_path / "out.json"), lambda f: f.write(b"{}"))
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(os.stat(tmp_path / "out.json").st_mode) == 0o640  # 0666 minus the umask, as open() gives
    assert synced == [False, True], "the file, then the folder holding the rename"
    assert os.listdir(tmp_path) == ["out.json"]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = str(tmp_path / "summary.json")
    files.atomic_write(path, lambda f: f.write(b"old"))

    def fail_midway(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        files.atomic_write(path, fail_midway)
    with open(path, "rb") as f:
        assert f.read() == b"old"
    assert os.listdir(tmp_path) == ["summary.json"]


def test_run_lock_refuses_a_second_writer(tmp_path):
    with (
        files.RunLock(str(tmp_path / "run")),
        pytest.raises(ConfigError, match=rf"being written by a run in process {os.getpid()}"),
        files.RunLock(str(tmp_path / "run")),
    ):
        pass
    with files.RunLock(str(tmp_path / "run")):  # released on exit
        pass


def test_stale_temporaries_are_removed(tmp_path):
    stale = tmp_path / f".last.pt.x1y2{files.TEMP_SUFFIX}"
    stale.write_bytes(b"partial")
    (tmp_path / "last.pt").write_bytes(b"kept")
    (tmp_path / ".hidden-user-file").write_bytes(b"kept")
    assert files.remove_stale_temporaries(str(tmp_path)) == [stale.name]
    assert sorted(os.listdir(tmp_path)) == [".hidden-user-file", "last.pt"]


class _FillingDisk:
    """A file on a disk with ``room`` bytes left: writes beyond that fail as a full disk does."""

    def __init__(self, file, room: int) -> None:
        self._file, self.room = file, room

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()


def test_a_full_disk_under_torch_save_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save turns the OSError of a full disk into its own RuntimeError; atomic_write reports the cause."""
    path = str(tmp_path / "last.pt")
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _FillingDisk(real_fdopen(fd, mode), room=4096))
    with pytest.raises(OSError) as caught:
        files.atomic_write(path, lambda f: torch.save({"weights": torch.zeros(100_000)}, f))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == path
    assert describe(caught.value) == (
        f"no space left to write {path} (No space left on device): free some space or choose another --output-dir"
    )
    assert os.listdir(tmp_path) == []


def test_replaced_files_keep_their_permissions(tmp_path):
    path = tmp_path / "summary.json"
    files.atomic_write(str(path), lambda f: f.write(b"{}"))
    os.chmod(path, 0o600)
    files.atomic_write(str(path), lambda f: f.write(b"{ }"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_bytes() == b"{ }"
