"""One training loop for every task, in the shape of torchvision's detection references and timm's train.py.

A task (classification, detection) supplies the model, the training set, the
loss of a batch and its evaluation; :func:`fit` does the rest, the same way for
both: parameter groups, warm-up and cosine (optionally the classifier alone
first), EMA, AMP (bfloat16, or float16 with a gradient scaler), gradient
clipping, DistributedDataParallel, one NaN stop, per-epoch metrics.csv rows,
the progress bar and the log, and ``last.pt`` after every epoch and at a
Ctrl-C.

Exact resume. The loader seeds each epoch and each sample
(:mod:`botnet.training.loaders`); a mid-epoch stop saves every rank's random
state and the partial sums, and the resumed epoch skips the batches already
trained. A new run's precision and steps are planned first
(:mod:`botnet.training.plan`); a run's last epoch ends early where its steps
(``max_steps``) end within it. A budgeted run's steps are timed again a few
times an epoch from its own steps and evaluations, the schedule rebuilt for
the new total from the step reached (and saved with it, so a resume follows it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..checkpoints import TrainState, save_training_state
from ..interrupts import GracefulStop
from .checkpoint import check_resumable, restore_training_state
from .loaders import TrainLoader
from .plan import (
    REPLANS_PER_EPOCH, TIMED_WARMUP, Deadline, amp_dtype, evaluations, planned_settings, replan_steps, run_steps,
    shown_steps,
)
from .distributed import DistEnv, all_reduce_sum, barrier, broadcast_buffers, broadcast_object, gather_objects
from .optim import OPTIMIZERS, epoch_seed, head_first, param_groups, warmup_cosine
from .report import write_json, write_metrics_csv
from .runs import diverged, failures_end_the_run, interrupted, restore_rng_state, rng_state
from .settings import RunSettings

__all__ = ["FitResult", "Run", "Task", "fit"]


@dataclass
class Run:
    """A run's identity: its settings (saved as they are), what its saved weights need, where it writes."""

    config: RunSettings  # the task's settings (saved as they are); the engine reads the RunSettings fields
    meta: dict[str, Any]
    command: str  # "botnet train", for the messages that say how to resume
    env: DistEnv
    log: Any
    state: TrainState | None = None  # a last.pt being continued
    deadline: Deadline | None = None  # a budgeted run's, to re-plan its epochs as it goes

    @property
    def run_dir(self) -> str:
        return self.config.output_dir

    @property
    def last_pt(self) -> str:
        return os.path.join(self.run_dir, "last.pt")


class Task(Protocol):
    """What a task adds to the loop."""

    columns: Sequence[str]  # metrics.csv columns, in order (epoch, train_loss, ..., lr, seconds)
    head: str | None  # the module (the new classifier) that trains alone for the first head_epochs, if any
    head_epochs: int
    eval_every: int  # evaluate() measures after every eval_every-th epoch and after the last (for the plan)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[Tensor, dict[str, Tensor], int]:
        """The loss to minimise, its named parts (for the log), and the number of images in the batch."""
        ...

    def evaluate(self, model: nn.Module, epoch: int, last: bool, amp: torch.dtype | None) -> dict[str, float]:
        """Held-out metrics after ``epoch`` (0-based) on every rank; {} where this epoch skips them. ``amp``:
        the autocast dtype training uses (None: float32), for the task to evaluate in where it suits it."""
        ...

    def describe(self, row: Mapping[str, Any]) -> str:
        """The log line of an epoch's metrics row."""
        ...


@dataclass
class FitResult:
    replans: list[dict[str, Any]]  # each change: after which step, to how many, at what pace
    rows: list[dict[str, Any]]
    metrics: dict[str, float]  # the last evaluation
    eval_model: nn.Module  # the weights to keep (the EMA when there is one)
    wall_seconds: float
    train_seconds: float
    train_images: int


