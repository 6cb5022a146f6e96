"""The paper's ablations as one command: each variant of a study trained with several seeds.

A study is a list of variants, each a set of ``create_model`` settings (of the classifier, or of
a detector's backbone; paper Sec. 4:
position encodings in Table 5, where the BoT blocks go in Tables 2 and 9, heads, and the
ResNet a BoTNet replaces). Every (variant, seed) is an ordinary run folder under the
study's folder, so a stopped study continues where it was: finished runs are kept,
a run with a ``last.pt`` is resumed, the others start. ``study.csv`` and ``study.png``
summarise the runs: top-1 mean and standard deviation over the seeds, parameters,
FLOPs, training images/s and wall time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..checkpoints import read_metadata
from ..errors import ConfigError
from ..models import get_model_entry, summarize
from ..records import with_current_names
from ..training.pipeline import describe_choices, run_task
from ..training.settings import check_model_overrides, old_names
from . import TASKS

__all__ = [
    "STUDIES",
    "Variant",
    "fit_study",
    "plan_study",
    "run_study",
    "study_folder",
    "study_variants",
    "summarize_study",
]


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]


def _position(entry) -> list[Variant]:
    return [
        Variant("relative", {}),
        Variant("relative_only", dict(position_encoding="relative_only")),
        Variant("absolute", dict(position_encoding="absolute")),
        Variant("none", dict(position_encoding="none")),
        Variant(f"relative, scale_position={not entry.config.scale_position}", dict(scale_position=not entry.config.scale_position)),
    ]


def _placement(entry) -> list[Variant]:
    return [
        Variant("c5", dict(bot_blocks=(0, 0, 0, -1))),
        Variant("c4 (last block) + c5", dict(bot_blocks=(0, 0, 1, -1))),
        Variant("none (the ResNet)", dict(bot_blocks=(0, 0, 0, 0))),
    ]


def _heads(entry) -> list[Variant]:
    widths = [stage.width for stage, bot in zip(entry.config.stages, _has_bot(entry)) if bot]
    return [Variant(f"{h} heads", dict(heads=h)) for h in (1, 2, 4, 8) if all(w % h == 0 for w in widths)]


def _baseline(entry) -> list[Variant]:
    return [Variant("BoTNet", {}), Variant("ResNet (no BoT blocks)", dict(bot_blocks=(0, 0, 0, 0)))]


def _has_bot(entry) -> list[bool]:
    return [stage.num_bot_blocks > 0 for stage in entry.config.stages]


STUDIES: dict[str, Callable] = {"position": _position, "placement": _placement, "heads": _heads, "baseline": _baseline}


def study_variants(study: str, model: str) -> list[Variant]:
    if study not in STUDIES:
        raise ConfigError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)}")
    entry = get_model_entry(model)
    if not any(_has_bot(entry)) and study != "placement":
        raise ConfigError(f"{model} has no BoT blocks; a {study} study needs a BoTNet (see botnet list)")
    return STUDIES[study](entry)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_folder(output_dir: str, variant: Variant, seed: int) -> str:
    return os.path.join(output_dir, _slug(variant.name), f"seed-{seed}")


def plan_study(base, study: str, seeds: int, output_dir: str, model: str) -> list[tuple[Variant, int, str]]:
    """Check the study's settings and list its (variant, seed, run folder)s; the folder's
    settings are recorded (``study.json``) so that continuing with others is refused."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= 100:
        raise ConfigError(f"--seeds must be an int from 1 to 100, got {seeds!r}")
    variants = study_variants(study, model)
    for variant in variants:  # every variant's settings are valid before any run starts
        check_model_overrides(model, {**(base.model_overrides or {}), **variant.overrides})
    os.makedirs(output_dir, exist_ok=True)
    _check_same_study(output_dir, dict(study=study, model=model, seeds=seeds, base=_settings(base)), type(base))
    return [(variant, seed, run_folder(output_dir, variant, seed)) for variant in variants for seed in range(seeds)]


