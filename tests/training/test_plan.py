"""Every new run is planned from a few timed steps: its precision (where unset), its epochs (with a time
budget) and how long it will take, said before the first step and as it goes."""

import csv
import json
import re
import sys

import pytest
import torch
from safetensors import safe_open

from botnet.tasks import TrainConfig, train
from botnet.training import plan as planning
from botnet.training.optim import OPTIMIZERS, param_groups


def _spy_steps(monkeypatch, compute):
    """time_steps as if each precision asked for took the matching seconds of ``compute``; records the asks."""
    asked = []
    real = planning.time_steps

    def timed(*args, amps, **kwargs):
        asked.append(list(amps))
        measured = real(*args, amps=amps, **kwargs)  # the real steps still run (and take time)
        assert len(measured.compute) == len(amps) and all(t > 0 for t in measured.compute) and measured.load >= 0
        return planning.StepTimes(0.0, tuple(compute[: len(amps)]), measured.images)

    monkeypatch.setattr(planning, "time_steps", timed)
    return asked


def _run(tmp_path, name, **settings):
    run_dir = tmp_path / name
    summary = train(TrainConfig(**{"epochs": 1, "batch_size": 128, **settings}, output_dir=str(run_dir)))
    config = json.loads((run_dir / "config.json").read_text())
    return summary, config, (run_dir / "train.log").read_text()


@pytest.mark.parametrize("seconds, chosen", [((0.2, 0.1), True), ((0.2, 0.19), False)])
def test_bfloat16_is_chosen_only_where_timed_steps_are_faster(tmp_path, monkeypatch, seconds, chosen):
    monkeypatch.setattr(planning, "fast_bfloat16", lambda device: True)
    asked = _spy_steps(monkeypatch, seconds)
    summary, config, log = _run(tmp_path, "run")
    assert asked == [[None, torch.bfloat16]]  # both precisions, timed on the same batches
    assert summary["plan"]["amp"] is config["amp"] is chosen
    assert summary["plan"]["precisions"] == {"float32": seconds[0], "bfloat16": seconds[1]}
    assert ("precision: bfloat16 autocast" if chosen else "precision: float32") in log


def test_a_device_without_fast_bfloat16_or_a_given_amp_times_one_precision(tmp_path, monkeypatch):
    asked = _spy_steps(monkeypatch, (0.2, 0.1))
    summary, config, log = _run(tmp_path, "slow")  # the suite's device has no fast bfloat16
    assert config["amp"] is False and "no fast bfloat16" in log
    monkeypatch.setattr(planning, "fast_bfloat16", lambda device: True)
    _, given, log = _run(tmp_path, "given", amp=False)
    assert asked == [[None], [None]] and given["amp"] is False and "precision:" not in log


def test_every_run_says_how_long_it_will_take_and_how_long_is_left(tmp_path, steady_steps):
    steady_steps(0.25)  # 11 steps an epoch (1,437 digits, batch 128), 360 held out: about 3.1 s an epoch
    summary, _, log = _run(tmp_path, "run", epochs=3)
    plan = summary["plan"]
    assert plan["budget_seconds"] is None and plan["epochs"] == 3 and plan["steps"] == 33 and plan["evaluations"] == 3
    assert plan["eval_seconds"] == pytest.approx(360 / 128 * 0.25 / 3)
    minutes = (33 * 0.25 + 3 * plan["eval_seconds"]) / 60
    assert f"about {minutes:.1f} min on this machine (3 epochs, a step 0.250 s" in log
    lines = [line for line in log.splitlines() if " epoch " in f" {line}" and "/3 " in line]
    assert len(lines) == 3 and all("min left" in line for line in lines[:2]) and "min left" not in lines[2]


