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
    assert plan["budget_seconds"] is None and plan["epochs"] == 3
    assert plan["epoch_seconds"] == pytest.approx(11 * 0.25 + 360 / 128 * 0.25 / 3)
    assert f"about {3 * plan['epoch_seconds'] / 60:.1f} min on this machine (3 epochs of {plan['epoch_seconds']:.1f} s" in log
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


def test_a_budgeted_runs_epochs_are_planned_again_from_the_epochs_own_times():
    budget = planning.Deadline(ends_at=0.0, budget_seconds=600.0, most=None)
    again = planning.replan_epochs
    # 2 of 12 planned epochs done, 100 s left: at 10 s an epoch the plan ends in time and is kept
    assert again(12, 2, 100.0, [10.0, 10.0], budget) == 12
    assert again(12, 2, 100.0, [20.0, 20.0], budget) == 7  # slower than timed: 5 more fit
    assert again(12, 2, 100.0, [4.0, 4.0], budget) == 27  # faster: 25 more
    assert again(12, 2, 100.0, [4.0, 4.0], planning.Deadline(0.0, 600.0, most=15)) == 15  # never above --epochs
    assert again(12, 2, -5.0, [20.0, 20.0], budget) == 3  # past the deadline: the one epoch it must still train
    # the pace is the mean of every epoch, an evaluated one (30 s) too: 15 s, so 6 more fit
    assert again(12, 4, 100.0, [10.0, 10.0, 10.0, 30.0], budget) == 10
    # noise is no reason to move: up to an epoch plus 3% of the budget left unused, the plan stands
    assert again(12, 2, 100.0, [9.0, 9.0], budget) == 12  # 10 s (of 9 + 18) unused
    assert again(12, 2, 100.0, [6.0, 6.0], budget) == 18  # 40 s unused: 16 more fit


def _budgeted(tmp_path, name, monkeypatch, stop_at=None):
    """A digits run whose plan (steps timed at 0.25 s) gives 2 epochs, planned again to 3 after epoch 1;
    ``stop_at``: Ctrl-C as that epoch starts, then resume."""
    from botnet.training import engine

    monkeypatch.setattr(engine, "replan_epochs", lambda planned, done, *args: 3 if done == 1 else planned)
    real_epoch = engine._Loop.train_epoch

    def train_epoch(loop, epoch, *args):
        if epoch == stop_at:
            raise KeyboardInterrupt
        return real_epoch(loop, epoch, *args)

    monkeypatch.setattr(engine._Loop, "train_epoch", train_epoch)
    run_dir = tmp_path / name
    config = TrainConfig(time_budget=0.25, batch_size=64, seed=5, output_dir=str(run_dir))
    if stop_at is None:
        return train(config), run_dir
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(engine._Loop, "train_epoch", real_epoch)
    return train(resume=str(run_dir / "last.pt")), run_dir


def test_a_replanned_run_rebuilds_its_schedule_and_a_resume_follows_it(tmp_path, monkeypatch, steady_steps):
    from botnet.training.optim import warmup_cosine
    from botnet.checkpoints import load_training_state

    steady_steps(0.25)  # 2 epochs of 22 steps fit the 15 s (as in test_classification's budget test)
    whole, whole_dir = _budgeted(tmp_path, "whole", monkeypatch)
    assert whole["plan"]["epochs"] == 2 and whole["epochs"] == 3
    assert [(r["after_epoch"], r["epochs"]) for r in whole["plan"]["replans"]] == [(1, 3)]
    assert json.loads((whole_dir / "config.json").read_text())["epochs"] == 3
    assert "re-planned: 3 epochs instead of 2" in (whole_dir / "train.log").read_text()
    # the rate: epoch 1 on the 2-epoch cosine, then the 3-epoch one from the step reached, ending near zero
    lr = json.loads((whole_dir / "config.json").read_text())["lr"]
    rows = list(csv.DictReader(open(whole_dir / "metrics.csv")))
    warmup = max(1, round(json.loads((whole_dir / "config.json").read_text())["warmup_epochs"] * 22))
    expected = [warmup_cosine(warmup, 44)(22), warmup_cosine(warmup, 66)(44), warmup_cosine(warmup, 66)(66)]
    assert [float(r["lr"]) for r in rows] == pytest.approx([lr * f for f in expected], rel=1e-4)
    # stopped after epoch 2 and resumed: the re-planned total and schedule are in last.pt, and the run is the same
    resumed, resumed_dir = _budgeted(tmp_path, "resumed", monkeypatch, stop_at=2)
    assert load_training_state(str(resumed_dir / "last.pt")).config["epochs"] == 3
    assert resumed["epochs"] == 3
    with safe_open(str(whole_dir / "model.safetensors"), "pt") as a, safe_open(str(resumed_dir / "model.safetensors"), "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