def _optimizer(model: nn.Module, settings: RunSettings, task: Task, steps: int):
    """The optimizer and its per-step schedule (:func:`_schedule`)."""
    head = task.head if task.head_epochs else None
    groups = param_groups(model, settings.weight_decay, head=head)
    optimizer = OPTIMIZERS[settings.optimizer](groups, settings)
    return optimizer, _schedule(optimizer, settings, task, steps)


def _schedule(optimizer: torch.optim.Optimizer, settings: RunSettings, task: Task, steps: int):
    """Warm-up then cosine over the run's steps (:func:`~botnet.training.plan.run_steps`); with the task's
    ``head_epochs`` its head alone first (the rest's rate held at zero, then its own warm-up and cosine)."""
    groups = optimizer.param_groups
    total, head_steps = run_steps(settings, steps), task.head_epochs * steps
    warmup = min(max(1, round(settings.warmup_epochs * steps)), total - 1) if settings.warmup_epochs > 0 else 0
    whole, rest = warmup_cosine(warmup, total), head_first(warmup_cosine(warmup, total - head_steps), head_steps)
    factors = [whole if group.get("head", True) else rest for group in groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def _any_rank(env: DistEnv, *flags: bool) -> list[bool]:
    """Each flag, true if it is true on any rank: one all-reduce under DDP."""
    values = torch.tensor([float(flag) for flag in flags], device=env.device)
    if env.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def _agree(loss: Tensor, stop: GracefulStop, env: DistEnv) -> tuple[bool, bool]:
    """(loss finite on every rank, a stop requested on any rank), agreed once per step."""
    bad, stopping = _any_rank(env, not torch.isfinite(loss.detach()).item(), stop.requested)
    return not bad, stopping


@dataclass
class _Epoch:
    """How far one epoch got: sums over all ranks of each loss part times images, and images."""

    sums: dict[str, float] = field(default_factory=dict)
    images: int = 0
    steps: int = 0  # steps done, counting those before a resume
    stopped: bool = False

    def mean(self, name: str) -> float:
        return self.sums.get(name, 0.0) / max(self.images, 1)

    def add(self, other: _Epoch) -> None:
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.images += other.images


class _Loop:
    """The state of one fit: built once, then one epoch at a time."""

    def __init__(self, run: Run, task: Task, model: nn.Module, data: TrainLoader) -> None:
        self.run, self.task, self.env, self.data = run, task, run.env, data
        self.settings = settings = run.config
        if settings.sync_bn and self.env.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.env.device)
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
            if settings.ema_decay
            else None
        )
        self.eval_model = self.ema.module if self.ema is not None else self.model
        self.steps = data.steps
        self.optimizer, self.scheduler = _optimizer(self.model, settings, task, self.steps)
        self.amp_dtype = amp_dtype(settings.amp, self.env.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.train_model: nn.Module = self.model
        if self.env.distributed:
            ids = [self.env.local_rank] if self.env.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        if settings.compile:
            self.train_model = torch.compile(self.train_model)
        self.rows: list[dict[str, Any]] = []
        self.start_epoch = self.start_step = 0
        self.previous_seconds = self.train_seconds = 0.0
        self.train_images = 0
        self.partial = _Epoch()
        self.started = time.perf_counter()
        # this process's last epoch of step times (the run's first TIMED_WARMUP left out) and its evaluations
        # times: the pace of the time left and of a budgeted run's plan
        self.step_times: deque[float] = deque(maxlen=self.steps)
        self.steps_timed = 0
        self.eval_times: list[float] = []
        self.replans: list[dict[str, Any]] = []

    @property
    def total_steps(self) -> int:
        return run_steps(self.settings, self.steps)

    @property
    def epochs(self) -> int:
        """The epochs begun: the last one ends early where the run's steps end mid-epoch."""
        return math.ceil(self.total_steps / self.steps)

    def restore(self, state: TrainState) -> None:
        run = self.run
        check_resumable(state, run.last_pt, self.env.world_size, self.steps)
        restore_training_state(
            dataclasses.asdict(state), run.last_pt, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, ema=self.ema, scaler=self.scaler if state.scaler is not None else None,
        )  # fmt: skip
        self.start_epoch, self.start_step, self.rows = state.epoch, state.step, state.metrics
        self.previous_seconds, self.train_seconds = state.wall_seconds, state.train_seconds
        self.train_images = state.train_images
        partial = dict(state.partial)  # the loss sums and "images" of a stopped epoch
        self.partial = _Epoch(partial, int(partial.pop("images", 0)))
        where = f"epoch {self.start_epoch + 1}, step {self.start_step + 1}" if self.start_step else f"epoch {self.start_epoch + 1}"
        run.log.info(f"resuming {run.run_dir} at {where}")

    def state(self, epoch: int, progress: _Epoch | None = None, rng: list | None = None) -> TrainState:
        partial = {**progress.sums, "images": progress.images} if progress else {}
        return TrainState(
            config=dataclasses.asdict(self.run.config), meta=self.run.meta, epoch=epoch,
            step=progress.steps if progress else 0, world_size=self.env.world_size, partial=partial, rng=rng or [],
            model=self.model.state_dict(), ema=self.ema.state_dict() if self.ema is not None else None,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None, metrics=self.rows,
            wall_seconds=self.wall_seconds, train_seconds=self.train_seconds, train_images=self.train_images,
        )  # fmt: skip

    def replan(self, steps: int) -> None:
        """Train ``steps`` in all: the schedule is rebuilt for the new total from the step reached (the rate
        moves to where the new schedule is at this step), and the settings that last.pt saves say so."""
        self.settings = self.run.config = planned_settings(self.settings, steps, self.steps)
        reached = self.scheduler.state_dict()
        self.scheduler = _schedule(self.optimizer, self.settings, self.task, self.steps)
        self.scheduler.load_state_dict(reached)  # the step count; the new factors stay
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)

    @property
    def wall_seconds(self) -> float:
        return self.previous_seconds + time.perf_counter() - self.started

    @property
    def lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    def step(self, batch: Any, epoch: int, step: int, stop: GracefulStop) -> tuple[dict[str, Tensor], int, bool]:
        device = self.env.device
        with torch.autocast(device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            loss, parts, images = self.task.loss(self.train_model, batch, device)
        loss = loss.float()
        finite, stopping = _agree(loss, stop, self.env)
        if not finite:
            value = float(loss.detach())
            named = ", ".join(f"{k}={float(v.detach())}" for k, v in parts.items() if not math.isfinite(float(v.detach())))
            if math.isfinite(value):
                what = "the loss became NaN or infinite in another process"
            else:
                what = f"the loss became {named or value}"
            raise diverged(what, epoch, step, self.run.run_dir)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.settings.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.settings.clip_grad:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad)
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {"train_loss": loss.detach(), **{k: v.detach().float() for k, v in parts.items()}}, images, stopping

    def progress_bar(self) -> tqdm:
        """One bar for the whole run (its steps, from where a resumed run starts): its time left is the run's."""
        show = self.env.is_main and sys.stderr.isatty()
        total = self.total_steps
        done = self.start_epoch * self.steps + self.start_step
        return tqdm(total=total, initial=done, disable=not show, leave=False, dynamic_ncols=True, unit="step")

    def epoch_end(self, epoch: int) -> int:
        """The step at which ``epoch`` ends: the epoch's last, or where the run's steps end within it."""
        return min(self.steps, self.total_steps - epoch * self.steps)

    def train_epoch(self, epoch: int, first_step: int, stop: GracefulStop, bar: tqdm) -> _Epoch:
        """One pass from step ``first_step`` to the epoch's end (:meth:`epoch_end`, which a budgeted run's
        timing may move: :meth:`retime`); stops after the step during which a stop was requested."""
        self.train_model.train()
        names: list[str] = []
        sums = torch.zeros(0, dtype=torch.float64, device=self.env.device)
        images = 0
        bar.set_description(f"epoch {epoch + 1}/{self.epochs}")
        done, stopping = first_step, False
        every = max(1, math.ceil(self.steps / REPLANS_PER_EPOCH))
        tick = time.perf_counter()
        for step, batch in enumerate(self.data.loader, start=first_step):
            parts, count, stopping = self.step(batch, epoch, step, stop)
            if not names:
                names = list(parts)
                sums = torch.zeros(len(names), dtype=torch.float64, device=self.env.device)
            sums += torch.stack([parts[n] for n in names]).double() * count
            images += count
            done = step + 1
            self.steps_timed += 1
            if self.steps_timed > TIMED_WARMUP:
                self.step_times.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            if not bar.disable:
                bar.set_postfix(loss=f"{float(parts['train_loss']):.4f}", lr=f"{self.lr:.2e}", refresh=False)
                bar.update()
            if stopping or done >= self.epoch_end(epoch):
                break
            if self.run.deadline is not None and done % every == 0:
                self.retime(epoch, done, bar)
        totals = all_reduce_sum(torch.cat([sums, torch.tensor([float(images)], dtype=torch.float64, device=self.env.device)]), self.env)
        stopped = stopping and done < self.epoch_end(epoch)  # a stop at the epoch's last step: after its evaluation
        return _Epoch(dict(zip(names, totals[:-1].tolist())), int(totals[-1]), done, stopped)

    def pace(self) -> tuple[float, float] | None:
        """(a step's seconds, an evaluation's) as this process has timed them: the mean of the last epoch's steps
        (the run's first TIMED_WARMUP left out) and of the evaluations (until one is timed: the plan's estimate
        where the run has a deadline, else 0); None before two steps have been timed."""
        if len(self.step_times) < 2:
            return None
        deadline = self.run.deadline
        evaluation = statistics.fmean(self.eval_times) if self.eval_times else deadline.eval_seconds if deadline else 0.0
        return statistics.fmean(self.step_times), evaluation

    def time_left(self, epoch: int) -> str:
        """", about N min left" from the start of ``epoch`` (none at the end, or before a pace is known)."""
        paced = self.pace()
        if paced is None or epoch >= self.epochs:
            return ""
        evals = evaluations(epoch, self.total_steps, self.steps, self.task.eval_every)
        return f", about {((self.total_steps - epoch * self.steps) * paced[0] + evals * paced[1]) / 60:.1f} min left"

    def retime(self, epoch: int, done: int, bar: tqdm) -> None:
        """A budgeted run's steps timed again after step ``done`` of ``epoch`` (its evaluation still due;
        ``done`` = 0: the next epoch's start) (:func:`~botnet.training.plan.replan_steps`): rank 0's decision,
        which every process follows. A change is logged and recorded in ``replans`` and config.json."""
        deadline, planned, reached, paced = self.run.deadline, self.total_steps, epoch * self.steps + done, self.pace()
        assert deadline is not None
        if paced is None:  # too few steps to go by
            return
        pace, evaluation = paced
        seconds_left = deadline.ends_at - time.perf_counter()
        evals = evaluations(epoch, planned, self.steps, self.task.eval_every)
        steps = replan_steps(planned, reached, seconds_left, pace, evals, evaluation, deadline)
        steps = broadcast_object(max(steps, self.task.head_epochs * self.steps + 1), self.env)  # past the head's epochs
        if steps == planned:
            return
        before = shown_steps(planned, self.steps)
        self.replan(steps)
        bar.total = steps
        self.run.log.info(f"re-planned: {shown_steps(steps, self.steps)} instead of {before} (a step takes {pace:.3f} s "
                          f"here, {seconds_left / 60:.1f} min of the time budget are left)")  # fmt: skip
        if self.env.is_main:
            write_json(os.path.join(self.run.run_dir, "config.json"), dataclasses.asdict(self.settings))
        self.replans.append(dict(after_step=reached, steps=steps, epochs=self.epochs, step_seconds=round(pace, 4)))

    def save_and_stop(self, epoch: int, progress: _Epoch) -> None:
        rng = gather_objects(rng_state(), self.env)  # every rank's: each continues its own stream
        if self.env.is_main:
            save_training_state(self.run.last_pt, self.state(epoch, progress, rng))
        barrier(self.env)  # no rank leaves (and has torchrun stop the others) before the checkpoint is saved
        raise interrupted(self.run.last_pt, self.run.command, f"at epoch {epoch + 1}, step {progress.steps} of {self.steps}")

    def evaluate(self, epoch: int, last: bool) -> dict[str, float]:
        broadcast_buffers(self.eval_model, self.env)
        return self.task.evaluate(self.eval_model, epoch, last, self.amp_dtype)


