"""A new run's plan, from training steps timed on this machine before it starts: the precision (float32 or
bfloat16 autocast, whichever is faster here, where unset) and, with ``--time-budget``, how many epochs fit;
and, at each epoch's end, that number timed again from the epochs done (:func:`replan_epochs`)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError
from ..torch_private import cpu_has_fast_bfloat16
from .distributed import DistEnv, broadcast_object
from .loaders import TrainLoader
from .settings import RunSettings, label

if TYPE_CHECKING:
    from .engine import Task

__all__ = [
    "Deadline",
    "EpochPlan",
    "StepTimes",
    "amp_dtype",
    "fast_bfloat16",
    "plan_epochs",
    "plan_run",
    "replan_epochs",
    "time_steps",
]


def amp_dtype(enabled: bool | None, device: torch.device) -> torch.dtype | None:
    """bfloat16 autocast, or float16 on GPUs without bfloat16; None when AMP is off (or not yet chosen)."""
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass(frozen=True)
class EpochPlan:
    """A new run's plan, from steps timed before it: the precision, the epochs (with ``--time-budget``,
    as many as fit) and how long they take on this machine."""

    epochs: int
    step_seconds: float  # median of the timed steps in the chosen precision, data loading included
    epoch_seconds: float  # estimated: the steps plus the evaluation
    budget_seconds: float | None  # --time-budget, None without one
    amp: bool  # bfloat16 autocast chosen (or given)
    load_seconds: float  # of a step, the wait for its batch
    precisions: dict[str, float]  # the median step of each precision timed, data loading included

    @property
    def run_seconds(self) -> float:
        return self.epochs * self.epoch_seconds


@dataclass(frozen=True)
class StepTimes:
    """What :func:`time_steps` measured: the median wait for a batch, and the median forward and backward
    of each precision timed on the same batches."""

    load: float
    compute: tuple[float, ...]  # one per precision, in the order asked
    images: int  # in a step


# Steps timed before a run (after TIMED_WARMUP untimed ones), the share of a time budget the epochs
# are planned into (the rest: start-up, the final evaluation and writing, machine noise), and how much
# faster bfloat16 must be to be chosen when --amp is not given.
TIMED_STEPS = 6
TIMED_WARMUP = 2
BUDGET_SHARE = 0.9
AMP_GAIN = 1.2
# Re-planned at epoch ends, the epochs aim to end at this share of the budget (the rest: writing the results),
# and a plan is kept while it ends no later than that and leaves no more than an epoch and this share unused.
END_SHARE = 0.97
REPLAN_SLACK = 0.03


@dataclass(frozen=True)
class Deadline:
    """A budgeted run's limits, for re-planning its epochs at each epoch's end."""

    ends_at: float  # time.perf_counter() at which the last epoch should end
    budget_seconds: float
    most: int | None  # the epochs given with the budget: never more


def replan_epochs(planned: int, done: int, seconds_left: float, epoch_seconds: Sequence[float], deadline: Deadline) -> int:
    """The run's epochs timed again after epoch ``done`` (of ``planned``), with ``seconds_left`` until the
    deadline: as many more as fit at the mean pace of the epochs this process has trained, evaluations
    included (the first epoch too: leaving it out as warm-up would count an evaluation every few epochs
    as more frequent than it is), at least one, at most ``deadline.most``. The plan is kept while it ends
    in time and leaves less than an epoch (and REPLAN_SLACK of the budget) unused, so noise does not move
    it back and forth."""
    pace = statistics.fmean(epoch_seconds)
    spare = seconds_left - (planned - done) * pace
    if 0 <= spare < pace + REPLAN_SLACK * deadline.budget_seconds:
        return planned
    epochs = done + max(1, int(seconds_left // pace))
    return min(epochs, deadline.most) if deadline.most is not None else epochs


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` may run bfloat16 faster than float32: a GPU with bfloat16, or a CPU with AMX or
    AVX512-BF16 instructions. Elsewhere bfloat16 is emulated and never timed."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bfloat16()


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def time_steps(task: Task, model: nn.Module, data: TrainLoader, env: DistEnv, *, seed: int,
               amps: Sequence[torch.dtype | None] = (None,)) -> StepTimes:  # fmt: skip
    """Training steps timed on this machine: the wait for each batch, then on that same batch a forward and
    backward in each precision of ``amps`` (None: float32), interleaved so that a busy machine slows them
    alike. No optimizer step; the model's buffers are put back. The first ``TIMED_WARMUP`` steps are left
    out, unless an epoch has no others (then its few steps are all there is to go by)."""
    model = model.to(env.device).train()
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    data.start_epoch(seed, 0, 0)
    loads: list[float] = []
    computes: list[list[float]] = [[] for _ in amps]
    images_per_step = 1
    last = _sync(env.device)
    for batch in data.loader:
        loads.append(time.perf_counter() - last)
        for times, amp in zip(computes, amps):
            start = time.perf_counter()
            with torch.autocast(env.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                loss, _, images_per_step = task.loss(model, batch, env.device)
            loss.float().backward()
            model.zero_grad(set_to_none=True)
            times.append(_sync(env.device) - start)
        last = time.perf_counter()
        if len(loads) == TIMED_WARMUP + TIMED_STEPS:
            break
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    first = TIMED_WARMUP if len(loads) > TIMED_WARMUP else 0
    return StepTimes(
        statistics.median(loads[first:]), tuple(statistics.median(t[first:]) for t in computes), images_per_step
    )


def plan_epochs(
    task: Task, model: nn.Module, data: TrainLoader, env: DistEnv, eval_images: int, *, seed: int,
    amp: bool | None, epochs: int | None, budget_seconds: float | None = None,
) -> EpochPlan:  # fmt: skip
    """The plan of a new run on this machine: times a few training steps (:func:`time_steps`); with ``amp``
    None, in float32 and, where the device has fast bfloat16 (:func:`fast_bfloat16`), in bfloat16 too,
    choosing bfloat16 if it is at least ``AMP_GAIN`` times faster. An epoch is its steps plus the evaluation
    (``eval_images`` at about a third of a training image's cost). With ``budget_seconds``, the epochs are
    as many as fit (at most ``epochs``, where given), and the schedule is then built for them, so the
    cosine ends on time; without, ``epochs``."""
    choices = [amp] if amp is not None else [False, True] if fast_bfloat16(env.device) else [False]
    times = time_steps(task, model, data, env, seed=seed, amps=[amp_dtype(c, env.device) for c in choices])
    steps = [times.load + compute for compute in times.compute]
    best = 1 if len(choices) == 2 and steps[0] >= AMP_GAIN * steps[1] else 0
    step, chosen = broadcast_object((steps[best], choices[best]), env)  # every process follows rank 0's plan
    epoch = data.steps * step + eval_images / max(times.images, 1) * step / 3
    if budget_seconds is not None:
        fit = int(budget_seconds * BUDGET_SHARE // epoch)
        epochs = min(fit, epochs) if epochs is not None else fit
        if epochs < 1:
            raise ConfigError(
                f"one epoch takes about {epoch:.0f} s here, more than the {label('time_budget')} of "
                f"{budget_seconds / 60:.1f} min; give more time, a smaller input size or model"
            )
    assert epochs is not None
    precisions = {("bfloat16" if c else "float32"): round(s, 6) for c, s in zip(choices, steps)}
    return EpochPlan(epochs, step, epoch, budget_seconds, bool(chosen), times.load, precisions)


def plan_run(config: RunSettings, task: Task, model: nn.Module, data: TrainLoader, env: DistEnv,
             eval_images: int, log, most: int | None = None) -> tuple[Any, EpochPlan]:  # fmt: skip
    """A new run's settings with their plan (:func:`plan_epochs`): the precision when ``amp`` is unset, and
    with a ``time_budget`` the epochs (at most ``most``, the epochs given with it). The plan is logged
    (how long the run will take here) and kept in the summary."""
    budget = config.time_budget * 60 if config.time_budget is not None else None
    plan = plan_epochs(
        task, model, data, env, eval_images, seed=config.seed, amp=config.amp,
        epochs=most if budget is not None else config.epochs, budget_seconds=budget,
    )  # fmt: skip
    if task.head_epochs and task.head_epochs >= plan.epochs:
        raise ConfigError(
            f"{label('time_budget')} leaves {plan.epochs} epochs, not more than {label('head_epochs')} {task.head_epochs}"
        )
    if config.amp is None:
        timed = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in plan.precisions.items())
        why = f"a step takes {timed}" if len(plan.precisions) > 1 else "this device has no fast bfloat16"
        log.info(f"precision: {'bfloat16 autocast' if plan.amp else 'float32'} ({why})")
    if budget is not None:
        fit = f"the {most} asked for" if plan.epochs == most else "as many as fit"
        log.info(f"time budget {config.time_budget:g} min: {plan.epochs} epochs ({fit})")
    log.info(
        f"about {plan.run_seconds / 60:.1f} min on this machine ({plan.epochs} epochs of {plan.epoch_seconds:.1f} s; "
        f"a step {plan.step_seconds:.3f} s, {plan.load_seconds / plan.step_seconds:.0%} of it waiting for data)"
    )
    return dataclasses.replace(config, epochs=plan.epochs, amp=plan.amp), plan
