"""A new run's plan, from training steps timed on this machine before it starts: the precision (float32 or
bfloat16 autocast, whichever is faster here, where unset) and, with ``--time-budget``, how many steps fit
(the last epoch cut short where they end mid-epoch); and, as the run goes, those steps timed again from the
steps and evaluations done (:func:`replan_steps`)."""

from __future__ import annotations

import dataclasses
import math
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
    "evaluations",
    "fast_bfloat16",
    "plan_epochs",
    "plan_run",
    "planned_settings",
    "replan_steps",
    "run_steps",
    "shown_steps",
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
    """A new run's plan, from steps timed before it: the precision, the steps (with ``--time-budget``, as many
    as fit, the last epoch cut short where that is where they end) and how long they take on this machine."""

    epochs: int  # begun: the last one may end early
    steps: int  # optimizer steps in all
    step_seconds: float  # median of the timed steps in the chosen precision, data loading included
    eval_seconds: float  # estimated: one evaluation, its images at about a third of a training image's cost
    evaluations: int
    budget_seconds: float | None  # --time-budget, None without one
    seconds_left: float | None  # of the budget when planned: the steps fill PLAN_SHARE of them
    amp: bool  # bfloat16 autocast chosen (or given)
    load_seconds: float  # of a step, the wait for its batch
    precisions: dict[str, float]  # the median step of each precision timed, data loading included

    @property
    def run_seconds(self) -> float:
        return self.steps * self.step_seconds + self.evaluations * self.eval_seconds


@dataclass(frozen=True)
class StepTimes:
    """What :func:`time_steps` measured: the median wait for a batch, and the median forward and backward
    of each precision timed on the same batches."""

    load: float
    compute: tuple[float, ...]  # one per precision, in the order asked
    images: int  # in a step


# Steps timed before a run (after TIMED_WARMUP untimed ones); the share of the time left until the deadline
# that the first plan fills (its steps were timed without the optimizer's update, and a detector's steps slow
# down as it finds more objects); how much faster bfloat16 must be to be chosen when --amp is not given.
TIMED_STEPS = 6
TIMED_WARMUP = 2
PLAN_SHARE = 0.93
AMP_GAIN = 1.2
# A budgeted run's steps end at this share of the budget (the rest: writing the results). They are timed again
# REPLANS_PER_EPOCH times an epoch and at its end, and a plan is kept while it ends in time and leaves no more
# than this share of the budget unused, so noise does not move it back and forth.
END_SHARE = 0.97
REPLANS_PER_EPOCH = 4
REPLAN_SLACK = 0.02


@dataclass(frozen=True)
class Deadline:
    """A budgeted run's limits, for planning its steps again as it goes."""

    ends_at: float  # time.perf_counter() at which the last step (and evaluation) should end
    budget_seconds: float
    most_steps: int | None  # the epochs (or steps) given with the budget: never more
    eval_seconds: float  # the plan's estimate of an evaluation, until one has been timed


def evaluations(first: int, steps: int, steps_per_epoch: int, eval_every: int) -> int:
    """The evaluations from epoch ``first`` (0-based) to the end of a run of ``steps`` steps: after every
    ``eval_every``-th epoch and after the last, cut short or not."""
    epochs = math.ceil(steps / steps_per_epoch)
    return sum(1 for epoch in range(first, epochs) if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs)


