"""One training loop for every task, in the shape of torchvision's detection references and timm's train.py.

A task (classification, detection) supplies the model, the training set, the
loss of a batch and its evaluation; :func:`fit` does the rest, the same way for
both: parameter groups, warm-up and cosine (optionally the classifier alone
first), EMA, AMP (bfloat16, or float16 with a gradient scaler), gradient
clipping, DistributedDataParallel, one NaN stop, per-epoch metrics.csv rows,
the progress bar and the log, and ``last.pt`` after every epoch and at a
Ctrl-C.

Exact resume. Each epoch reseeds from (seed, epoch, rank); each sample's
augmentation draws from its own generator seeded from (seed, epoch, index),
so what a sample gets does not depend on which worker loads it, how many
workers there are, or where a resumed epoch starts. A mid-epoch stop saves
every rank's random state and the partial sums, and the resumed epoch skips
the batches already trained.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from ..errors import ConfigError
from ..interrupts import GracefulStop, init_helper_process
from .checkpoint import restore_training_state
from .distributed import DistEnv, all_reduce_sum, barrier, broadcast_buffers, broadcast_object, gather_objects
from .optim import OPTIMIZERS, epoch_seed, head_first, param_groups, warmup_cosine
from .report import write_metrics_csv
from .runs import diverged, failures_end_the_run, interrupted, restore_rng_state, rng_state
from .settings import RunSettings, label
from .state import TrainState, check_resumable, save_training_state

__all__ = [
    "EpochPlan",
    "StepTimes",
    "fast_bfloat16",
    "plan_run",
    "time_steps",
    "FitResult",
    "GroupedBatchSampler",
    "Run",
    "Task",
    "TrainLoader",
    "amp_dtype",
    "fit",
    "plan_epochs",
    "train_loader",
]


@dataclass
class Run:
    """A run's identity: its settings (saved as they are), what its saved weights need, where it writes."""

    config: RunSettings  # the task's settings (saved as they are); the engine reads the RunSettings fields
    meta: dict[str, Any]
    command: str  # "botnet train", for the messages that say how to resume
    env: DistEnv
    log: Any
    state: TrainState | None = None  # a last.pt being continued

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
    rows: list[dict[str, Any]]
    metrics: dict[str, float]  # the last evaluation
    eval_model: nn.Module  # the weights to keep (the EMA when there is one)
    wall_seconds: float
    train_seconds: float
    train_images: int


class SeededSamples(Dataset):
    """``dataset`` with each sample's augmentation drawn from its own generator, seeded from
    (seed, epoch, index): the same whatever the worker, the number of workers or a resume."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        # The CPU generator itself, reseeded and put back (torch.manual_seed and fork_rng cost ~100x more).
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed((epoch_seed(self.seed, self.epoch, 0) * 1_000_003 + index) % 2**63)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


class SkipBatches(Sampler[list[int]]):
    """A batch sampler's batches, the first ``skip`` left out (the part of a resumed epoch already trained)."""

    def __init__(self, batches: Sampler[list[int]]) -> None:
        self.batches, self.skip = batches, 0

    def __iter__(self) -> Iterator[list[int]]:
        for index, batch in enumerate(self.batches):
            if index >= self.skip:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.skip)  # type: ignore[arg-type]


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images share a group (their aspect ratio: portrait or not), as torchvision's
    detection references batch, so padding to a batch's largest image wastes little. Yields
    len(sampler) // batch_size batches, as plain batching would: groups' leftovers, in sampler order,
    fill the last ones."""

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        self.sampler, self.group_ids, self.batch_size = sampler, group_ids, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        waiting: dict[int, list[tuple[int, int]]] = {}  # group -> (position in the sampler, index)
        yielded = 0
        for position, index in enumerate(self.sampler):
            group = waiting.setdefault(self.group_ids[index], [])
            group.append((position, index))
            if len(group) == self.batch_size and yielded < len(self):
                yield [i for _, i in group]
                group.clear()
                yielded += 1
        leftovers = [i for _, i in sorted(pair for group in waiting.values() for pair in group)]
        for start in range(0, (len(self) - yielded) * self.batch_size, self.batch_size):
            yield leftovers[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size  # type: ignore[arg-type]


def amp_dtype(enabled: bool | None, device: torch.device) -> torch.dtype | None:
    """bfloat16 autocast, or float16 on GPUs without bfloat16; None when AMP is off (or not yet chosen)."""
    if not enabled:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@dataclass
class TrainLoader:
    """The training loader and the parts :func:`fit` sets each epoch."""

    loader: DataLoader
    sampler: DistributedSampler
    samples: SeededSamples
    skip: SkipBatches
    generator: torch.Generator  # the loader's own: starting an epoch draws from it, not from the global one

    @property
    def steps(self) -> int:
        return len(self.skip.batches)  # type: ignore[arg-type]

    def start_epoch(self, seed: int, epoch: int, skip: int) -> None:
        self.sampler.set_epoch(epoch)
        self.samples.set_epoch(epoch)
        self.skip.skip = skip
        self.generator.manual_seed(epoch_seed(seed, epoch, 0))


def train_loader(
    dataset: Dataset,
    batch_size: int,
    env: DistEnv,
    *,
    seed: int,
    workers: int,
    collate_fn: Callable | None = None,
    batch_sampler: Callable[[Sampler[int], int], Sampler[list[int]]] | None = None,
) -> TrainLoader:
    """The training loader: each rank's shard (DistributedSampler, reshuffled per epoch), batches from
    ``batch_sampler(sampler, batch_size)`` (default plain, the last short batch dropped), samples seeded
    per epoch. Workers start fresh each epoch, so each sees the epoch's dataset state."""
    samples = SeededSamples(dataset, seed)
    sampler = DistributedSampler(
        samples, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True
    )
    batches = (batch_sampler or (lambda s, b: BatchSampler(s, b, drop_last=True)))(sampler, batch_size)
    skip = SkipBatches(batches)
    generator = torch.Generator()
    loader = DataLoader(
        samples, batch_sampler=skip, num_workers=workers, collate_fn=collate_fn, generator=generator,
        pin_memory=env.device.type == "cuda", worker_init_fn=init_helper_process,
    )  # fmt: skip
    return TrainLoader(loader, sampler, samples, skip, generator)


