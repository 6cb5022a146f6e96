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
import re

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "BotnetError",
    "CheckpointError",
    "ExportError",
    "ConfigError",
    "DatasetError",
    "MissingFileError",
    "RunFailed",
    "RunInterrupted",
    "TrainingDiverged",
    "describe",
    "first_line",
    "one_line",
    "from_worker",
    "is_out_of_memory",
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


class ExportError(BotnetError, RuntimeError):
    """An exported graph that would not compute what the model computes; nothing was written."""

    exit_code = EXIT_FAILED


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

    A ``KeyboardInterrupt`` (not an ``Exception``), so generic handlers do not swallow it; like every
    interrupt, the command line exits with EXIT_INTERRUPTED."""


def one_line(text: str) -> str:
    """``text`` with control characters (a newline in a file name or flag value) escaped, so it prints as one
    line."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: repr(m.group())[1:-1], text)


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, or its type name when the message is empty."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def _worker_error(message: str) -> tuple[str, str]:
    """(type name, message) of an error a DataLoader worker raised: PyTorch re-raises it in the main process as
    "Caught X in DataLoader worker process N.\nOriginal Traceback ...", whose last line is "module.X: message"."""
    last = [line for line in message.splitlines() if line.strip()][-1].strip()
    head, sep, tail = last.partition(": ")
    if sep and " " not in head:
        return head.rsplit(".", 1)[-1], tail
    return last.rstrip(":"), ""


def from_worker(error: BaseException) -> BaseException:
    """An error a DataLoader worker raised, rebuilt as it was raised there (an OSError with its errno again);
    any other error as it is."""
    message = str(error)
    if "Original Traceback" not in message:
        return error
    name, inner = _worker_error(message)
    if isinstance(error, OSError):
        match = re.match(r"\[Errno (\d+)\] ([^:]+)(?:: '(.*)')?$", inner)
        if match:
            return OSError(int(match.group(1)), match.group(2), match.group(3))
    rebuilt = type(error).__new__(type(error))
    rebuilt.args = (inner or name,)
    return rebuilt


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text
    )


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _describe_os_error(error: OSError, during_run: bool) -> str:
    where = f" {error.filename}" if error.filename else ""
    reason = error.strerror or first_line(error)
    if error.errno in _DISK_FULL:
        return f"no space left to write{where} ({reason}): free some space" + (
            "" if during_run else " or choose another --output-dir"
        )
    if isinstance(error, PermissionError):
        return f"no permission to use{where} ({reason}): check its permissions or choose another path"
    if isinstance(error, FileNotFoundError):
        return f"no such file or folder{where}"
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        return f"cannot use{where}: {reason} (a file stands where a folder is needed); choose another path"
    return f"cannot use{where}: {reason}"


def describe(error: BaseException, *, during_run: bool = False) -> str | None:
    """One line for an expected failure (ours, or of the environment), or None for anything else (a bug).
    ``during_run``: the advice suits a run that has started (and will be resumed with its own settings)."""
    error = from_worker(error)
    text = str(error)
    if isinstance(error, BotnetError):
        return one_line(str(error).strip()) or type(error).__name__
    if isinstance(error, OSError) and error.errno is not None:  # raised by the operating system
        return _describe_os_error(error, during_run)
    if is_out_of_memory(error):
        what = "start a new run with" if during_run else "use"
        return (
            f"out of memory ({first_line(error)[:160]}): {what} a smaller --batch-size or image size, or --amp on a GPU"
        )
    if isinstance(error, RuntimeError) and "DataLoader worker" in text and "killed by signal" in text:
        return (
            f"a data-loading worker was killed ({first_line(error)[:120]}), most likely for lack of memory: "
            f"use fewer --workers or a smaller --batch-size"
        )
    if isinstance(error, RuntimeError) and "torch_" in text and "No space left on device" in text:
        return (
            "shared memory (/dev/shm) is full, which data-loading workers pass batches through: use --workers 0, "
            "or give the machine or container more shared memory (docker run --shm-size)"
        )
    return None
