"""A setting is defined once: its config dataclass field.

The field holds the setting's type (the annotation), its default, and as
metadata its help text, its choices and whether it must be positive (see
:func:`setting`). Everything else is derived from that one definition:

- the command line: :func:`add_flags` turns each field into ``--name`` (a bool
  into ``--name/--no-name``, a tuple into a flag that takes several values),
  with the recipes' values added to the help; :func:`given_settings` reads the
  flags back into the fields;
- the checks: :func:`check_settings` checks every value against its type,
  choices and sign, naming the setting the way the caller knows it (``--img-size``
  from the command line, ``img_size`` from Python: :func:`label`);
- the recipes: a :class:`Recipe` is a mapping from field names to values,
  checked against the fields (:func:`apply_recipe`), which also scales the
  learning rate by the global batch for recipes that say so, the same way for
  every task;
- :class:`RunSettings`: the settings the training engine reads, shared by every
  task's config, so a setting both tasks have is defined in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import os
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..records import matches
from .optim import OPTIMIZERS

__all__ = [
    "Recipe",
    "RunSettings",
    "add_flags",
    "apply_recipe",
    "check_model_overrides",
    "check_settings",
    "check_time_budget",
    "check_workers",
    "cli_labels",
    "flag_fields",
    "given_settings",
    "label",
    "old_names",
    "setting",
]

_CLI = contextvars.ContextVar("botnet_cli_labels", default=False)


@contextlib.contextmanager
def cli_labels() -> Iterator[None]:
    """Inside, error messages name settings by their flags (``--img-size``), as the command line knows them."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def label(name: str) -> str:
    """A setting's name as the caller knows it: ``--img-size`` under the CLI, ``img_size`` from Python."""
    return _flag(name) if _CLI.get() else name


def setting(
    default: Any = None,
    *,
    help: str,
    choices: tuple[Any, ...] | None = None,
    positive: bool = False,
    optional: bool = False,
    flag: bool = True,
    metavar: str | tuple[str, ...] | None = None,
    nargs: int | None = None,
    const: Any = None,
    old_name: str | None = None,
) -> Any:
    """A config field with what the CLI and the checks need.

    Args:
        default: the value when the user gives none (``None``: the recipe's, or fitted to the data).
        help: the flag's help text (also the setting's documentation).
        choices: the values it may take (checked, and offered by the flag).
        positive: a value it holds must be > 0.
        optional: None is a value a run keeps (off, or not given), not one the recipe or the data fill in.
        flag: False for settings only Python sets (an ablation's model overrides): no flag.
        metavar, nargs: how the flag shows and how many values a tuple takes (default: one or more).
        const: the value of the flag given alone (its value then optional).
        old_name: the setting's name in earlier versions: still a flag, and read from the runs they saved.
    """
    metadata = dict(help=help, choices=choices, positive=positive, optional=optional, flag=flag, metavar=metavar,
                    nargs=nargs, const=const, old_name=old_name)  # fmt: skip
    return dataclasses.field(default=default, metadata=metadata)


def old_names(config_class: type) -> dict[str, str]:
    """The settings renamed since earlier versions: old name -> today's (to read the runs they saved)."""
    return {f.metadata["old_name"]: f.name for f in dataclasses.fields(config_class) if f.metadata.get("old_name")}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hints(config_class: type) -> dict[str, Any]:
    return typing.get_type_hints(config_class)


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int; ``tuple[int, ...] | None`` -> tuple[int, ...]."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def flag_fields(config_class: type, only: tuple[str, ...] | None = None) -> list[dataclasses.Field]:
    """The fields the command line sets (``only``: those of them named)."""
    fields = [f for f in dataclasses.fields(config_class) if f.metadata.get("flag", False)]
    if only is not None:
        unknown = set(only) - {f.name for f in fields}
        if unknown:
            raise TypeError(f"{config_class.__name__} has no flags {sorted(unknown)}")
        fields = [f for f in fields if f.name in only]
    return fields


