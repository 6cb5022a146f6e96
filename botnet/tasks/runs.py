"""What every training run shares about its folder and its end: one writer, no leftovers, a clean stop.

- :func:`open_run_dir`: a new run never writes into a folder that holds a
  run; a resumed one removes the temporary files a killed writer left; and
  a lock keeps two processes from writing into one folder.
- :class:`GracefulStop`: the first Ctrl-C (or SIGTERM, as cluster schedulers
  send before they kill a job) asks the loop to stop at the next step
  boundary, where it saves a resumable ``last.pt``; a second one stops at once.
- :func:`failures_end_the_run`: an expected failure once training has started
  (disk full, out of memory, a data file that changed) becomes
  :class:`RunFailed`, whose message names the cause and how to resume.
- :class:`SkipSampler`, :func:`rng_state`: a resumed run starts its
  interrupted epoch at the batch where it stopped, with the same order of
  samples and the same random state.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

from ..errors import CheckpointError, RunFailed, RunInterrupted, TrainingDiverged, describe, first_line
from ..files import RunLock, remove_stale_temporaries
from .checkpoint import check_new_run_dir

__all__ = [
    "GracefulStop",
    "SkipSampler",
    "failures_end_the_run",
    "ignore_stop_signals",
    "interrupted",
    "open_run_dir",
    "restore_rng_state",
    "rng_state",
]

_STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s)


@contextlib.contextmanager
def open_run_dir(run_dir: str, *, resuming: bool, writer: bool) -> Iterator[None]:
    """Hold ``run_dir`` for a run's lifetime (only the writing process, rank 0, takes the lock)."""
    if not resuming:
        check_new_run_dir(run_dir)
    if not writer:
        yield
        return
    with RunLock(run_dir):
        if resuming:
            remove_stale_temporaries(run_dir)
        yield


class GracefulStop:
    """Within ``with GracefulStop() as stop:``, SIGINT and SIGTERM set ``stop.requested`` instead of
    interrupting; a second signal restores the default behaviour and re-raises it. Outside the main thread
    (where signal handlers cannot be set) it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:  # asked twice: stop now
            self._restore()
            signal.raise_signal(signum)
            return
        self.requested = True

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers leave Ctrl-C and SIGTERM to the main process, which stops
    cleanly and shuts them down (a worker that died of the signal would make the main process fail)."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def interrupted(last_pt: str, command: str, where: str) -> RunInterrupted:
    """The exception a loop raises after saving ``last_pt`` because a stop was requested."""
    return RunInterrupted(f"interrupted {where}; {last_pt} is saved: continue with `{command} --resume {last_pt}`")


@contextlib.contextmanager
def failures_end_the_run(last_pt: str, command: str) -> Iterator[None]:
    """Inside, an expected failure (see ``botnet.errors.describe``) becomes RunFailed naming the checkpoint to
    resume from; unexpected errors (bugs) and interrupts pass through unchanged."""
    try:
        yield
    except (RunFailed, TrainingDiverged):
        raise
    except Exception as error:
        message = describe(error)
        if message is None:
            raise
        if os.path.isfile(last_pt):
            hint = (
                f"{last_pt} holds the last saved state: fix the cause and continue with `{command} --resume {last_pt}`"
            )
        else:
            hint = "nothing was saved yet: fix the cause and start again"
        raise RunFailed(f"the run stopped: {message}; {hint}") from error


class SkipSampler(Sampler[int]):
    """Another sampler's indices, the first ``skip`` of them left out (for one resumed epoch)."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        assert isinstance(self.sampler, Sized)
        return max(0, len(self.sampler) - self.skip)


def rng_state() -> dict[str, torch.Tensor]:
    """The global random generators' states (CPU, and CUDA when in use), saved with a mid-epoch stop."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict, path: str) -> None:
    """Put back the random state a mid-epoch stop saved in ``state["rng"]`` (read from ``path``)."""
    try:
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path}: its saved random state is damaged ({first_line(error)})") from error
