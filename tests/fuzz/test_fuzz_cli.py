"""Random argument lists for every command: the parser's own options with good and bad values, stray tokens,
real and broken files, paths that do not exist. Each ends with exit status 0 or 2 and, on an error, exactly
one line; never a traceback, never an internal error. The long parts (the epochs, benchmark timing, writing a
dataset) are replaced by stand-ins: everything before them (settings, data and file checks) runs for real."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from fuzzing import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st

from botnet import bench, explain, export
from botnet.tasks import ablate
from botnet.cli import build_parser, main

COMMANDS = [
    ("list",), ("info",), ("train",), ("eval",), ("predict",), ("bench",), ("export",), ("attention",), ("ablate",),
    ("make-data",),
    ("detect", "train"), ("detect", "eval"), ("detect", "predict"), ("detect", "make-data"), ("detect", "ablate"),
    ("detect", "convert"),
]  # fmt: skip
NUMBERS = ["-1", "0", "1", "2", "3", "17", "64", "300", "1000000000", "0.5", "-0.1", "nan", "inf", "1e-3", "1e30"]
WORDS = ["botnet_tiny", "botnet50", "botnet_mini", "resnet50", "nope", "small", "paper", "sgd", "adamw", "maskrcnn",
         "fasterrcnn", "mhsa", "resolution", "cpu", "cuda", "", "--", "-", "digits"]  # fmt: skip


def _parser(command: tuple[str, ...]):
    parser = build_parser()
    for name in command:
        action = next(a for a in parser._actions if getattr(a, "choices", None) and name in a.choices)
        parser = action.choices[name]
    return parser


@dataclass
class _Stand:
    """What the stand-ins were asked to do (for the statistics)."""

    reached: str = ""


@pytest.fixture
def stand_ins(monkeypatch, real_files):
    """The long-running parts replaced after every check has run."""
    from botnet.data import shapes
    from botnet.tasks import detection
    from botnet.training import pipeline

    stand = _Stand()

    def fit(spec, config, env, state, data, log, fitted, most, deadline):  # every check of the settings and the data has run
        stand.reached = "training" if spec.name == "classification" else "detection training"
        return {"stand_in": True}

    def shapes_in(config, run_dir, log):
        coco = real_files["coco"]
        return tuple(os.path.join(coco, s, f) for s in ("train", "val") for f in ("images", "annotations.json"))

    def run_suite(cases, settings, log=print, clock=None):
        stand.reached = "bench"
        case = cases[0]
        return [bench.Result(case.group, case.name, case.mode, case.input_shape[0], "1x1", 1.0, 1.0, 1.0, case.name)]

    def write_shapes(root, spec):
        stand.reached = "make-data"
        return {
            s: (os.path.join(root, s, "images"), os.path.join(root, s, "annotations.json")) for s in ("train", "val")
        }

    def write_folder(root, spec):
        stand.reached = "make-data"
        return dict(train=1, val=1)

    def export_to(*args, **kwargs):
        stand.reached = "export"
        return dict(path="x", outputs=["logits"], metadata=dict(input="images"), max_relative_error=0.0)

    def draw(*args, **kwargs):
        stand.reached = "attention"
        return ["drawn"]

    def run_study(base, study, seeds, output_dir, train=None, log=print):
        ablate.plan_study(base, study, seeds, output_dir, getattr(base, "backbone", None) or base.model)  # every check
        stand.reached = "ablate"
        return [dict(variant="v", top1_mean=1.0, top1_std=0.0, top1_runs="1.0", params=1, gflops=1.0,
                     train_images_per_second=1.0)]  # fmt: skip


    monkeypatch.setattr(ablate, "run_study", run_study)
    monkeypatch.setattr(export, "to_onnx", export_to)
    monkeypatch.setattr(export, "to_exported_program", export_to)
    monkeypatch.setattr(export, "save_exported_program", lambda *args: None)
    monkeypatch.setattr(explain, "draw_attention", draw)
    monkeypatch.setattr(explain, "draw_position_logits", draw)
    monkeypatch.setattr(pipeline, "_train", fit)
    monkeypatch.setattr(detection, "_generate_shapes", shapes_in)
    monkeypatch.setattr(bench, "run_suite", run_suite)
    monkeypatch.setattr(shapes, "write_shapes_dataset", write_shapes)
    monkeypatch.setattr(shapes, "write_shapes_folder", write_folder)
    return stand


@st.composite
def argument_lists(draw, real_files, workdir):
    """Mostly well-formed commands (each option with a value of its kind, sometimes a wrong one), plus some
    stray tokens: enough get past the parser to exercise the checks behind it."""
    command = draw(st.sampled_from(COMMANDS))
    paths = [
        real_files[k] for k in ("cls_last", "cls_weights", "det_weights", "det_last", "image", "broken_image",
                                "folder", "coco", "resnet_pth")
    ] + [str(workdir / "nowhere"), str(workdir), os.fsdecode(b"bad-\xff-name"), "runs/x/last.pt"]  # fmt: skip
    junk = st.sampled_from(NUMBERS) | st.sampled_from(WORDS) | st.sampled_from(paths) | st.text(max_size=6)

    def value_for(action):
        if action.choices and draw(st.integers(0, 4)):
            return str(draw(st.sampled_from(sorted(action.choices))))  # argv holds strings (--in-chans 1)
        if action.type in (int, float) and draw(st.integers(0, 4)):
            return draw(st.sampled_from(NUMBERS[:9] if action.type is int else NUMBERS))
        if action.type is None and draw(st.integers(0, 2)):
            return draw(st.sampled_from(paths + WORDS[:4]))
        return draw(junk)

    def values_for(action):
        if action.nargs == 0:
            return []
        count = {None: 1, "?": draw(st.integers(0, 1)), "+": draw(st.integers(1, 3))}.get(action.nargs, action.nargs)
        return [value_for(action) for _ in range(count if isinstance(count, int) else 1)]

    actions = [a for a in _parser(command)._actions if a.option_strings and a.dest not in ("help", "debug")]
    argv = list(command)
    for action in [a for a in _parser(command)._actions if not a.option_strings]:  # positionals
        if draw(st.integers(0, 9)):
            argv += values_for(action)
    for action in actions:
        if action.required and draw(st.integers(0, 9)):
            argv += [action.option_strings[0], *values_for(action)]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["option"] * 6 + ["stray", "debug"]))
        if kind == "option" and actions:
            action = draw(st.sampled_from(actions))
            argv += [action.option_strings[0], *values_for(action)]
        elif kind in ("stray", "option"):
            argv.append(draw(junk))
        else:
            argv.append("--debug")
    return argv


@pytest.mark.filterwarnings("ignore")
@fuzz_settings(300)
@given(data=st.data())
def test_random_command_lines_end_cleanly(real_files, stand_ins, tmp_path_factory, monkeypatch, capsys, data):
    workdir = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(workdir)
    argv = data.draw(argument_lists(real_files, workdir))
    stand_ins.reached = ""
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse: usage errors (2) and --help (0)
        code = exit.code
        assert code in (0, 2), argv
        err = capsys.readouterr().err
        assert code == 0 or (len(err.strip().splitlines()) == 1 and "error:" in err), f"{argv}: {err}"
        event(f"{' '.join(argv[: 2 if argv[0] == 'detect' else 1])}: usage error" if code else "help")
        return
    err = capsys.readouterr().err
    assert code in (0, 2), f"{argv}: {err}"
    if code:
        lines = err.strip().splitlines()
        if "--debug" in argv:
            assert lines[-1].startswith("botnet "), f"{argv}: {err}"
        else:
            assert len(lines) == 1 and lines[0].startswith("botnet "), f"{argv}: {err}"
    event(
        f"{' '.join(argv[: 2 if argv[0] == 'detect' else 1])}: exit {code}{', ' + stand_ins.reached if stand_ins.reached else ''}"
    )