def _recipe_help(name: str, recipes: Mapping[str, Recipe] | None) -> str:
    if not recipes:
        return ""
    values = [f"{recipe} {_shown(r.settings[name])}" for recipe, r in recipes.items() if name in r.settings]
    return f" (recipe {', '.join(values)})" if values else ""


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def add_flags(
    parser: argparse.ArgumentParser,
    config_class: type,
    recipes: Mapping[str, Recipe] | None = None,
    only: tuple[str, ...] | None = None,
) -> None:
    """A flag for every field of ``config_class`` that has one (``only``: for those named); every flag's
    default is None ("not given")."""
    hints = _hints(config_class)
    for field in flag_fields(config_class, only):
        meta, kind = field.metadata, _base_type(hints[field.name])
        options: dict[str, Any] = dict(default=None, help=meta["help"] + _recipe_help(field.name, recipes))
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            args = typing.get_args(kind)
            options["type"] = args[0]
            options["nargs"] = meta["nargs"] or ("+" if args[-1] is Ellipsis else len(args))
        else:
            options["type"] = kind
        if meta["const"] is not None:
            options.update(nargs="?", const=meta["const"])
        if meta["choices"] is not None:
            options["choices"] = meta["choices"]
        if meta["metavar"] is not None:
            options["metavar"] = meta["metavar"]
        names = [_flag(field.name)] + ([_flag(meta["old_name"])] if meta.get("old_name") else [])
        parser.add_argument(*names, dest=field.name, **options)


