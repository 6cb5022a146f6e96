"""Atomic writes, the run-folder lock and leftovers of killed writers."""

import os
import stat

import pytest

from botnet import files
from botnet.errors import ConfigError


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
