"""Writing files so that nothing is lost: atomic replacement, and one writer per run folder.

- :func:`atomic_write` writes a temporary file beside the target, fsyncs it,
  moves it into place with ``os.replace`` and fsyncs the folder, so a crash or
  a full disk at any moment leaves either the old file or the new one, never
  a mix, and no temporary file behind (a killed process's leftovers are
  removed by :func:`remove_stale_temporaries` when the run resumes). The file
  gets the permissions a plain ``open`` would give it (0666 minus the umask).
- :class:`RunLock` keeps a second process from writing into a run folder
  that another one is using.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import IO

from .errors import ConfigError

__all__ = ["RunLock", "TEMP_SUFFIX", "atomic_write", "remove_stale_temporaries"]

TEMP_SUFFIX = ".botnet-tmp"


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename itself has happened
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` atomically: temporary file, fsync, ``os.replace``, folder fsync."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fchmod(file.fileno(), 0o666 & ~_umask())
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, OSError) and error.errno is not None and error.filename is None:
            error.filename = path  # so the message names the file, not a temporary one or none
        raise
    _fsync_folder(folder)


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete temporary files a killed writer left in ``folder``; returns their names."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed.append(entry.name)
    return removed


class RunLock:
    """An exclusive lock on a run folder (``RUN/.lock``) for as long as a run writes there.

    A second run into the same folder is refused with a message instead of
    interleaving its files with the first one's. The lock is an ``flock`` on an
    open file, so the operating system releases it when the process dies."""

    NAME = ".lock"

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, self.NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run without the guard
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"{self.folder} is being written by a run in process {holder}; wait for it to end, "
                f"or choose another --output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
