"""A setting is defined once: every config field is reachable from the CLI, every flag lands in the config,
recipes name only real settings, and the learning rate scales with the global batch the same way for both
tasks."""

import argparse
import dataclasses
import typing

import pytest

from botnet.checkpoints import METADATA
from botnet.cli import build_parser
from botnet.errors import ConfigError
from botnet.records import with_current_names
from botnet.tasks import RECIPES, TrainConfig
from botnet.tasks.detection import DETECT_RECIPES, DetectConfig
from botnet.training.settings import (
    RunSettings,
    add_flags,
    check_settings,
    cli_labels,
    flag_fields,
    given_settings,
    old_names,
    setting,
)

TASKS = [
    pytest.param(TrainConfig, ["train"], RECIPES, id="classification"),
    pytest.param(DetectConfig, ["detect", "train"], DETECT_RECIPES, id="detection"),
]
# Settings only Python sets: an ablation's model variant, the size of the generated demo set.
PYTHON_ONLY = {"model_overrides", "shapes_train_images", "shapes_val_images"}


def _subparser(parser: argparse.ArgumentParser, command: list[str]) -> argparse.ArgumentParser:
    for name in command:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _example(field: dataclasses.Field, hint) -> tuple[list[str], object]:
    """Command-line words that set ``field`` and the value the config should then hold."""
    meta = field.metadata
    if typing.get_origin(hint) in (typing.Union, type(int | None)):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    flag = "--" + field.name.replace("_", "-")
    if meta["choices"]:
        value = meta["choices"][-1]
        return [flag, str(value)], value
    if hint is bool:
        return [f"--no-{field.name.replace('_', '-')}"], False
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        count = meta["nargs"] or (2 if args[-1] is Ellipsis else len(args))
        values = tuple(args[0](i + 3) for i in range(count))
        return [flag, *map(str, values)], values
    value = {int: 7, float: 0.25, str: "some-value"}[hint]
    return [flag, str(value)], value


@pytest.mark.parametrize("config_class, command, recipes", TASKS)
def test_every_setting_is_a_flag_and_every_flag_a_setting(config_class, command, recipes):
    parser = _subparser(build_parser(), command)
    flags = {a.dest for a in parser._actions if a.option_strings} - {"help", "debug", "resume"}
    fields = {f.name for f in dataclasses.fields(config_class)}
    assert flags == {f.name for f in flag_fields(config_class)}
    assert fields - flags == PYTHON_ONLY & fields, "a setting without a flag must be one only Python sets"


@pytest.mark.parametrize("config_class, command, recipes", TASKS)
def test_each_flag_lands_in_its_setting(config_class, command, recipes):
    parser = build_parser()
    hints = typing.get_type_hints(config_class)
    for field in flag_fields(config_class):
        words, value = _example(field, hints[field.name])
        given = given_settings(parser.parse_args([*command, *words]), config_class)
        assert given == {field.name: value}, field.name
        assert getattr(config_class(**given), field.name) == value


def test_flags_without_value_and_the_recipes_in_the_help():
    parser = build_parser()
    assert given_settings(parser.parse_args(["train", "--pretrained"]), TrainConfig) == {"pretrained": "hub"}
    assert given_settings(parser.parse_args(["train", "--amp"]), TrainConfig) == {"amp": True}
    assert given_settings(parser.parse_args(["train"]), TrainConfig) == {}
    help_text = " ".join(_subparser(parser, ["detect", "train"]).format_help().split())
    assert "(recipe small 0.0015, paper 0.02)" in help_text


@pytest.mark.parametrize("config_class, command, recipes", TASKS)
def test_recipes_set_only_real_settings_of_the_right_type(config_class, command, recipes):
    fields = {f.name for f in dataclasses.fields(config_class)}
    for name, recipe in recipes.items():
        assert set(recipe.settings) <= fields, name
        check_settings(config_class(**recipe.settings))  # types, choices and signs of every value


