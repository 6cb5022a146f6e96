"""Writing files so that nothing is lost: atomic replacement, and one writer per run folder.

- :func:`atomic_write` writes a temporary file beside the target, fsyncs it,
  moves it into place with ``os.replace`` and fsyncs the folder, so a crash or
  a full disk at any moment leaves either the old file or the new one, never
  a mix, and no temporary file behind (a killed process's leftovers are
  removed by :func:`remove_stale_temporaries` when the run resumes). A new
  file gets the permissions a plain ``open`` would give it (0666 minus the
  umask); a replaced one keeps its own.
- :class:`RunLock` keeps a second process from writing into a run folder
  that another one is using.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from typing import IO, Any

from .errors import ConfigError

__all__ = ["TEMP_SUFFIX", "RunLock", "atomic_write", "release_inherited_locks", "remove_stale_temporaries"]

TEMP_SUFFIX = ".botnet-tmp"


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new file beside ``name``, created 0666 so the umask applies as it does to ``open`` (mkstemp's 0600
    would not)."""
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


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


class _RecordingFile:
    """A file whose first OSError from ``write`` is kept: writers such as ``torch.save`` turn a full disk into
    their own error type, and the OSError is what says what happened."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` atomically: temporary file, fsync, ``os.replace``, folder fsync."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        keep_mode: int | None = os.stat(path).st_mode & 0o7777  # a replaced file keeps its permissions
    except OSError:
        keep_mode = None
    fd, tmp = _create_temporary(folder, os.path.basename(path))
    recording = None
    try:
        with os.fdopen(fd, "wb") as file:
            recording = _RecordingFile(file)
            write(recording)  # type: ignore[arg-type]
            file.flush()
            if keep_mode is not None:
                with contextlib.suppress(OSError):  # some mounts refuse chmod; the content matters more
                    os.fchmod(file.fileno(), keep_mode)
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        cause = recording.error if recording is not None and recording.error is not None else error
        if isinstance(cause, OSError) and cause.errno is not None and cause.filename in (None, tmp):
            cause.filename = path  # the message names the file, not a temporary one or none
        if cause is not error:
            raise cause from error
        raise
    _fsync_folder(folder)


def remove_stale_temporaries(folder: str, older_than: float = 0.0) -> list[str]:
    """Delete temporary files a killed writer left in ``folder`` (only those older than ``older_than``
    seconds, where other processes may be writing there now); returns their names."""
    removed = []
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime >= older_than:
                        os.remove(entry.path)
                        removed.append(entry.name)
    return removed


class RunLock:
    """An exclusive lock on a run folder (``RUN/.lock``) for as long as a run writes there.

    A second run into the same folder is refused with a message instead of
    interleaving its files with the first one's. The lock is an ``flock`` on an
    open file, so the operating system releases it when the process dies
    (forked helpers drop their copy: ``release_inherited_locks``)."""

    NAME = ".lock"
    _held: set[int] = set()  # descriptors of the locks this process holds

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, self.NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock on this platform: run without the guard
            pass
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"{self.folder} is being written by a run in process {holder}; wait for it to end, "
                f"or choose another --output-dir"
            ) from None
        except OSError as error:  # e.g. no locks on a network file system
            os.close(fd)
            error.filename = error.filename or path
            raise
        with contextlib.suppress(OSError):  # the holder's pid, for the message above
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        RunLock._held.add(fd)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            RunLock._held.discard(self._fd)
            os.close(self._fd)
            self._fd = None


def release_inherited_locks() -> None:
    """In a forked helper process: close the copies of the parent's run locks, so that the lock is released
    as soon as the parent ends (the parent's own descriptor keeps it held meanwhile)."""
    for fd in list(RunLock._held):
        with contextlib.suppress(OSError):
            os.close(fd)
    RunLock._held.clear()
