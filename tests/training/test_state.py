"""last.pt and the weights' metadata: one definition each, checked on reading, and files written by the
previous version of the code (tests/training/fixtures, format 1) still resume and load."""

import csv
import dataclasses
import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

from botnet.checkpoints import TRAIN_STATE_FORMAT, TrainState, load_training_state, read_metadata, save_training_state
from botnet.cli import main
from botnet.errors import CheckpointError
from botnet.tasks import TrainConfig, train
from botnet.tasks.detection import load_detector

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# What the version-1 classification file was written from: the digits, botnet_tiny at a quarter width,
# stopped by Ctrl-C at epoch 1, step 5 of 44.
V1_SETTINGS = dict(epochs=2, batch_size=32, model_overrides=dict(width_multiplier=0.25))


def _state(**changes) -> TrainState:
    fields = dict(config={"epochs": 1}, meta={"task": "classification"}, epoch=1, model={"w": torch.arange(3.0)},
                  optimizer={"state": {}}, scheduler={"last_epoch": 3}, metrics=[{"epoch": 1, "train_loss": 0.5}],
                  wall_seconds=1.5, train_seconds=1.0, train_images=64)  # fmt: skip
    return TrainState(**{**fields, **changes})


def test_a_state_reads_back_as_written(tmp_path):
    path = str(tmp_path / "last.pt")
    state = _state(step=2, rng=[{"cpu": torch.get_rng_state()}], partial={"train_loss": 3.0, "images": 8})
    save_training_state(path, state)
    loaded = load_training_state(path)
    for field in dataclasses.fields(TrainState):
        a, b = getattr(state, field.name), getattr(loaded, field.name)
        assert str(a) == str(b), field.name


@pytest.mark.parametrize(
    "field, value",
    [("epoch", "one"), ("model", {"w": [1.0]}), ("metrics", {"epoch": 1}), ("rng", [{"cpu": 3}]), ("world_size", 1.5)],
)
def test_a_damaged_field_is_named(tmp_path, field, value):
    path = str(tmp_path / "last.pt")
    raw = {"format": TRAIN_STATE_FORMAT, **dataclasses.asdict(_state()), field: value}
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=f"field {field!r} is damaged"):
        load_training_state(path)


def test_a_missing_required_field_is_named_and_optional_ones_default(tmp_path):
    path = str(tmp_path / "last.pt")
    raw = {"format": TRAIN_STATE_FORMAT, **dataclasses.asdict(_state())}
    for optional in ("step", "partial", "rng", "world_size", "ema", "scaler"):
        del raw[optional]  # files written before these existed
    torch.save(raw, path)
    loaded = load_training_state(path)
    assert (loaded.step, loaded.world_size, loaded.ema, loaded.rng) == (0, 1, None, [])
    del raw["train_images"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="has no 'train_images'"):
        load_training_state(path)


def test_a_version_1_checkpoint_resumes_to_the_uninterrupted_run(tmp_path):
    """The last.pt written by the previous version (stopped mid-epoch) continues with today's code as a run
    trained without the stop does. Bitwise on the CPU the fixture was written on; another CPU's kernels round
    its first 5 steps differently (measured on an AMD EPYC: epoch 1's training loss 7e-5 apart, relative), and
    training amplifies that, so elsewhere the epoch that holds the stop is compared to 5e-4."""
    run = tmp_path / "old"
    run.mkdir()
    shutil.copy(os.path.join(FIXTURES, "classification-v1-last.pt"), run / "last.pt")
    state = load_training_state(str(run / "last.pt"))
    assert (state.epoch, state.step, state.task) == (0, 5, "classification") and "task" not in state.meta
    assert "skip_bad_images" in state.config  # a setting renamed since (skip_bad): read under its new name
    train(resume=str(run / "last.pt"))
    train(TrainConfig(**V1_SETTINGS, output_dir=str(tmp_path / "whole")))
    resumed, whole = load_file(str(run / "model.safetensors")), load_file(str(tmp_path / "whole" / "model.safetensors"))
    assert resumed.keys() == whole.keys()
    rows = [list(csv.DictReader(open(folder / "metrics.csv"))) for folder in (run, tmp_path / "whole")]
    assert len(rows[0]) == len(rows[1]) == V1_SETTINGS["epochs"]
    if not all(torch.equal(resumed[key], whole[key]) for key in whole):  # not the fixture's CPU
        assert float(rows[0][0]["train_loss"]) == pytest.approx(float(rows[1][0]["train_loss"]), rel=5e-4)
    assert read_metadata(str(run / "model.safetensors"))["task"] == "classification"


def test_a_version_1_detector_loads_with_todays_setting_names():
    """Version 1 saved the detector settings in create_detector's names (kind, out_channels, rpn_*); they load
    as DetectConfig's, and the rebuilt detector computes what version 1's did."""
    model, meta = load_detector(os.path.join(FIXTURES, "detection-v1-model.safetensors"))
    settings = meta["settings"]
    assert (settings["detector"], settings["fpn_channels"], settings["proposals"]) == ("maskrcnn", 16, [600, 300, 300, 150])
    assert "kind" not in settings and settings["model_overrides"] == {"width_multiplier": 0.25}
    assert meta["classes"] and "class_names" not in meta  # a field renamed since, read under its new name
    with open(os.path.join(FIXTURES, "detection-v1-outputs.json")) as f:
        expected = json.load(f)
    model.roi_heads.score_thresh = 0.0
    torch.manual_seed(0)
    image = torch.rand(3, 128, 160)
    with torch.no_grad():
        output = model([image])[0]
    torch.testing.assert_close(output["boxes"][:10], torch.tensor(expected["boxes"]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output["scores"][:10], torch.tensor(expected["scores"]), atol=1e-5, rtol=1e-4)
    assert output["labels"][:10].tolist() == expected["labels"]


def test_atomic_save_survives_interrupted_write(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_training_state(path, _state(epoch=1, model=dict(w=torch.arange(4.0))))
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(path, _state(epoch=2, model=dict(w=torch.zeros(4))))
    monkeypatch.setattr(torch, "save", real_save)
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 1 and torch.equal(saved["model"]["w"], torch.arange(4.0))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_pickle_with_payload_is_refused(tmp_path, capsys):
    _Payload.marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.pt")
    with open(path, "wb") as f:
        pickle.dump({"format": "botnet-train-state-1", "model": _Payload()}, f)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_training_state(path)
    assert main(["predict", "--checkpoint", path, "x.png"]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not os.path.exists(_Payload.marker)