def given_settings(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The settings given on the command line (flags left out, or that the command does not have, are not in
    the result)."""
    values = {f.name: getattr(args, f.name, None) for f in flag_fields(config_class)}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in values.items() if v is not None}


def check_settings(config: Any, *, resolved: bool = False) -> None:
    """ConfigError unless every field holds a value of its type (floats finite, strings not empty; a value
    read from a damaged file or passed from Python may be anything), one of its choices, and a positive
    number where the field says so. Unset (None) values pass, for the recipe or the data to fill, unless
    ``resolved``: then only an ``optional`` setting may be None."""
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value, meta = getattr(config, field.name), field.metadata
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{label(field.name)} is empty; give a value or leave it out")
        if not matches(value, hints[field.name], finite=True):
            expected = str(hints[field.name]).replace("typing.", "").replace("NoneType", "None")
            raise ConfigError(f"{label(field.name)} is {value!r}; it must be {expected} (finite)")
        if value is None and resolved and field.metadata and not meta.get("optional"):
            raise ConfigError(f"{label(field.name)} was left unset by the recipe and the defaults; give it")
        if value is None:
            continue
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"unknown {label(field.name)} {value!r}; choose one of {', '.join(map(str, choices))}")
        if meta.get("positive") and any(v <= 0 for v in (value if isinstance(value, tuple) else (value,))):
            raise ConfigError(f"{label(field.name)} must be positive, got {_shown(value)}")


def check_workers(workers: int) -> None:
    """Data-loading processes: 0 (load in the main process) up to four per CPU core (at least 32)."""
    limit = max(32, 4 * (os.cpu_count() or 1))
    if not 0 <= workers <= limit:
        raise ConfigError(
            f"{label('workers')} must be between 0 and {limit} on this machine ({os.cpu_count()} cores), got {workers}"
        )


def check_time_budget(minutes: float | None) -> None:
    """A time budget: positive minutes (up to a year)."""
    if minutes is not None and not 0 < minutes <= 60 * 24 * 365:
        raise ConfigError(f"{label('time_budget')} is in minutes and must be positive, got {minutes}")


@dataclass(frozen=True)
class Recipe:
    """A named preset: values for a task's settings, taken where the user gives none.

    ``lr_reference_batch``: when set, the recipe's ``lr`` is for that global batch (images per optimizer
    step over all processes) and is scaled linearly to the run's (Goyal et al. 2017, as torchvision's
    references do)."""

    settings: Mapping[str, Any]
    lr_reference_batch: int | None = None


def apply_recipe(config: Any, recipes: Mapping[str, Recipe], name: str, world_size: int) -> dict[str, Any]:
    """The fields of ``config`` as a dict, each unset one taken from recipe ``name`` (an ``ema_decay`` of 0 turns
    the recipe's EMA off); the learning rate, unless given, scaled to the global batch (``batch_size *
    world_size``) where the recipe says so."""
    if name not in recipes:
        raise ConfigError(f"unknown {label('recipe')} {name!r}; choose one of {', '.join(recipes)}")
    recipe = recipes[name]
    values = dataclasses.asdict(config)
    unknown = sorted(set(recipe.settings) - set(values))
    if unknown:  # a recipe that names a setting the config does not have is a bug here, not the user's
        raise TypeError(f"recipe {name!r} sets {', '.join(unknown)}, which {type(config).__name__} does not have")
    for key, value in recipe.settings.items():
        if values[key] is None:
            values[key] = value
    values["recipe"] = name
    if values["ema_decay"] == 0:
        values["ema_decay"] = None  # ema_decay 0 turns a recipe's EMA off
    if config.lr is None and recipe.lr_reference_batch:
        values["lr"] = recipe.settings["lr"] * values["batch_size"] * world_size / recipe.lr_reference_batch
    return values


@dataclass
class RunSettings:
    """The settings of a run that the training engine reads, the same for every task (each task's config
    adds its own). ``None``: the recipe's value."""

    recipe: str | None = setting(help="preset of the unset settings below")
    epochs: int | None = setting(positive=True, help="passes over the training images")
    max_steps: int | None = setting(
        positive=True, optional=True, metavar="STEPS",
        help="end after at most this many optimizer steps in all, the last epoch cut short (the epochs', from "
        "--epochs or the recipe, where fewer; a time budget sets it to the steps that fit)",
    )  # fmt: skip
    batch_size: int | None = setting(positive=True, help="images per step, per process")
    optimizer: str | None = setting(choices=tuple(OPTIMIZERS), help="sgd (with momentum) or adamw")
    lr: float | None = setting(
        positive=True, help="peak learning rate (default: the recipe's, scaled to the global batch where it says so)"
    )
    weight_decay: float | None = setting(help="decoupled (adamw) or L2 (sgd) weight decay; none on norms and biases")
    momentum: float | None = setting(help="SGD momentum")
    warmup_epochs: float | None = setting(help="linear warm-up of the learning rate, then cosine decay")
    ema_decay: float | None = setting(
        optional=True, help="keep an exponential moving average of the weights (0 turns it off)"
    )
    clip_grad: float | None = setting(positive=True, optional=True, metavar="NORM", help="clip the gradient norm")
    amp: bool | None = setting(
        optional=True,  # None: the run's plan chooses by timing steps
        help="bfloat16 autocast (float16 on GPUs without bfloat16); default: chosen by timing a few steps both ways "
        "where the device has fast bfloat16 (AMX or AVX512-BF16 CPUs, GPUs), float32 elsewhere"
    )
    compile: bool = setting(False, help="torch.compile the model")
    sync_bn: bool = setting(False, help="SyncBatchNorm across GPUs (torchrun)")
    time_budget: float | None = setting(
        optional=True,
        metavar="MINUTES",
        help="time a few steps on this machine, then train as many steps as fit (at most --epochs, where given; "
        "the last epoch may end early), timed again as the run goes; the schedule is planned for them, so the "
        "cosine ends on time",
    )
    tensorboard: bool = setting(
        False, help="also write the metrics as TensorBoard scalars in RUN/tensorboard (pip install 'botnet[tensorboard]')"
    )
    workers: int | None = setting(help="data-loading processes")
    seed: int = setting(0, help="seeds the weights, the order of the images and every augmentation")
    output_dir: str | None = setting(help="the run folder (default runs/DATA-MODEL-TIME)")

    def check_run(self) -> None:
        """The checks every task's resolved settings share: every setting but the optional ones is set."""
        check_settings(self, resolved=True)
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"{label('ema_decay')} must be in (0, 1), got {self.ema_decay}")
        if self.workers is not None:
            check_workers(self.workers)
        check_time_budget(self.time_budget)
        if self.tensorboard:
            check_tensorboard()


def check_tensorboard() -> None:
    """--tensorboard needs the tensorboard package: say so before the run starts, not after an epoch."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(f"{label('tensorboard')} needs the tensorboard package: pip install 'botnet[tensorboard]'") from None


def check_model_overrides(model: str, overrides: Any):
    """The ModelConfig of ``model`` with ``overrides`` (create_model settings) applied; ConfigError names
    a bad setting."""
    from ..models import get_model_entry

    entry = get_model_entry(model)  # unknown names fail here, with suggestions
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"model_overrides must be a mapping of model settings, got {overrides!r}")
    try:
        return entry.config.with_overrides(**(overrides or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model_overrides {overrides}: {error}") from None
