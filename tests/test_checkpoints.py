"""botnet.checkpoints: a run's file is read once, checked, and refused by the commands of the other task."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from botnet.checkpoints import ClassifierMeta, TrainState, open_checkpoint, save_training_state, save_weights
from botnet.cli import main
from botnet.errors import CheckpointError
from botnet.explain import explain_checkpoint
from botnet.models import create_model
from botnet.tasks.classification import load_model
from botnet.tasks.detection import load_detector

DETECTOR = os.path.join(os.path.dirname(__file__), "training", "fixtures", "detection-v1-model.safetensors")


def _classifier():
    model = create_model("botnet_tiny", num_classes=3, img_size=32)
    meta = ClassifierMeta(model="botnet_tiny", num_classes=3, in_chans=3, img_size=32, classes=["a", "b", "c"],
                          mean=[0.5] * 3, std=[0.25] * 3, crop=False, dataset="made here")  # fmt: skip
    return model, meta


def _last_pt(path, model, record, **changes):
    fields = dict(config={}, meta=record.as_dict(), epoch=1, model=model.state_dict(), optimizer={}, scheduler={},
                  metrics=[], wall_seconds=1.0, train_seconds=1.0, train_images=8)  # fmt: skip
    save_training_state(str(path), TrainState(**{**fields, **changes}))
    return str(path)


def test_a_file_of_the_other_task_is_refused_naming_the_commands_that_read_it(tmp_path, capsys):
    model, meta = _classifier()
    classifier = str(tmp_path / "model.safetensors")
    save_weights(classifier, model, meta.as_dict())
    with pytest.raises(CheckpointError, match="holds a classification model, not a detection one; use `botnet eval`"):
        load_detector(classifier)
    with pytest.raises(CheckpointError, match="holds a detection model, not a classification one; use `botnet detect eval`"):
        load_model(DETECTOR)
    assert main(["detect", "eval", "--checkpoint", classifier]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "`botnet eval` / `botnet predict`" in err, err


def test_a_last_pt_opens_to_the_weights_the_run_saves(tmp_path):
    """Where a run averaged its weights, the averaged ones are its model (as model.safetensors holds)."""
    model, meta = _classifier()
    plain = open_checkpoint(_last_pt(tmp_path / "plain.pt", model, meta), "classification")
    assert plain.task == "classification" and plain.meta == meta and plain.training.epoch == 1
    assert all(torch.equal(plain.weights[k], v) for k, v in model.state_dict().items())
    averaged = {f"module.{k}": v + 1 for k, v in model.state_dict().items() if v.is_floating_point()}
    ema = open_checkpoint(_last_pt(tmp_path / "ema.pt", model, meta, ema={**averaged, "n_averaged": torch.tensor(3)}))
    assert ema.weights.keys() == {k[len("module.") :] for k in averaged}
    assert all(torch.equal(ema.weights[k[len("module.") :]], v) for k, v in averaged.items())


def test_an_unknown_task_or_a_damaged_record_is_named(tmp_path):
    model, meta = _classifier()
    with pytest.raises(CheckpointError, match="unknown task 'segmentation'"):
        open_checkpoint(_last_pt(tmp_path / "a.pt", model, meta, meta={**meta.as_dict(), "task": "segmentation"}))
    with pytest.raises(CheckpointError, match="metadata field 'classes' is damaged"):
        open_checkpoint(_last_pt(tmp_path / "b.pt", model, meta, meta={**meta.as_dict(), "classes": "abc"}))


def test_attention_reads_a_last_pt_once(tmp_path, monkeypatch):
    """``botnet attention`` finds the task and rebuilds the model from one read of the file."""
    model, meta = _classifier()
    path = _last_pt(tmp_path / "last.pt", model, meta)
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    real_load, loads = torch.load, []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args[0]) or real_load(*args, **kwargs))
    result = explain_checkpoint(path, str(image), str(tmp_path / "maps.png"))
    assert loads == [path] and os.path.isfile(result["maps"])
