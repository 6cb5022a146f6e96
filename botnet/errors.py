"""The project's error types and the one-line messages the command line prints.

Every problem the code raises on purpose (bad settings, bad data, bad files, a
diverged or failed run) is a :class:`BotnetError`. Its message says what is
wrong and what to do; ``exit_code`` is what ``botnet`` exits with. The
settings, data and checkpoint errors are also ``ValueError``s, so code that
catches ``ValueError`` keeps working.

:func:`describe` turns the expected failures of the environment (no space
left, no permission, a missing file, out of memory) into the same kind of
one-line message. Anything else is a bug, and the command line says so.
"""

from __future__ import annotations

import errno

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "BotnetError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "MissingFileError",
    "RunFailed",
    "RunInterrupted",
    "TrainingDiverged",
    "describe",
    "first_line",
]

EXIT_FAILED = 1  # a run that failed mid-way (its last.pt can be resumed), or an unexpected error
EXIT_BAD_INPUT = 2  # bad flags, data, files or environment: nothing was trained
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class BotnetError(Exception):
    """A problem with the user's settings, data, files or environment; the message says what to do."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BotnetError, ValueError):
    """A setting (a flag, a model option, a combination of them) that cannot be used."""


class DatasetError(BotnetError, ValueError):
    """The data on disk cannot be used as it is; the message says what to fix."""


class CheckpointError(BotnetError, ValueError):
    """A checkpoint or weights file that cannot be used; the message says why."""


class MissingFileError(BotnetError, FileNotFoundError):
    """A file or folder the user named does not exist (also a ``FileNotFoundError``)."""


class TrainingDiverged(BotnetError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = EXIT_FAILED


class RunFailed(BotnetError):
    """A run stopped mid-way for a reason outside the code (disk full, out of memory, a data file that changed).

    The message names the cause and the checkpoint to resume from; ``__cause__`` is the original error."""

    exit_code = EXIT_FAILED


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run at a step boundary; the message names the checkpoint that resumes it.

    A ``KeyboardInterrupt`` (not an ``Exception``), so generic handlers do not swallow it."""

    exit_code = EXIT_INTERRUPTED


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, or its type name when the message is empty."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def _worker_message(message: str) -> str:
    """A DataLoader worker's error arrives as "Caught X in DataLoader worker ...\\nOriginal Traceback ...";
    its last line is "module.Type: the message"."""
    last = [line for line in message.splitlines() if line.strip()][-1].strip()
    head, sep, tail = last.partition(": ")
    return tail if sep and " " not in head else last


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text
    )


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def describe(error: BaseException) -> str | None:
    """One line for an expected failure (ours, or of the environment), or None for anything else (a bug)."""
    if isinstance(error, BotnetError):
        message = str(error)
        return _worker_message(message) if "Original Traceback" in message else first_line(error)
    if isinstance(error, OSError) and error.errno is not None:  # raised by the operating system
        where = f" {error.filename}" if error.filename else ""
        reason = error.strerror or first_line(error)
        if error.errno in _DISK_FULL:
            return f"no space left to write{where} ({reason}): free some space or choose another --output-dir"
        if isinstance(error, PermissionError):
            return f"no permission to use{where} ({reason}): check its permissions or choose another path"
        if isinstance(error, FileNotFoundError):
            return f"no such file or folder{where}"
        if isinstance(error, (FileExistsError, NotADirectoryError)):
            return f"cannot use{where}: {reason} (a file stands where a folder is needed); choose another path"
        return f"cannot use{where}: {reason}"
    if _out_of_memory(error):
        return (
            f"out of memory ({first_line(error)[:160]}): lower --batch-size or the image size "
            f"(--img-size / --min-size), or use --amp on a GPU"
        )
    return None
