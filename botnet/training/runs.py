"""What every training run shares about its folder and its end: one writer, no leftovers, a clean stop.

- :func:`open_run_dir`: a new run never writes into a folder that holds a
  run; a resumed one removes the temporary files a killed writer left; and
  a lock keeps two processes from writing into one folder.
- :func:`interrupted`: what a loop raises once ``botnet.interrupts.GracefulStop``
  has asked it to stop and it has saved a resumable ``last.pt``.
- :func:`failures_end_the_run`: an expected failure once training has started
  (disk full, out of memory, a data file that changed) becomes
  :class:`RunFailed`, whose message names the cause and how to resume.
- :func:`rng_state`, :func:`restore_rng_state`: a resumed run continues its
  interrupted epoch with the random state it stopped with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..checkpoints import TrainState, load_training_state
from ..errors import ConfigError, RunFailed, RunInterrupted, TrainingDiverged, describe
from ..files import RunLock, remove_stale_temporaries
from .checkpoint import check_new_run_dir
from .settings import label

__all__ = [
    "restarted_run",
    "run_stamp",
    "diverged",
    "extend_epochs",
    "failures_end_the_run",
    "interrupted",
    "open_run_dir",
    "restore_rng_state",
    "rng_state",
    "same_settings",
    "settings_and_state",
]


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
        else:
            check_new_run_dir(run_dir)  # again: another process may have started a run here meanwhile
        yield


def run_stamp() -> str:
    """The default run folder's suffix: the time, or under torchrun its run id (the same on every rank and
    after torchrun restarts the group, so a restarted worker finds the folder it was writing)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return f"torchrun-{run_id[:12]}" if run_id else time.strftime("%Y%m%d-%H%M%S")


def restarted_run(run_dir: str) -> str | None:
    """After ``torchrun --max-restarts`` restarted the group (a worker died): the last.pt this run wrote
    into ``run_dir``, to continue from; None for a first start, or before the first checkpoint."""
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) < 1:
        return None
    last_pt = os.path.join(run_dir, "last.pt")
    return last_pt if os.path.isfile(last_pt) else None


def settings_and_state(
    resolve: Callable[[], Any], config_from_state: Callable[[TrainState, str], Any], resume: str | None, epochs: int | None
) -> tuple[Any, TrainState | None]:
    """A run's settings and the last.pt it continues (None: a new run): ``--resume``'s, its epochs
    extended to ``epochs``; or, after torchrun restarted the group, the run folder's own."""
    if resume:
        state = load_training_state(resume)
        return extend_epochs(config_from_state(state, resume), state, epochs, resume), state
    config = resolve()
    restart = restarted_run(config.output_dir)
    if restart is None:
        return config, None
    state = load_training_state(restart)
    saved = config_from_state(state, restart)
    same_settings(saved, config, restart)
    return saved, state


def same_settings(saved, config, path: str) -> None:
    """A restarted worker continues ``path`` only if it was started with the settings saved there (those the
    run's plan fills in, the precision when unset and the epochs under a time budget, as the plan left them)."""
    planned = {"output_dir"} | ({"amp"} if config.amp is None else set()) | ({"epochs", "max_steps"} if config.time_budget else set())
    differ = [
        f.name for f in dataclasses.fields(config)
        if f.name not in planned and getattr(saved, f.name) != getattr(config, f.name)
    ]  # fmt: skip
    if differ:
        raise ConfigError(
            f"{path} holds a run with other settings ({', '.join(label(n) for n in differ)}); "
            f"choose another --output-dir"
        )


def extend_epochs(config, state: TrainState, epochs: int | None, path: str):
    """``config`` with ``epochs`` (``--resume ... --epochs N``): more epochs than the run had, none fewer
    than it has finished (all of them whole: a last epoch its steps cut short ends there). The schedule is
    planned again for the new total from the step reached (the cosine's rate rises again, to where the longer
    schedule would be at this step)."""
    if epochs is None or (epochs == config.epochs and config.max_steps is None):
        return config
    if not isinstance(epochs, int) or epochs < max(1, state.epoch):
        raise ConfigError(f"{label('epochs')} {epochs}: {path} has finished {state.epoch} epochs; give at least that many")
    trained = (state.scheduler or {}).get("last_epoch", 0)  # the steps taken (LambdaLR counts steps)
    if config.max_steps is not None and trained >= config.max_steps:  # its steps count only whole epochs
        raise ConfigError(
            f"{path} ended after {config.max_steps} steps, within its last epoch, so it cannot be extended; "
            f"start a new run with {label('epochs')} {epochs}"
        )
    return dataclasses.replace(config, epochs=epochs, max_steps=None)


def diverged(what: str, epoch: int, step: int, run_dir: str) -> TrainingDiverged:
    """The error for a loss that became NaN or infinite (``what``: which, and its value) at ``step``."""
    last_pt = os.path.join(run_dir, "last.pt")
    kept = (
        f"The last good checkpoint is kept in {last_pt}; "
        if os.path.isfile(last_pt)
        else "No checkpoint was written yet; "
    )
    return TrainingDiverged(
        f"{what} at epoch {epoch + 1}, step {step + 1}; training stopped. {kept}lower --lr, or drop --amp, and start again"
    )


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


def rng_state() -> dict[str, torch.Tensor]:
    """This process's global random generators' states (CPU, and CUDA when in use), for a mid-epoch stop."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: TrainState, rank: int) -> None:
    """Put back the random state rank ``rank`` saved at a mid-epoch stop (``state.rng[rank]``, checked by
    ``load_training_state``)."""
    saved = state.rng[rank]
    torch.set_rng_state(saved["cpu"])
    if "cuda" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved["cuda"])
