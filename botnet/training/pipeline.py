"""One run pipeline for every task: :func:`run_task` owns the steps every run takes, in one order.

1. join the process group (torchrun) or run alone;
2. a new run: check the settings, fit the unset ones to the data (the task's rules), resolve the rest
   from the recipe (the learning rate scaled by the global batch, ``botnet.training.settings``);
   a resumed or restarted one: its saved settings (``botnet.training.runs``);
3. refuse a folder that holds another run, then read and check the data, before anything is written;
4. a batch no larger than each process's share of the training images;
5. hold the run folder (lock, leftovers of a killed writer removed) and log to RUN/train.log;
6. build the model, its training loader and its :class:`~botnet.training.engine.Task`;
7. a new run: time a few steps and plan it: the precision where unset, with a time budget the epochs
   (at most those given with it), and how long it will take (logged);
8. write config.json, train (:func:`~botnet.training.engine.fit`; a budgeted run's epochs are planned
   again at each epoch's end, to end within its budget), then, guarded so that a failure
   names the checkpoint to resume from, the weights with their metadata, the task's artefacts and
   summary.json.

A task supplies a :class:`TaskSpec`: its config class, how to load its data and build its model,
and what its summary and artefacts hold. Nothing else about a run is the task's.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..checkpoints import METADATA, TrainState, save_weights
from ..data.holdout import HELDOUT_FILE, write_heldout
from ..errors import CheckpointError, ConfigError, DatasetError
from ..numerics import flushed_denormals
from .checkpoint import check_metric_rows, check_new_run_dir, saved_config
from .distributed import DistEnv, init_distributed, main_process_first, shutdown_distributed
from .engine import FitResult, Run, Task, fit
from .loaders import TrainLoader
from .plan import END_SHARE, plan_run, run_steps, shown_steps
from .report import setup_logging, write_json
from .runs import failures_end_the_run, open_run_dir, settings_and_state
from .settings import RunSettings, check_settings, check_time_budget, label

__all__ = ["Built", "Fitted", "TaskSpec", "describe_choices", "run_task"]


@dataclass
class Fitted:
    """The settings a task chose from the data for a new run, and why (kept in summary.json and the weights)."""

    data: str  # the data's profile, in words
    choices: list[dict[str, Any]]  # {"setting", "value", "why"} for each fitted setting

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Built:
    """What a task builds for a run: the model and its training parts."""

    model: nn.Module
    task: Task
    loader: TrainLoader
    meta: dict[str, Any]  # the weights' metadata (the task's metadata record)
    eval_images: int  # held-out images each process evaluates (for the time budget)
    description: str  # the log line that says what is trained


class TaskSpec(Protocol):
    """What a task adds to :func:`run_task`."""

    name: str  # "classification", saved as the weights' and checkpoint's "task"
    command: str  # "botnet train": how the messages say to resume
    summary_old_names: dict[str, str]  # summary.json keys renamed since earlier versions: old -> today's
    config_class: type[RunSettings]
    metric_columns: list[str]  # metrics.csv's columns
    required_columns: tuple[str, ...]  # those every epoch's row has
    min_batch: int  # the smallest batch per process a step may have ...
    min_batch_reason: str  # ... and why

    def fit_defaults(self, config: Any, world_size: int) -> tuple[Any, Fitted | None]:
        """``config`` with the unset settings chosen from its data (and what was chosen)."""
        ...

    def load_data(self, config: Any, env: DistEnv) -> Any:
        """The checked data, before the run folder is written; None where it is made in the folder."""
        ...

    def make_data(self, config: Any, log) -> Any:
        """The data made inside the run folder (when :meth:`load_data` gave None)."""
        ...

    def data_warnings(self, data: Any) -> list[str]:
        """What the log should say about the data (files left out)."""
        ...

    def data_report(self, data: Any) -> list[str]:
        """What the log says was found before training: format, splits, counts, fixes, what was left out."""
        ...

    def heldout(self, data: Any) -> set[str] | None:
        """The images botnet held out of data without a val split (written to the run folder), else None."""
        ...

    def train_images(self, data: Any) -> int: ...

    def build(self, config: Any, data: Any, env: DistEnv, state: TrainState | None, log) -> Built: ...

    def summary(self, config: Any, data: Any, built: Built, result: FitResult) -> dict[str, Any]:
        """The task's fields of summary.json (the metrics first)."""
        ...

    def write_artefacts(self, config: Any, data: Any, built: Built, result: FitResult) -> None:
        """The task's pictures and extra files in the run folder (main process)."""
        ...

    def done(self, summary: dict[str, Any], result: FitResult) -> str:
        """The last log lines: the held-out result, then any details (one per line)."""
        ...