@pytest.mark.parametrize("config_class, command, recipes", TASKS)
def test_every_recipe_resolves_every_setting_and_a_gap_is_named(config_class, command, recipes):
    """After resolve, only an optional setting (None: off, or not given) may be unset; a value the recipe and
    the defaults left unset is an error that names it, not a None the run reads later."""
    for name in recipes:
        resolved = config_class(recipe=name).resolve(1)
        unset = {f.name for f in dataclasses.fields(resolved) if getattr(resolved, f.name) is None}
        assert unset <= {f.name for f in dataclasses.fields(config_class) if f.metadata.get("optional")}, name
        with pytest.raises(ConfigError, match="batch_size was left unset by the recipe and the defaults"):
            check_settings(dataclasses.replace(resolved, batch_size=None), resolved=True)
    optional = {f.name for f in dataclasses.fields(config_class) if f.metadata.get("optional")}
    assert {"ema_decay", "clip_grad", "time_budget", "data"} <= optional and "epochs" not in optional


def test_run_settings_are_shared_by_both_tasks():
    shared = {f.name for f in dataclasses.fields(RunSettings)}
    for config_class in (TrainConfig, DetectConfig):
        assert shared <= {f.name for f in dataclasses.fields(config_class)}


@pytest.mark.parametrize(
    "config, world_size, expected",
    [
        # the paper's classification recipe: 0.1 per 256 images, linear in the global batch
        (TrainConfig(recipe="paper", batch_size=32), 2, 0.1 * 32 * 2 / 256),
        (TrainConfig(recipe="paper", batch_size=128), 8, 0.1 * 128 * 8 / 256),
        # the small classification recipe is AdamW at a fixed rate
        (TrainConfig(batch_size=16), 4, 3e-3),
        # detection: small 1.5e-3 per 4 images, paper 0.02 per 16 (torchvision's reference)
        (DetectConfig(), 2, 1.5e-3 * 4 * 2 / 4),
        (DetectConfig(recipe="paper"), 8, 0.02 * 2 * 8 / 16),
        (DetectConfig(recipe="paper", batch_size=4), 1, 0.02 * 4 / 16),
        (DetectConfig(lr=0.5), 8, 0.5),  # a rate given is never scaled
    ],
)
def test_learning_rate_scales_with_the_global_batch(config, world_size, expected):
    assert config.resolve(world_size).lr == pytest.approx(expected)


def test_errors_name_settings_as_the_caller_knows_them():
    with pytest.raises(ConfigError, match=r"^img_size 4 is too small"):
        TrainConfig(img_size=4).resolve(1)
    with cli_labels(), pytest.raises(ConfigError, match=r"^--img-size 4 is too small"):
        TrainConfig(img_size=4).resolve(1)
    with pytest.raises(ConfigError, match=r"unknown optimizer 'lamb'; choose one of sgd, adamw"):
        DetectConfig(optimizer="lamb").resolve(1)
    with pytest.raises(ConfigError, match=r"min_size must be positive, got 0"):
        DetectConfig(min_size=0).resolve(1)


def test_a_new_setting_is_one_field():
    """Adding a setting: one field (type, default, help) gives the flag, the parsing and the checks."""

    @dataclasses.dataclass
    class WithNewSetting(TrainConfig):
        mixup: float | None = setting(positive=True, help="mixup alpha")

    parser = argparse.ArgumentParser()
    add_flags(parser, WithNewSetting, RECIPES)
    given = given_settings(parser.parse_args(["--mixup", "0.2"]), WithNewSetting)
    assert WithNewSetting(**given).mixup == 0.2
    with pytest.raises(ConfigError, match="mixup must be positive"):
        check_settings(WithNewSetting(mixup=-1.0))


def test_one_name_per_idea_across_tasks():
    """The settings and the weights' metadata name the same idea the same way in both tasks."""
    both = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(DetectConfig)}
    assert {"data", "skip_bad", "model_overrides", "workers"} <= both
    records = [{f.name for f in dataclasses.fields(meta)} for meta in METADATA.values()]
    assert {"classes", "dataset", "num_classes", "task"} <= records[0] & records[1]


def test_a_renamed_setting_keeps_its_old_flag_and_reads_old_runs():
    parser = build_parser()
    for words, value in ((["--skip-bad-images"], True), (["--no-skip-bad-images"], False), (["--skip-bad"], True)):
        assert given_settings(parser.parse_args(["train", *words]), TrainConfig) == {"skip_bad": value}
    assert old_names(TrainConfig) == {"skip_bad_images": "skip_bad"}
    saved = dict(skip_bad_images=True, epochs=3)
    assert with_current_names(saved, old_names(TrainConfig)) == dict(skip_bad=True, epochs=3)
    assert with_current_names(dict(skip_bad_images=True, skip_bad=False), old_names(TrainConfig)) == dict(skip_bad=False)
