"""botnet ablate: the variants of each study, runs per seed, study.csv / study.png, continuing a stopped study."""

import csv
import json
import os
import shutil
import statistics

import pytest

from botnet.cli import main
from botnet.errors import ConfigError
from botnet.tasks import TrainConfig, train
from botnet.tasks.ablate import fit_study, run_folder, run_study, study_variants
from botnet.tasks.classification import load_model


def test_variants_of_each_study():
    position = study_variants("position", "botnet_tiny")
    assert [v.overrides.get("position_encoding", "relative") for v in position] == [
        "relative", "relative_only", "absolute", "none", "relative",
    ]  # fmt: skip
    assert position[-1].overrides == {"scale_position": False}  # botnet_tiny scales it (the paper's reference code)
    assert study_variants("position", "botnet26t_256")[-1].overrides == {"scale_position": True}  # timm's does not
    placement = [v.overrides["bot_blocks"] for v in study_variants("placement", "botnet50")]
    assert placement == [(0, 0, 0, -1), (0, 0, 1, -1), (0, 0, 0, 0)]
    assert [v.overrides["heads"] for v in study_variants("heads", "botnet50")] == [1, 2, 4, 8]
    with pytest.raises(ConfigError, match="unknown study 'speed'"):
        study_variants("speed", "botnet50")
    with pytest.raises(ConfigError, match="has no BoT blocks"):
        study_variants("heads", "resnet50")


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def baseline_study(tmp_path_factory):
    """The baseline study on the digits: BoTNet against its ResNet, two seeds, one epoch each."""
    out = str(tmp_path_factory.mktemp("study") / "baseline")
    base = fit_study(TrainConfig(epochs=1, batch_size=64), log=_quiet)
    calls = []

    def counted(*args, **kwargs):
        calls.append((args, kwargs))
        return train(*args, **kwargs)

    rows = run_study(base, "baseline", 2, out, counted, log=_quiet)
    return out, rows, calls


def test_study_runs_each_variant_and_seed_and_summarises(baseline_study):
    out, rows, calls = baseline_study
    assert len(calls) == 4
    assert [r["variant"] for r in rows] == ["BoTNet", "ResNet (no BoT blocks)"]
    with open(os.path.join(out, "study.csv")) as f:
        written = list(csv.DictReader(f))
    assert [w["variant"] for w in written] == [r["variant"] for r in rows]
    for row, variant in zip(rows, study_variants("baseline", "botnet_tiny")):
        top1 = []
        for seed in range(2):
            with open(os.path.join(run_folder(out, variant, seed), "summary.json")) as f:
                summary = json.load(f)
            assert summary["model_overrides"] == (json.loads(json.dumps(variant.overrides)) or None)
            top1.append(summary["val_top1"])
        assert row["top1_mean"] == pytest.approx(statistics.fmean(top1), abs=1e-3)
        assert row["top1_std"] == pytest.approx(statistics.stdev(top1), abs=1e-3)
    botnet, resnet = rows
    assert resnet["params"] < botnet["params"] or resnet["gflops"] != botnet["gflops"]  # the BoT blocks are gone
    assert os.path.getsize(os.path.join(out, "study.png")) > 10_000


def test_a_variant_run_rebuilds_as_trained(baseline_study):
    out, _, _ = baseline_study
    resnet = study_variants("baseline", "botnet_tiny")[1]
    model, meta = load_model(os.path.join(run_folder(out, resnet, 0), "model.safetensors"))
    assert meta["model_overrides"]["bot_blocks"] == [0, 0, 0, 0]
    assert not any(type(m).__name__ == "MHSA" for m in model.modules())


def test_a_stopped_study_continues_with_only_what_is_missing(baseline_study, tmp_path):
    out, _, _ = baseline_study
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    variant = study_variants("baseline", "botnet_tiny")[1]
    unstarted = run_folder(copy, variant, 1)
    shutil.rmtree(unstarted)
    os.makedirs(unstarted)
    with open(os.path.join(unstarted, "train.log"), "w") as f:
        f.write("stopped before the first epoch ended\n")
    calls = []
    rows = run_study(fit_study(TrainConfig(epochs=1, batch_size=64), log=_quiet), "baseline", 2, copy,
                     lambda *a, **k: calls.append(k) or train(*a, **k), log=_quiet)  # fmt: skip
    assert len(calls) == 1 and calls[0] == {} and len(rows) == 2
    assert os.path.exists(os.path.join(unstarted, "summary.json"))
    with pytest.raises(ConfigError, match="other settings"):
        run_study(fit_study(TrainConfig(epochs=2, batch_size=64), log=_quiet), "baseline", 2, copy, train, log=_quiet)


def test_a_study_an_earlier_version_wrote_continues_under_today_s_names(baseline_study, tmp_path):
    """Its study.json names a setting renamed since (skip_bad_images), its summaries the held-out metrics by
    their old names (test_top1, ...): nothing is retrained and the table is the same."""
    out, rows, _ = baseline_study
    old = str(tmp_path / "old")
    shutil.copytree(out, old)
    with open(os.path.join(old, "study.json")) as f:
        study = json.load(f)
    study["base"]["skip_bad_images"] = study["base"].pop("skip_bad")
    with open(os.path.join(old, "study.json"), "w") as f:
        json.dump(study, f)
    for variant in study_variants("baseline", "botnet_tiny"):
        for seed in range(2):
            path = os.path.join(run_folder(old, variant, seed), "summary.json")
            with open(path) as f:
                summary = json.load(f)
            renamed = {key.replace("val_", "test_") if key.startswith("val_") else key: v for key, v in summary.items()}
            with open(path, "w") as f:
                json.dump(renamed, f)
    calls = []
    again = run_study(fit_study(TrainConfig(epochs=1, batch_size=64), log=_quiet), "baseline", 2, old,
                      lambda *a, **k: calls.append(k), log=_quiet)  # fmt: skip
    assert not calls
    assert [(r["variant"], r["top1_mean"], r["top1_std"]) for r in again] == [
        (r["variant"], r["top1_mean"], r["top1_std"]) for r in rows
    ]


def test_cli_ablate_prints_the_table(baseline_study, capsys):
    out, rows, _ = baseline_study
    assert main(["ablate", "--study", "baseline", "--seeds", "2", "--epochs", "1", "--batch-size", "64",
                 "--output-dir", out]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "ResNet (no BoT blocks)" in printed and f"{rows[0]['top1_mean']:6.2f}" in printed


def test_a_study_time_budget_is_shared_by_its_runs_and_seeds_train_alike(tmp_path, steady_steps):
    out = str(tmp_path / "budget")
    steady_steps(0.25)  # a digits epoch "takes" 6 s: 2 and a fraction fit in each run's 15 s
    run_study(fit_study(TrainConfig(batch_size=64, time_budget=1.0), log=_quiet), "baseline", 2, out, train, log=_quiet)
    for variant in study_variants("baseline", "botnet_tiny"):
        summaries = []
        for seed in range(2):
            with open(os.path.join(run_folder(out, variant, seed), "summary.json")) as f:
                summaries.append(json.load(f))
        first, second = summaries
        assert first["plan"]["budget_seconds"] == pytest.approx(1.0 * 60 / 4)
        assert second["plan"]["budget_seconds"] is None and second["steps"] == first["steps"] == first["plan"]["steps"]
        assert second["epochs"] == first["epochs"] >= 2
    assert main(["ablate", "--study", "baseline", "--time-budget", "1", "--epochs", "2", "--output-dir", out]) == 2