def _task_of(base):
    """The task spec whose config ``base`` is."""
    return next(task for task in TASKS.values() if isinstance(base, task.config_class))


def fit_study(base, log: Callable[[str], None] = print):
    """``base`` (a TrainConfig or a DetectConfig) with its unset settings fitted to the data once, so that
    every run of the study shares them, and resolved; the choices are logged. A study's length is its
    user's: ``--time-budget`` is shared by its runs, never fitted."""
    fitted_base, fitted = _task_of(base)().fit_defaults(base, 1)
    if fitted is not None:
        for line in describe_choices(fitted.data, [c for c in fitted.choices if c["setting"] != "time_budget"]):
            log(line)
    return dataclasses.replace(fitted_base, time_budget=base.time_budget).resolve(world_size=1)


def study_folder(base, study: str) -> str:
    """The default folder of a study: runs/ablate[-detect]-DATA-MODEL-STUDY."""
    task = _task_of(base)
    return os.path.join("runs", f"{task.study_prefix}-{base.data_name}-{getattr(base, task.study_setting)}-{study}")


def run_study(
    base,
    study: str,
    seeds: int,
    output_dir: str,
    train: Callable[..., dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every (variant, seed) of ``study`` from ``base`` (a TrainConfig or a DetectConfig as
    :func:`fit_study` returns it, shared by every run; the variants change its model, or its detector's
    backbone) with ``train`` (by default the task's own), resuming or skipping runs already there; then
    write ``study.csv`` and ``study.png`` into ``output_dir`` and return the CSV's rows.
    ``base.time_budget`` (minutes) is the whole study's, shared equally by its runs."""
    task = _task_of(base)
    train = train or (lambda config=None, resume=None: run_task(task(), config, resume=resume))
    model = getattr(base, task.study_setting)
    plan = plan_study(base, study, seeds, output_dir, model)
    for variant, seed, folder in plan:
        if os.path.exists(os.path.join(folder, "summary.json")):
            continue
        last = os.path.join(folder, "last.pt")
        if os.path.isdir(folder) and not os.path.exists(last):
            _clear_unstarted(folder, log)
        log(f"study {study}: {variant.name}, seed {seed} ({'resuming' if os.path.exists(last) else 'starting'})")
        if os.path.exists(last):
            train(resume=last)
        else:
            overrides = {**(base.model_overrides or {}), **variant.overrides}
            settings = dict(model_overrides=overrides or None, seed=seed, output_dir=folder)
            if base.time_budget is not None:
                settings.update(_budget_share(base.time_budget / len(plan), run_folder(output_dir, variant, 0), seed))
            train(dataclasses.replace(base, **settings))
    variants = [variant for index, (variant, _, _) in enumerate(plan) if index % seeds == 0]
    rows = summarize_study(output_dir, study, variants, seeds, task)
    plot_study(rows, os.path.join(output_dir, "study.png"), f"{study} study: {model}, {seeds} seed(s) each")
    return rows


def _budget_share(minutes: float, first_seed_folder: str, seed: int) -> dict[str, Any]:
    """A study's ``--time-budget`` is shared equally by its runs. A variant's first seed plans its
    steps in its share; the other seeds train the same steps, so that seeds differ only by the seed."""
    config = os.path.join(first_seed_folder, "config.json")
    if seed > 0 and os.path.exists(config):
        with open(config) as f:
            planned = json.load(f)
        return dict(time_budget=None, epochs=planned["epochs"], max_steps=planned.get("max_steps"))
    return dict(time_budget=minutes, epochs=None, max_steps=None)


def _clear_unstarted(folder: str, log: Callable[[str], None]) -> None:
    """A run stopped before its first checkpoint left only its settings and log: start it again."""
    for name in ("config.json", "train.log"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            os.remove(path)
    log(f"{folder} stopped before its first checkpoint; starting it again")


def _settings(base) -> dict[str, Any]:
    """The study's fixed settings: what the variants share (not their seed or folder)."""
    values = dataclasses.asdict(base)
    for key in ("seed", "output_dir"):
        values.pop(key, None)
    return json.loads(json.dumps(values, default=list))


def _check_same_study(output_dir: str, settings: dict[str, Any], config_class: type) -> None:
    """A study folder belongs to one study: continuing it with other settings would mix runs (settings
    renamed since the folder was started are compared under their new names)."""
    path = os.path.join(output_dir, "study.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if isinstance(saved.get("base"), dict):
            saved["base"] = with_current_names(saved["base"], old_names(config_class))
        if saved != settings:
            changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            raise ConfigError(
                f"{output_dir} holds a study with other settings ({', '.join(changed)} differ); "
                f"continue it with the same command, or give another --output-dir"
            )
        return
    with open(path, "w") as f:
        json.dump(settings, f, indent=2)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize_study(
    output_dir: str, study: str, variants: list[Variant], seeds: int, task
) -> list[dict[str, Any]]:
    """One row per variant from its runs' summary.json files, written to ``study.csv``: for each of the
    task's ``study_metrics`` (summary key -> column) the mean, standard deviation and each run's value;
    parameters and GFLOPs (a detector's: its backbone's), training images/s and wall time."""
    metrics = task.study_metrics
    rows = []
    for variant in variants:
        summaries = []
        for seed in range(seeds):
            with open(os.path.join(run_folder(output_dir, variant, seed), "summary.json")) as f:
                summaries.append(with_current_names(json.load(f), task.summary_old_names))
        first = summaries[0]
        meta = read_metadata(os.path.join(run_folder(output_dir, variant, 0), "model.safetensors")) or {}
        model = task.study_network(first, meta.get("in_chans", 3))
        row: dict[str, Any] = dict(study=study, variant=variant.name, overrides=json.dumps(variant.overrides), seeds=seeds)
        for key, column in metrics.items():
            if key not in first:
                continue
            mean, std = _mean_std([s[key] for s in summaries])
            row.update({f"{column}_mean": round(mean, 3), f"{column}_std": round(std, 3),
                        f"{column}_runs": " ".join(f"{s[key]:.2f}" for s in summaries)})  # fmt: skip
        speed, _ = _mean_std([s["train_images_per_second"] for s in summaries])
        wall, _ = _mean_std([s["wall_seconds"] for s in summaries])
        row.update(
            params=sum(p.numel() for p in model.parameters()),
            gflops=round(summarize(model).flops / 1e9, 4),
            train_images_per_second=round(speed, 1), wall_seconds=round(wall, 1),
        )  # fmt: skip
        rows.append(row)
    with open(os.path.join(output_dir, "study.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def plot_study(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """The first metric (mean, with one standard deviation as error bars) against FLOPs and against
    wall time."""
    from matplotlib.figure import Figure

    metric = next(k[: -len("_mean")] for k in rows[0] if k.endswith("_mean"))
    ylabel = {"top1": "held-out top-1 (%)", "box_ap": "held-out box AP", "mask_ap": "held-out mask AP"}[metric]
    figure = Figure(figsize=(10, 4))
    for axis, key, label in zip(figure.subplots(1, 2), ("gflops", "wall_seconds"), ("GFLOPs per image", "training wall time (s)")):
        for row in rows:
            axis.errorbar(row[key], row[f"{metric}_mean"], yerr=row[f"{metric}_std"], fmt="o", capsize=4, label=row["variant"])
        axis.set(xlabel=label, ylabel=ylabel)
        axis.grid(alpha=0.3)
        axis.margins(x=0.15, y=0.2)
    figure.axes[0].legend(fontsize=7)
    figure.suptitle(title)
    figure.savefig(path, dpi=120, bbox_inches="tight")
