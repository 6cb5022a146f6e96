"""Real files the fuzzing tests damage or point commands at, made once per session."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from botnet.data.shapes import ShapesSpec, write_shapes_dataset
from botnet.errors import RunInterrupted
from botnet.models import create_model
from botnet.tasks import TrainConfig, train
from botnet.tasks.detection import DetectConfig, train_detector
from botnet.training import engine


def _stopped_mid_epoch(run_dir: str) -> None:
    """A digits run stopped by Ctrl-C at epoch 1, step 3 of 5: its last.pt holds a step and random states."""
    real_agree, calls = engine._agree, []

    def agree(*args):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return real_agree(*args)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(RunInterrupted):
        patch.setattr(engine, "_agree", agree)
        train(TrainConfig(epochs=1, batch_size=256, output_dir=run_dir))


@pytest.fixture(scope="session")
def real_files(tmp_path_factory):
    """A one-epoch digits run, a one-epoch detection run, ResNet-layout weights, images, data folders."""
    root = tmp_path_factory.mktemp("real")
    train(TrainConfig(epochs=1, batch_size=256, output_dir=str(root / "cls")))
    _stopped_mid_epoch(str(root / "cls_mid"))
    train_detector(DetectConfig(shapes_train_images=4, shapes_val_images=1, epochs=1, output_dir=str(root / "det")))
    weights = create_model("botnet_tiny", num_classes=10).state_dict()
    torch.save(weights, root / "resnet.pth")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(root / "resnet.safetensors"))
    Image.new("L", (8, 8), 128).save(root / "digit.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / "folder" / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
                    root / "folder" / split / name / f"{i}.png"
                )
    write_shapes_dataset(str(root / "coco"), ShapesSpec(train_images=3, val_images=2))
    return {
        "cls_run": str(root / "cls"),
        "cls_last": str(root / "cls" / "last.pt"),
        "cls_mid_run": str(root / "cls_mid"),
        "cls_weights": str(root / "cls" / "model.safetensors"),
        "det_last": str(root / "det" / "last.pt"),
        "det_weights": str(root / "det" / "model.safetensors"),
        "resnet_pth": str(root / "resnet.pth"),
        "resnet_safetensors": str(root / "resnet.safetensors"),
        "image": str(root / "digit.png"),
        "broken_image": str(root / "broken.png"),
        "folder": str(root / "folder"),
        "coco": str(root / "coco"),
    }