def _optimizer(model: nn.Module, settings: RunSettings, task: Task, steps: int):
    """The optimizer and its per-step schedule: warm-up then cosine; with the task's ``head_epochs`` its
    head alone first (the rest's rate held at zero, then its own warm-up and cosine)."""
    head = task.head if task.head_epochs else None
    groups = param_groups(model, settings.weight_decay, head=head)
    optimizer = OPTIMIZERS[settings.optimizer](groups, settings)
    total, head_steps = settings.epochs * steps, task.head_epochs * steps
    warmup = max(1, round(settings.warmup_epochs * steps)) if settings.warmup_epochs > 0 else 0
    whole, rest = warmup_cosine(warmup, total), head_first(warmup_cosine(warmup, total - head_steps), head_steps)
    factors = [whole if group.get("head", True) else rest for group in groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


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


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` may run bfloat16 faster than float32: a GPU with bfloat16, or a CPU with AMX or
    AVX512-BF16 instructions. Elsewhere bfloat16 is emulated and never timed."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


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
        total = self.settings.epochs * self.steps
        done = self.start_epoch * self.steps + self.start_step
        return tqdm(total=total, initial=done, disable=not show, leave=False, dynamic_ncols=True, unit="step")

    def train_epoch(self, epoch: int, first_step: int, stop: GracefulStop, bar: tqdm) -> _Epoch:
        """One pass from step ``first_step``; stops after the step during which a stop was requested."""
        self.train_model.train()
        names: list[str] = []
        sums = torch.zeros(0, dtype=torch.float64, device=self.env.device)
        images = 0
        bar.set_description(f"epoch {epoch + 1}/{self.settings.epochs}")
        done, stopping = first_step, False
        for step, batch in enumerate(self.data.loader, start=first_step):
            parts, count, stopping = self.step(batch, epoch, step, stop)
            if not names:
                names = list(parts)
                sums = torch.zeros(len(names), dtype=torch.float64, device=self.env.device)
            sums += torch.stack([parts[n] for n in names]).double() * count
            images += count
            done = step + 1
            if not bar.disable:
                bar.set_postfix(loss=f"{float(parts['train_loss']):.4f}", lr=f"{self.lr:.2e}", refresh=False)
                bar.update()
            if stopping:
                break
        totals = all_reduce_sum(torch.cat([sums, torch.tensor([float(images)], dtype=torch.float64, device=self.env.device)]), self.env)
        return _Epoch(dict(zip(names, totals[:-1].tolist())), int(totals[-1]), done, stopping)

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


def _time_left(epoch_seconds: list[float], epochs_left: int) -> str:
    """", about N min left": the remaining epochs at the median of those done (none after the last)."""
    if not epochs_left:
        return ""
    return f", about {epochs_left * statistics.median(epoch_seconds) / 60:.1f} min left"


def fit(run: Run, task: Task, model: nn.Module, data: TrainLoader) -> FitResult:
    """Train ``model`` for ``run.config.epochs`` (from ``run.state`` where it stopped) on ``data`` (from
    :func:`train_loader`), evaluating as the task says."""
    loop = _Loop(run, task, model, data)
    settings = run.config
    env, seed = run.env, run.config.seed
    if run.state is not None:
        loop.restore(run.state)
    metrics: dict[str, float] = {}
    epoch_times: list[float] = []  # this process's epochs, evaluation included: the time left is estimated from them
    with GracefulStop() as stop, failures_end_the_run(run.last_pt, run.command), loop.progress_bar() as bar:
        for epoch in range(loop.start_epoch, settings.epochs):
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
            last = epoch + 1 == settings.epochs
            evaluated = loop.evaluate(epoch, last)
            metrics = evaluated or metrics
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update({name: round(progress.mean(name), 6) for name in progress.sums if name in task.columns})
            row.update({k: round(v, 6) for k, v in evaluated.items() if k in task.columns})
            row["lr"] = loop.lr
            row["seconds"] = round(time.perf_counter() - epoch_start, 3)
            loop.rows.append(row)
            if env.is_main:
                write_metrics_csv(os.path.join(run.run_dir, "metrics.csv"), loop.rows, task.columns)
                save_training_state(run.last_pt, loop.state(epoch + 1))
                if settings.tensorboard:
                    _tensorboard_row(run.run_dir, row)
            epoch_times.append(row["seconds"])
            run.log.info(f"epoch {epoch + 1}/{settings.epochs}  {task.describe(row)}  {row['seconds']:.1f}s"
                         + _time_left(epoch_times, settings.epochs - epoch - 1))  # fmt: skip
            if not last and _any_rank(env, stop.requested)[0]:  # asked to stop during the evaluation
                raise interrupted(run.last_pt, run.command, f"after epoch {epoch + 1}")
        if not metrics:  # resumed a finished run, or no evaluation yet
            metrics = loop.evaluate(settings.epochs - 1, True)
    return FitResult(loop.rows, metrics, loop.eval_model, loop.wall_seconds, loop.train_seconds, loop.train_images)
