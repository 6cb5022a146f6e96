"""Defaults fitted to the data: the folder profile, the rules, and a run that records why."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.transforms import v2

from botnet.cli import main
from botnet.data import load_classification_data
from botnet.data.profile import DIGITS_PROFILE, FolderProfile, profile_folder
from botnet.data.shapes import SHAPE_CLASSES, PhotoSpec, write_shapes_folder
from botnet.errors import ConfigError, DatasetError
from botnet.tasks import TrainConfig, train
from botnet.tasks.defaults import fitted_settings
from botnet.tasks.recipes import RECIPES


def _digit_scans(root, per_class=12, size=28, jpeg_rgb=False):
    """The real digits as a folder of grey scans (the first per_class of each class for train, the next for val),
    enlarged to ``size``; ``jpeg_rgb`` stores them as colour JPEGs whose channels are equal."""
    digits = load_digits()
    for split, offset in (("train", 0), ("val", per_class)):
        for label in range(10):
            os.makedirs(root / split / str(label), exist_ok=True)
            indices = np.flatnonzero(digits.target == label)[offset : offset + per_class]
            for i in indices:
                image = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((size, size))
                if jpeg_rgb:
                    image.convert("RGB").save(root / split / str(label) / f"{i}.jpg", quality=90)
                else:
                    image.save(root / split / str(label) / f"{i}.png")
    return root


def _choices(config, profile, world_size=1):
    return {c.setting: c.value for c in fitted_settings(config, profile, world_size)}


def _profile(images, classes, side, grey, long_side=None):
    return FolderProfile(images, images // 5, classes, side, long_side or side, grey, min(images, 256))


def test_profile_reads_counts_size_and_colour(tmp_path):
    write_shapes_folder(str(tmp_path / "photos"), PhotoSpec(train_per_class=5, val_per_class=2, size=40))
    photos = profile_folder(str(tmp_path / "photos"))
    assert (photos.train_images, photos.val_images, photos.classes) == (30, 12, len(SHAPE_CLASSES))
    assert (photos.short_side, photos.long_side, photos.grey, photos.sampled) == (40, 40, False, 30)
    for name, kwargs in (("png", {}), ("jpg", dict(jpeg_rgb=True))):  # grey modes, and grey content stored as colour
        scans = profile_folder(str(_digit_scans(tmp_path / name, per_class=2, size=20, **kwargs)))
        assert (scans.train_images, scans.classes, scans.short_side, scans.grey) == (20, 10, 20, True)
    # one colour image among grey ones makes the folder colour; sizes are medians
    Image.new("RGB", (60, 30), (200, 30, 30)).save(tmp_path / "png" / "train" / "3" / "red.png")
    mixed = profile_folder(str(tmp_path / "png"), sample=1000)
    assert (mixed.train_images, mixed.grey, mixed.short_side, mixed.long_side) == (21, False, 20, 20)
    with pytest.raises(DatasetError, match="does not exist"):
        profile_folder(str(tmp_path / "none"))


def test_the_rules():
    # small colour photos: the case of 4,660 32-px photos in 10 classes
    photos = _choices(TrainConfig(data="x"), _profile(4660, 10, 32, grey=False))
    steps = math.ceil(4660 / RECIPES["small"].settings["batch_size"])
    assert photos == dict(in_chans=3, augment="crop", hflip=True, model="botnet_tiny", img_size=32,
                          workers=0, epochs=min(60, math.ceil(300 * 10 / steps)), time_budget=8.0)  # fmt: skip
    # 8,000 grey 28-px scans: one channel, jitter, no flips; 1,000 steps (fewer than 15 epochs of 125)
    scans = _choices(TrainConfig(data="x"), _profile(8000, 10, 28, grey=True))
    assert scans == dict(in_chans=1, augment="jitter", hflip=False, model="botnet_tiny", img_size=32, workers=0,
                         epochs=8, time_budget=8.0)  # fmt: skip
    # pixels that do not fit in memory are decoded each epoch, by worker processes
    large = _choices(TrainConfig(data="x"), _profile(1_281_167, 1000, 375, False, 500))
    assert large["workers"] == min(4, os.cpu_count()) and scans["workers"] == 0
    # sizes are clamped to the model's range; models follow size and count
    assert _choices(TrainConfig(data="x"), _profile(500, 2, 8, grey=True))["img_size"] == 24
    assert _choices(TrainConfig(data="x"), _profile(1000, 30, 28, grey=True))["epochs"] == math.ceil(30 * 30 / 16)
    assert _choices(TrainConfig(data="x"), _profile(300, 30, 28, grey=True))["epochs"] == 60  # the most
    wide = _choices(TrainConfig(data="x"), _profile(50_000, 100, 32, grey=False))
    assert wide["model"] == "botnet_tiny" and wide["model_overrides"] == dict(width_multiplier=0.5)
    assert wide["epochs"] == math.ceil(300 * 100 / math.ceil(50_000 / 64))
    assert _choices(TrainConfig(data="x"), _profile(3000, 5, 120, False))["model"] == "botnet_mini"
    assert _choices(TrainConfig(data="x"), _profile(3000, 5, 120, False))["img_size"] == 128
    assert _choices(TrainConfig(data="x"), _profile(5000, 5, 500, False))["img_size"] == 160  # botnet_mini's largest
    imagenet = _choices(TrainConfig(data="x"), _profile(1_281_167, 1000, 375, False, 500))
    assert (imagenet["model"], imagenet["img_size"], imagenet["epochs"]) == ("botnet50", 224, 15)
    assert _choices(TrainConfig(data="x"), _profile(100_000, 1000, 375, False))["epochs"] == 60  # 100 per class
    # the schedule follows the global batch
    assert _choices(TrainConfig(data="x", batch_size=16), _profile(4660, 10, 32, False), world_size=4)["epochs"] == photos["epochs"]
    # the bundled digits: the settings the demo always had
    assert _choices(TrainConfig(), DIGITS_PROFILE) == dict(
        in_chans=1, augment="jitter", hflip=False, model="botnet_tiny", img_size=24, workers=0, epochs=15,
        time_budget=8.0,
    )


def test_given_settings_are_kept():
    profile = _profile(4660, 10, 32, grey=False)
    given = TrainConfig(data="x", model="botnet50", img_size=64, epochs=3, augment="jitter", in_chans=3, hflip=True, workers=1)
    assert _choices(given, profile) == {}
    # the model's own range bounds the size; a recipe or weights keep their schedule
    assert _choices(TrainConfig(data="x", model="botnet_mini"), profile)["img_size"] == 96
    assert "epochs" not in _choices(TrainConfig(data="x", recipe="paper"), profile)
    assert "epochs" not in _choices(TrainConfig(data="x", time_budget=5.0), profile)
    pretrained = _choices(TrainConfig(data="x", model="botnet26t_256", pretrained="w.safetensors"), profile)
    assert pretrained["img_size"] == 256 and "epochs" not in pretrained and "model" not in pretrained
    # --augment jitter turns the flips off unless asked
    assert _choices(TrainConfig(data="x", augment="jitter"), profile)["hflip"] is False


def test_each_default_is_decided_in_one_place():
    """The library's own defaults are the default recipe's and the fitted rules': loading data or building the
    augmentation without a setting gives what a run without that setting trains with."""
    import inspect

    from botnet.data.transforms import TrainAugment, train_transform

    small = RECIPES["small"].settings["crop_scale_min"]
    for function in (load_classification_data, train_transform, TrainAugment):
        assert inspect.signature(function).parameters["crop_scale_min"].default == small, function
    digits = TrainConfig().resolve(1)
    fitted = {c.setting: c.value for c in fitted_settings(TrainConfig(), DIGITS_PROFILE)}
    assert (digits.augment, digits.hflip) == (fitted["augment"], fitted["hflip"]) == ("jitter", False)
    data = load_classification_data(None, 24)
    assert not data.crop and not data.train.transform.hflip
    assert data.train.transform.crop_scale_min == digits.crop_scale_min == small


def test_augment_and_channels_shape_the_pipelines(tmp_path):
    def kinds(transform):
        return {type(t) for t in transform.transforms}

    folder = str(_digit_scans(tmp_path / "scans", per_class=2))
    jitter = load_classification_data(folder, 32, in_chans=1, augment="jitter", hflip=False)
    (image, params), _ = jitter.train[0]
    assert jitter.in_chans == 1 and not jitter.crop and image.shape == (1, 32, 32) and params[4] == 0  # no flip
    assert not jitter.train.transform.crop and not jitter.train.transform.hflip
    assert v2.CenterCrop not in kinds(jitter.val.transform)
    crop = load_classification_data(folder, 32)
    (image, params), _ = crop.train[0]
    assert crop.in_chans == 3 and crop.crop and image.shape == (3, 32, 32) and params[:4].tolist() == [0, 0, 0, 1]
    assert crop.train.transform.crop and crop.train.transform.hflip
    assert v2.CenterCrop in kinds(crop.val.transform)
    with pytest.raises(ConfigError, match="unknown augment 'mixup'"):
        TrainConfig(augment="mixup").resolve(1)
    with pytest.raises(ConfigError, match="digits are grey"):
        TrainConfig(in_chans=3).resolve(1)
    with pytest.raises(ConfigError, match="crop_scale_min is a fraction"):
        TrainConfig(crop_scale_min=1.5).resolve(1)
    assert main(["train", "--crop-scale-min", "0", "--output-dir", str(tmp_path / "x")]) == 2


def test_a_run_on_grey_scans_fits_records_and_predicts_grey(tmp_path, capsys):
    folder = _digit_scans(tmp_path / "scans", per_class=6, size=20)
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--epochs", "1", "--output-dir", str(run_dir)]) == 0
    with open(run_dir / "summary.json") as f:
        summary = json.load(f)
    fitted = {c["setting"]: c for c in summary["fitted_defaults"]["choices"]}
    assert {k: c["value"] for k, c in fitted.items()} == dict(
        in_chans=1, augment="jitter", hflip=False, model="botnet_tiny", img_size=24, workers=0
    )
    assert all(c["why"] for c in fitted.values()) and "60 training images in 10 classes, grey" in summary["fitted_defaults"]["data"]
    with open(run_dir / "config.json") as f:
        config = json.load(f)
    assert (config["in_chans"], config["augment"], config["hflip"], config["epochs"]) == (1, "jitter", False, 1)
    with open(run_dir / "train.log") as f:
        assert "augment = jitter: grey images" in f.read()
    # the model reads one channel; predict reads a colour file grey
    colour = tmp_path / "seven.png"
    Image.open(folder / "val" / "7" / os.listdir(folder / "val" / "7")[0]).convert("RGB").save(colour)
    assert main(["predict", "--checkpoint", str(run_dir / "model.safetensors"), str(colour), "--json"]) == 0
    out = capsys.readouterr().out
    assert len(json.loads(out[out.index("[") :])[0]["predictions"]) == 5
    # a resumed (extended) run keeps the record and chooses nothing again
    summary = train(resume=str(run_dir / "last.pt"), epochs=2)
    assert summary["epochs"] == 2 and summary["fitted_defaults"]["choices"] == list(fitted.values())


def test_make_data_is_deterministic(tmp_path, capsys):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main(["make-data", str(tmp_path / name), "--train-per-class", "2", "--val-per-class", "1", "--seed", seed]) == 0
    assert "wrote 12 training and 6 held-out images" in capsys.readouterr().out
    image = "train/star/00001.png"
    a, b, c = (np.asarray(Image.open(tmp_path / n / image)) for n in "abc")
    assert a.shape == (32, 32, 3) and (a == b).all() and not (a == c).all()
    assert main(["make-data", str(tmp_path / "a")]) == 2
    assert "already holds" in capsys.readouterr().err