def describe_choices(data: str, choices: list[dict[str, Any]]) -> list[str]:
    """The lines that report fitted settings; none when nothing was fitted."""
    if not choices:
        return []
    return [f"settings fitted to the data ({data}):"] + [f"  {c['setting']} = {c['value']}: {c['why']}" for c in choices]


def run_task(spec: TaskSpec, config: Any = None, *, resume: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Train one run of ``spec``'s task from ``config`` (None: every default), or continue ``resume`` (a
    run's last.pt; ``epochs`` may extend it, the schedule then planned again for the new total). Returns the
    summary (also written to summary.json). Runs alone or under torchrun.

    Ctrl-C (or SIGTERM) stops at the end of the current step, saves last.pt and raises RunInterrupted; an
    expected failure once training has started raises RunFailed naming the checkpoint to resume."""
    started = time.perf_counter()  # a time budget counts from here
    with flushed_denormals():  # the slow arithmetic a trained attention's softmax leaves (botnet.numerics)
        env = init_distributed()
        try:
            user_config, fitted = config if config is not None else spec.config_class(), None
            if resume is None:
                check_settings(user_config)
                check_time_budget(user_config.time_budget)
                user_config, fitted = spec.fit_defaults(user_config, env.world_size)

            def from_state(state: TrainState, path: str):
                return _config_from_state(spec, state, path)

            resolved, state = settings_and_state(
                lambda: user_config.resolve(env.world_size), from_state, resume, epochs
            )
            return _run(spec, resolved, user_config, env, state, fitted, started)
        finally:
            shutdown_distributed()


def _config_from_state(spec: TaskSpec, state: TrainState, path: str):
    if state.task != spec.name:
        other = METADATA.get(state.task)
        how = f"resume it with `{other.train_command}`" if other else "this version knows no such task"
        raise CheckpointError(f"{path} is a {state.task} run's checkpoint; {how}")
    check_metric_rows(state, path, spec.metric_columns, spec.required_columns)
    return saved_config(state, path, spec.config_class, lambda config: config.resolve(state.world_size))


def _run(spec: TaskSpec, config, user_config, env: DistEnv, state: TrainState | None, fitted: Fitted | None,
         started: float):  # fmt: skip
    if state is None:
        check_new_run_dir(config.output_dir)  # before the data is checked, which may take a while
    with main_process_first(env):  # one rank checks the files; the others read its cached results
        data = spec.load_data(config, env)
    requested = config.batch_size
    if state is None and data is not None:
        config = _fit_batch(spec, config, user_config, spec.train_images(data), env)
    with open_run_dir(config.output_dir, resuming=state is not None, writer=env.is_main):
        log = setup_logging(config.output_dir if env.is_main else None, env.is_main)
        if data is None:
            with main_process_first(env):  # rank 0 makes the data; the others read it
                data = spec.make_data(config, log)
            if state is None:
                config = _fit_batch(spec, config, user_config, spec.train_images(data), env)
        for line in spec.data_report(data):
            log.info(line)
        for line in spec.data_warnings(data):
            log.warning(line)
        heldout = spec.heldout(data)
        if heldout is not None and env.is_main:
            write_heldout(os.path.join(config.output_dir, HELDOUT_FILE), heldout)
        fitted_record = _fitted_record(state, fitted, log)
        if config.batch_size < requested:
            log.warning(
                f"the training split has {spec.train_images(data)} images: batches of {config.batch_size} per process "
                f"instead of {requested}"
            )
        most = user_config.epochs if user_config.time_budget is not None else None
        ends_at = None
        if state is None and config.time_budget is not None:
            ends_at = started + config.time_budget * 60 * END_SHARE
        return _train(spec, config, env, state, data, log, fitted_record, most, ends_at)


def _fitted_record(state: TrainState | None, fitted: Fitted | None, log) -> dict[str, Any] | None:
    """What was fitted to the data: a resumed run's saved record, or a new run's (logged)."""
    if state is not None:
        return state.meta.get("fitted_defaults")
    if fitted is None:
        return None
    for line in describe_choices(fitted.data, fitted.choices):
        log.info(line)
    return fitted.as_dict()


def _fit_batch(spec: TaskSpec, config, user_config, images: int, env: DistEnv):
    """A batch no larger than each process's share of the training images (at least ``spec.min_batch``)."""
    per_process = images // env.world_size
    if per_process < spec.min_batch:
        fewer = " or use fewer processes" if env.distributed else ""
        raise DatasetError(
            f"the training split has {images} image(s), {per_process} per process; training needs at least "
            f"{spec.min_batch} per process ({spec.min_batch_reason}): add images{fewer}"
        )
    if per_process >= config.batch_size:
        return config
    # resolved again, so a recipe that scales the learning rate with the batch sees the batch that is used
    return dataclasses.replace(user_config, batch_size=per_process, output_dir=config.output_dir).resolve(env.world_size)


def _train(
    spec: TaskSpec, config, env: DistEnv, state, data, log, fitted: dict | None, most: int | None, ends_at: float | None
) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    if config.sync_bn and env.distributed and env.device.type != "cuda":
        raise ConfigError(f"{label('sync_bn')} needs GPUs (PyTorch's SyncBatchNorm runs on CUDA); drop it on CPU")
    built = spec.build(config, data, env, state, log)
    plan = deadline = None
    if state is None:
        config, plan, deadline = plan_run(config, built.task, built.model, built.loader, env, built.eval_images, log,
                                          most, ends_at)  # fmt: skip
    meta = {"task": spec.name, **built.meta, **({"fitted_defaults": fitted} if fitted else {})}
    per_epoch = built.loader.steps
    unchanged = state is not None and (state.config.get("epochs"), state.config.get("max_steps")) == (config.epochs, config.max_steps)
    if env.is_main and not unchanged:  # new, or extended
        write_json(os.path.join(config.output_dir, "config.json"), dataclasses.asdict(config))
        log.info(f"{built.description}; {shown_steps(run_steps(config, per_epoch), per_epoch)} of {per_epoch} steps, batch "
                 f"{config.batch_size} x {env.world_size} process(es) on {env.device.type}, lr {config.lr:g}; "
                 f"writing to {config.output_dir}")  # fmt: skip
    run = Run(config, meta, spec.command, env, log, state, deadline)
    result = fit(run, built.task, built.model, built.loader)
    config = run.config  # as trained: a budgeted run's epochs may have been planned again
    summary = dict(
        task=spec.name,
        **spec.summary(config, data, built, result),
        epochs=math.ceil(run_steps(config, per_epoch) / per_epoch),  # begun: the last may be cut short
        steps=run_steps(config, per_epoch),
        batch_size=config.batch_size,
        lr=config.lr,
        wall_seconds=round(result.wall_seconds, 3),
        train_images_per_second=round(result.train_images / max(result.train_seconds, 1e-9), 2),
        world_size=env.world_size,
        device=env.device.type,
        plan=dict(dataclasses.asdict(plan), replans=result.replans) if plan else None,
        fitted_defaults=fitted,
    )
    if env.is_main:
        with failures_end_the_run(run.last_pt, run.command):
            save_weights(os.path.join(config.output_dir, "model.safetensors"), result.eval_model, meta)
            spec.write_artefacts(config, data, built, result)
            write_json(os.path.join(config.output_dir, "summary.json"), summary)
        headline, *details = spec.done(summary, result).splitlines()
        log.info(f"{headline}; {result.wall_seconds:.1f}s, {summary['train_images_per_second']:.0f} "
                 f"train images/s; results in {config.output_dir}")  # fmt: skip
        for line in details:
            log.info(line)
    return summary

