"""Ctrl-C and SIGTERM: a request to stop at the next safe point, not a crash.

Within ``with GracefulStop() as stop:`` the first SIGINT or SIGTERM (cluster
schedulers send SIGTERM before they stop a job) only sets ``stop.requested``;
the training loop finishes the step under way, saves a resumable checkpoint
and stops. Repeats within a second are the same request: a terminal's Ctrl-C
reaches every process of a torchrun job, and torchrun forwards it once more.
A Ctrl-C a second or more after the first stops at once; SIGTERM never does
(schedulers follow it with SIGKILL when they will not wait).

Helper processes (image checks, data loading) ignore both signals: their
parent stops them once it has stopped cleanly (see ``init_helper_process``).
"""

from __future__ import annotations

import signal
import threading
import time

__all__ = ["GracefulStop", "STOP_SIGNALS", "init_helper_process"]

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s)
_SAME_REQUEST_SECONDS = 1.0


class GracefulStop:
    """Turns SIGINT and SIGTERM into ``requested = True`` while active (main thread only; elsewhere, where
    handlers cannot be set, it does nothing). The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._first: float | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first, self.requested = now, True
        elif signum == signal.SIGINT and now - self._first >= _SAME_REQUEST_SECONDS:  # Ctrl-C again: stop now
            self._restore()
            signal.raise_signal(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._restore()


def init_helper_process(*_: object) -> None:
    """For forked helper processes (a DataLoader's ``worker_init_fn``, a pool's ``initializer``): leave SIGINT
    and SIGTERM to the main process, which stops cleanly and then shuts them down (a helper that died of the
    signal would make the main process fail, and each would print a traceback); and let go of the run-folder
    lock inherited from it, so the lock ends with the main process."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    from .files import release_inherited_locks

    release_inherited_locks()
