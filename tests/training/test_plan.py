"""Every new run is planned from a few timed steps: its precision (where unset), its epochs (with a time
budget) and how long it will take, said before the first step and as it goes."""

import json
import re
import sys

import pytest
import torch

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