def test_fused_adamw_steps_as_the_for_loop_reference_does():
    def model():
        torch.manual_seed(0)  # no bias before the norm: its gradient would be rounding noise, amplified by Adam
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                                   torch.nn.Linear(512, 4))  # fmt: skip

    models = [model(), model()]
    x = torch.randn(4, 3, 10, 10)
    settings = type("S", (), dict(lr=1e-2))
    ours = OPTIMIZERS["adamw"](param_groups(models[0], 0.05), settings)
    reference = torch.optim.AdamW(param_groups(models[1], 0.05), lr=1e-2, foreach=False)
    assert ours.defaults["fused"] is True
    for _ in range(5):
        for net, optimizer in zip(models, (ours, reference)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    first = model()
    for a, b, start in zip(models[0].parameters(), models[1].parameters(), first.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.equal(a, start)  # it did step


def test_the_progress_bar_counts_the_whole_runs_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: True)  # a terminal: the bar is drawn
    _run(tmp_path, "run", epochs=2)  # 11 steps an epoch
    drawn = capsys.readouterr().err
    assert "epoch 2/2" in drawn and re.search(r"\b\d+/22\b", drawn) and not re.search(r"\b\d+/11\b", drawn)


def test_a_budgeted_runs_steps_are_planned_again_from_its_own_steps_and_evaluations():
    budget = planning.Deadline(ends_at=0.0, budget_seconds=600.0, most_steps=None, eval_seconds=5.0)
    again = planning.replan_steps
    # 200 of 1,000 planned steps done, 100 s left, one 10-s evaluation due: at 0.1 s a step, 10 s (under 2%
    # of the budget) would be left unused: the plan ends in time and stands, so noise does not move it
    assert again(1000, 200, 100.0, 0.1, 1, 10.0, budget) == 1000
    assert again(1000, 200, 100.0, 0.25, 1, 10.0, budget) == 200 + 360  # slower than planned: 90 s / 0.25
    assert again(1000, 200, 100.0, 0.0625, 1, 10.0, budget) == 200 + 1440  # faster: 50 s unused, 1,440 more fit
    assert again(1000, 200, 100.0, 0.125, 3, 10.0, budget) == 200 + 560  # three evaluations still due: 70 s for steps
    capped = planning.Deadline(0.0, 600.0, most_steps=1200, eval_seconds=5.0)
    assert again(1000, 200, 100.0, 0.0625, 1, 10.0, capped) == 1200  # never above --epochs (or --max-steps)
    assert again(1200, 200, 100.0, 0.0625, 1, 10.0, capped) == 1200  # at the most asked for, time to spare: kept
    assert again(1000, 200, -5.0, 0.25, 1, 10.0, budget) == 201  # past the deadline: the one step it must still train


def test_the_evaluations_still_due_count_every_nth_epoch_and_the_last_cut_short():
    assert planning.evaluations(0, 50, 10, 1) == 5
    assert planning.evaluations(0, 43, 10, 5) == 1  # 4.3 epochs evaluated every 5th: only after the last
    assert planning.evaluations(0, 103, 10, 5) == 3  # after epochs 5, 10 and the 11th, cut short
    assert planning.evaluations(5, 103, 10, 5) == 2  # from epoch 6 on: after the 10th and the last
    assert planning.evaluations(11, 103, 10, 5) == 0


def _budgeted(tmp_path, name, monkeypatch, stop_at=None):
    """A digits run planned for 2 epochs of 11 steps (at most 2 asked for, 30 s with steps timed at 0.25 s),
    planned again to 3 at epoch 1's end (step 11); ``stop_at``: Ctrl-C as that epoch starts, then resume."""
    from botnet.training import engine

    monkeypatch.setattr(engine, "replan_steps", lambda planned, done, *args: 33 if done == 11 else planned)
    real_epoch = engine._Loop.train_epoch

    def train_epoch(loop, epoch, *args):
        if epoch == stop_at:
            raise KeyboardInterrupt
        return real_epoch(loop, epoch, *args)

    monkeypatch.setattr(engine._Loop, "train_epoch", train_epoch)
    run_dir = tmp_path / name
    config = TrainConfig(time_budget=0.5, epochs=2, batch_size=128, seed=5, output_dir=str(run_dir))
    if stop_at is None:
        return train(config), run_dir
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(engine._Loop, "train_epoch", real_epoch)
    return train(resume=str(run_dir / "last.pt")), run_dir


def test_a_replanned_run_rebuilds_its_schedule_and_a_resume_follows_it(tmp_path, monkeypatch, steady_steps):
    from botnet.training.optim import warmup_cosine
    from botnet.checkpoints import load_training_state

    steady_steps(0.25)  # more than the 2 epochs of 11 steps asked for fit the 30 s
    whole, whole_dir = _budgeted(tmp_path, "whole", monkeypatch)
    assert whole["plan"]["epochs"] == 2 and whole["epochs"] == 3
    assert [(r["after_step"], r["steps"], r["epochs"]) for r in whole["plan"]["replans"]] == [(11, 33, 3)]
    assert json.loads((whole_dir / "config.json").read_text())["epochs"] == 3
    assert "re-planned: 3 epochs instead of 2 epochs" in (whole_dir / "train.log").read_text()
    # the rate: epoch 1 on the 2-epoch cosine, then the 3-epoch one from the step reached, ending near zero
    lr = json.loads((whole_dir / "config.json").read_text())["lr"]
    rows = list(csv.DictReader(open(whole_dir / "metrics.csv")))
    warmup = max(1, round(json.loads((whole_dir / "config.json").read_text())["warmup_epochs"] * 11))
    expected = [warmup_cosine(warmup, 22)(11), warmup_cosine(warmup, 33)(22), warmup_cosine(warmup, 33)(33)]
    assert [float(r["lr"]) for r in rows] == pytest.approx([lr * f for f in expected], rel=1e-4)
    # stopped after epoch 2 and resumed: the re-planned total and schedule are in last.pt, and the run is the same
    resumed, resumed_dir = _budgeted(tmp_path, "resumed", monkeypatch, stop_at=2)
    assert load_training_state(str(resumed_dir / "last.pt")).config["epochs"] == 3
    assert resumed["epochs"] == 3
    with safe_open(str(whole_dir / "model.safetensors"), "pt") as a, safe_open(str(resumed_dir / "model.safetensors"), "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def _weights(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def cut_short(tmp_path_factory):
    """5 epochs of 11 digit steps cut at step 27 (in the third), uninterrupted (the CLI's --max-steps)."""
    from botnet.cli import main

    run_dir = tmp_path_factory.mktemp("cut") / "run"
    assert main(["train", *CUT_SHORT, "--output-dir", str(run_dir)]) == 0
    return run_dir


CUT_SHORT = ["--epochs", "5", "--max-steps", "27", "--batch-size", "128", "--seed", "3", "--no-amp"]


def test_max_steps_ends_the_last_epoch_early_where_the_schedule_ends(cut_short, capsys):
    from botnet.cli import main
    from botnet.training.optim import warmup_cosine

    summary = json.loads((cut_short / "summary.json").read_text())
    config = json.loads((cut_short / "config.json").read_text())
    rows = list(csv.DictReader(open(cut_short / "metrics.csv")))
    assert summary["steps"] == 27 and summary["epochs"] == 3  # begun
    assert (config["epochs"], config["max_steps"]) == (5, 27)  # as given: a torchrun restart with them continues
    assert len(rows) == 3 and all(r["val_top1"] for r in rows)  # the cut epoch is evaluated, as a last one is
    warmup = max(1, round(config["warmup_epochs"] * 11))
    expected = [warmup_cosine(warmup, 27)(step) for step in (11, 22, 27)]  # the cosine over 27 steps: 0 at the end
    assert [float(r["lr"]) for r in rows] == pytest.approx([config["lr"] * f for f in expected], abs=1e-9)
    assert "epoch 3/3" in (cut_short / "train.log").read_text()
    # its steps count whole epochs, so a run that ended mid-epoch is not extended (a new run is)
    assert main(["train", "--resume", str(cut_short / "last.pt"), "--epochs", "6"]) == 2
    assert "ended after 27 steps, within its last epoch, so it cannot be extended" in capsys.readouterr().err


def test_the_warm_up_never_outlasts_the_run():
    from botnet.training import engine

    settings = TrainConfig(epochs=1, max_steps=8, warmup_epochs=5.0)  # a warm-up of 50 steps, a run of 8
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    task = type("T", (), dict(head_epochs=0))
    schedule = engine._schedule(optimizer, settings, task, steps=10)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] < rates[6] and optimizer.param_groups[0]["lr"] == 0.0  # up, then down to zero at the end


@pytest.mark.parametrize("stop_at, where", [(25, "at epoch 3, step 3 of 11"), (11, "after epoch 1")])
def test_ctrl_c_in_a_cut_short_run_resumes_to_the_same_run(cut_short, tmp_path, monkeypatch, capsys, stop_at, where):
    """Within the cut epoch, and at an epoch's very last step (the epoch is finished and evaluated, and the
    run stops after it: a checkpoint at 'step 11 of 11' could not be resumed)."""
    import signal

    from botnet.checkpoints import load_training_state
    from botnet.cli import main
    from botnet.training import engine

    run_dir, real_agree, steps = tmp_path / "run", engine._agree, []

    def ctrl_c(*args):
        steps.append(1)
        if len(steps) == stop_at:
            signal.raise_signal(signal.SIGINT)
        return real_agree(*args)

    monkeypatch.setattr(engine, "_agree", ctrl_c)
    assert main(["train", *CUT_SHORT, "--output-dir", str(run_dir)]) == 130
    assert where in capsys.readouterr().err
    state = load_training_state(str(run_dir / "last.pt"))
    assert (state.epoch, state.step) == ((2, 3) if stop_at == 25 else (1, 0))
    monkeypatch.setattr(engine, "_agree", real_agree)
    assert main(["train", "--resume", str(run_dir / "last.pt")]) == 0
    whole, resumed = _weights(cut_short / "model.safetensors"), _weights(run_dir / "model.safetensors")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    rows = [r.split(",")[:6] for r in (run_dir / "metrics.csv").read_text().splitlines()]
    assert rows == [r.split(",")[:6] for r in (cut_short / "metrics.csv").read_text().splitlines()]


def test_steps_that_end_within_the_head_epochs_are_refused(tmp_path):
    from botnet.errors import ConfigError

    with pytest.raises(ConfigError, match="the run's 10 steps .* are not more than head_epochs 1"):
        _run(tmp_path, "run", epochs=3, max_steps=10, head_epochs=1)  # 11 steps an epoch