def _tensorboard_row(run_dir: str, row: Mapping[str, Any]) -> None:
    """One epoch's metrics as scalars at step = epoch, in RUN/tensorboard (appended to, across resumes)."""
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package: pip install 'botnet[tensorboard]'

    with SummaryWriter(os.path.join(run_dir, "tensorboard")) as writer:
        for name, value in row.items():
            if name != "epoch":
                writer.add_scalar(name, value, row["epoch"])


def fit(run: Run, task: Task, model: nn.Module, data: TrainLoader) -> FitResult:
    """Train ``model`` for the run's steps (``run.config.epochs``, the last cut short at ``max_steps``; from
    ``run.state`` where it stopped) on ``data`` (from :func:`train_loader`), evaluating as the task says. With
    ``run.deadline`` the steps are timed again a few times an epoch and at its end (:meth:`_Loop.retime`)."""
    loop = _Loop(run, task, model, data)
    env, seed = run.env, run.config.seed
    if run.state is not None:
        loop.restore(run.state)
    metrics: dict[str, float] = {}
    epoch = loop.start_epoch
    with GracefulStop() as stop, failures_end_the_run(run.last_pt, run.command), loop.progress_bar() as bar:
        while epoch < loop.epochs:
            first_step = loop.start_step if epoch == loop.start_epoch else 0
            torch.manual_seed(epoch_seed(seed, epoch, env.rank))
            if first_step:
                restore_rng_state(run.state, env.rank)  # where the interrupted epoch was, not its start
            data.start_epoch(seed, epoch, first_step)
            epoch_start = time.perf_counter()
            progress = loop.train_epoch(epoch, first_step, stop, bar)
            loop.train_seconds += time.perf_counter() - epoch_start
            loop.train_images += progress.images
            if first_step:  # the part of this epoch trained before the interruption
                progress.add(loop.partial)
            if progress.stopped:
                loop.save_and_stop(epoch, progress)
            last = epoch + 1 == loop.epochs
            eval_start = time.perf_counter()
            evaluated = loop.evaluate(epoch, last)
            if evaluated:
                loop.eval_times.append(time.perf_counter() - eval_start)
            metrics = evaluated or metrics
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update({name: round(progress.mean(name), 6) for name in progress.sums if name in task.columns})
            row.update({k: round(v, 6) for k, v in evaluated.items() if k in task.columns})
            row["lr"] = loop.lr
            row["seconds"] = round(time.perf_counter() - epoch_start, 3)
            loop.rows.append(row)
            if run.deadline is not None and not last:
                loop.retime(epoch + 1, 0, bar)
            if env.is_main:
                write_metrics_csv(os.path.join(run.run_dir, "metrics.csv"), loop.rows, task.columns)
                save_training_state(run.last_pt, loop.state(epoch + 1))
                if loop.settings.tensorboard:
                    _tensorboard_row(run.run_dir, row)
            run.log.info(f"epoch {epoch + 1}/{loop.epochs}  {task.describe(row)}  {row['seconds']:.1f}s"
                         + loop.time_left(epoch + 1))  # fmt: skip
            if not last and _any_rank(env, stop.requested)[0]:  # asked to stop during the evaluation
                raise interrupted(run.last_pt, run.command, f"after epoch {epoch + 1}")
            epoch += 1
        if not metrics:  # resumed a finished run, or no evaluation yet
            metrics = loop.evaluate(loop.epochs - 1, True)
    return FitResult(loop.replans, loop.rows, metrics, loop.eval_model, loop.wall_seconds,
                     loop.train_seconds, loop.train_images)  # fmt: skip