def replan_steps(planned: int, done: int, seconds_left: float, step_seconds: float, evals_left: int,
                 eval_seconds: float, deadline: Deadline) -> int:  # fmt: skip
    """The run's steps in all, timed again after step ``done`` (of ``planned``) with ``seconds_left`` until the
    deadline: as many more as fit at ``step_seconds`` a step once the ``evals_left`` evaluations still due
    (``eval_seconds`` each) are counted, at least one, at most ``deadline.most_steps``. The plan is kept while
    it ends in time and leaves less than REPLAN_SLACK of the budget unused."""
    spare = seconds_left - (planned - done) * step_seconds - evals_left * eval_seconds
    if 0 <= spare < REPLAN_SLACK * deadline.budget_seconds or (planned == deadline.most_steps and spare >= 0):
        return planned
    steps = done + max(1, int((seconds_left - evals_left * eval_seconds) // step_seconds))
    return min(steps, deadline.most_steps) if deadline.most_steps is not None else steps


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
    amp: bool | None, most_steps: int | None, seconds_left: float | None = None, budget_seconds: float | None = None,
) -> EpochPlan:  # fmt: skip
    """The plan of a new run on this machine: times a few training steps (:func:`time_steps`); with ``amp``
    None, in float32 and, where the device has fast bfloat16 (:func:`fast_bfloat16`), in bfloat16 too,
    choosing bfloat16 if it is at least ``AMP_GAIN`` times faster. An evaluation costs its ``eval_images``
    at about a third of a training image each. With ``seconds_left`` (of a ``budget_seconds``), the
    steps are as many as fit in PLAN_SHARE of them, evaluations included (at most ``most_steps``, where
    given), and the schedule is then built for them, so the cosine ends on time; without, ``most_steps``."""
    choices = [amp] if amp is not None else [False, True] if fast_bfloat16(env.device) else [False]
    times = time_steps(task, model, data, env, seed=seed, amps=[amp_dtype(c, env.device) for c in choices])
    steps = [times.load + compute for compute in times.compute]
    best = 1 if len(choices) == 2 and steps[0] >= AMP_GAIN * steps[1] else 0
    # every process follows rank 0's plan (the processes started, and so reach this point, at different times)
    step, chosen, seconds_left = broadcast_object((steps[best], choices[best], seconds_left), env)
    evaluation = eval_images / max(times.images, 1) * step / 3
    if seconds_left is not None:
        per_epoch = data.steps * step + evaluation / task.eval_every
        total = int(seconds_left * PLAN_SHARE / per_epoch * data.steps)
        total = min(total, most_steps) if most_steps is not None else total
        if total < 1:
            raise ConfigError(
                f"one step and an evaluation take about {step + evaluation:.0f} s here, more than the "
                f"{label('time_budget')} of {budget_seconds / 60:.1f} min; give more time, a smaller input size or model"
            )
    else:
        assert most_steps is not None
        total = most_steps
    precisions = {("bfloat16" if c else "float32"): round(s, 6) for c, s in zip(choices, steps)}
    evals = evaluations(0, total, data.steps, task.eval_every)
    return EpochPlan(math.ceil(total / data.steps), total, step, evaluation, evals, budget_seconds, seconds_left,
                     bool(chosen), times.load, precisions)  # fmt: skip


def run_steps(config: Any, steps_per_epoch: int) -> int:
    """The optimizer steps of a run in all: its epochs', or ``max_steps`` where that ends first."""
    steps = config.epochs * steps_per_epoch
    return min(steps, config.max_steps) if config.max_steps is not None else steps


def shown_steps(steps: int, per_epoch: int) -> str:
    """"5 epochs", or "4.31 epochs (1655 steps)" where the last one ends early."""
    if steps % per_epoch == 0:
        return f"{steps // per_epoch} epoch{'s' if steps != per_epoch else ''}"
    return f"{steps / per_epoch:.2f} epochs ({steps} steps)"


def planned_settings(config: Any, steps: int, steps_per_epoch: int) -> Any:
    """``config`` set to train ``steps`` steps in all: the epochs they begin, and ``max_steps`` where the last
    epoch ends early."""
    epochs = math.ceil(steps / steps_per_epoch)
    return dataclasses.replace(config, epochs=epochs, max_steps=steps if steps < epochs * steps_per_epoch else None)


def plan_run(
    config: RunSettings, task: Task, model: nn.Module, data: TrainLoader, env: DistEnv, eval_images: int, log,
    most: int | None = None, ends_at: float | None = None,
) -> tuple[Any, EpochPlan, Deadline | None]:  # fmt: skip
    """A new run's settings with their plan (:func:`plan_epochs`): the precision when ``amp`` is unset, and
    with a ``time_budget`` (ending at ``ends_at``) the steps (at most ``most`` epochs, those given with it,
    and the ``max_steps`` given) and the deadline they are timed again against as the run goes. The plan is
    logged (how long the run will take here) and kept in the summary."""
    budget = config.time_budget * 60 if config.time_budget is not None else None
    if budget is None:
        most_steps: int | None = run_steps(config, data.steps)
    else:
        most_steps = min([n for n in (most and most * data.steps, config.max_steps) if n], default=None)
    seconds_left = ends_at - time.perf_counter() if ends_at is not None else None
    plan = plan_epochs(
        task, model, data, env, eval_images, seed=config.seed, amp=config.amp, most_steps=most_steps,
        seconds_left=seconds_left, budget_seconds=budget,
    )  # fmt: skip
    if task.head_epochs and task.head_epochs * data.steps >= plan.steps:
        raise ConfigError(
            f"the run's {plan.steps} steps ({plan.steps / data.steps:.1f} epochs, by {label('time_budget')} or "
            f"{label('max_steps')}) are not more than {label('head_epochs')} {task.head_epochs}"
        )
    if config.amp is None:
        timed = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in plan.precisions.items())
        why = f"a step takes {timed}" if len(plan.precisions) > 1 else "this device has no fast bfloat16"
        log.info(f"precision: {'bfloat16 autocast' if plan.amp else 'float32'} ({why})")
    shown = shown_steps(plan.steps, data.steps)
    if budget is not None:
        fit = f"the {most} asked for" if most is not None and plan.steps == most * data.steps else "as many as fit"
        log.info(f"time budget {config.time_budget:g} min: {shown} ({fit})")
        if plan.steps < data.steps:
            log.warning(f"the time budget leaves less than one epoch: {plan.steps} of its {data.steps} steps")
    log.info(
        f"about {plan.run_seconds / 60:.1f} min on this machine ({shown}, a step {plan.step_seconds:.3f} s, "
        f"{plan.load_seconds / plan.step_seconds:.0%} of it waiting for data; {plan.evaluations} evaluation(s) "
        f"of about {plan.eval_seconds:.1f} s)"
    )
    if budget is None:
        return dataclasses.replace(config, amp=plan.amp), plan, None  # the steps as given
    assert ends_at is not None
    deadline = Deadline(ends_at, budget, most_steps, plan.eval_seconds)
    return dataclasses.replace(planned_settings(config, plan.steps, data.steps), amp=plan.amp), plan, deadline
