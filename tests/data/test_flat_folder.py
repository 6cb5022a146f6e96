"""Classification folders in the layouts found: DIR/CLASS/* with a held-out val share, train/ + val/
(valid/, validation/), train/ + test/; the held-out list a run writes and `botnet eval` scores."""

import hashlib
import json
import os
import re
import shutil
import zlib

import numpy as np
import pytest
from PIL import Image

from botnet.cli import main
from botnet.data import load_classification_data
from botnet.data.folder import find_folder_layout, load_image_folder
from botnet.data.holdout import HELDOUT_FILE, read_heldout, write_heldout
from botnet.errors import DatasetError
from botnet.tasks import TrainConfig, evaluate_checkpoint, train

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220), "lonely": (200, 200, 40)}
FRAME = re.compile(r"frame_(\d+)\.png$")


def _picture(colour, seed: int, size: int = 16) -> Image.Image:
    """A small picture of ``colour`` with a noise pattern of its own (so that no two seeds give the same bytes)."""
    noise = np.random.default_rng(seed).integers(-30, 30, (size, size, 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))


def _flat_folder(root, frames: int = 20):
    """red: 12 photos plus two byte-identical copies of one; green: ``frames`` numbered frames of a sequence;
    blue: 10 photos in two subfolders; lonely: one photo."""
    for name in COLOURS:
        os.makedirs(root / name)
    for i in range(12):
        _picture(COLOURS["red"], i).save(root / "red" / f"shot_{chr(97 + i)}.png")
    for copy in ("copy_of_a.png", "again_a.png"):
        shutil.copyfile(root / "red" / "shot_a.png", root / "red" / copy)
    for i in range(frames):
        _picture(COLOURS["green"], 100 + i).save(root / "green" / f"frame_{1000 + i:06d}.png")
    for i in range(10):
        os.makedirs(root / "blue" / f"day_{'ab'[i % 2]}", exist_ok=True)
        _picture(COLOURS["blue"], 200 + i).save(root / "blue" / f"day_{'ab'[i % 2]}" / f"img_{chr(97 + i)}.png")
    _picture(COLOURS["lonely"], 300).save(root / "lonely" / "only.png")
    return root


def _split_folder(root, splits, per_class: int = 8):
    for split in splits:
        for name in ("red", "blue"):
            os.makedirs(root / split / name)
            for i in range(per_class):
                seed = zlib.crc32(f"{split}/{name}/{i}".encode())
                _picture(COLOURS[name], seed).save(root / split / name / f"im_{chr(97 + i)}.png")
    return root


def _relative(split, root) -> set[str]:
    return {os.path.relpath(path, root) for path, _ in split.samples}


def _by_class(names) -> dict[str, set[str]]:
    classes: dict[str, set[str]] = {}
    for name in names:
        classes.setdefault(name.split(os.sep)[0], set()).add(name)
    return classes


def test_flat_folder_holds_out_a_deterministic_stratified_share(tmp_path):
    root = _flat_folder(tmp_path / "photos")
    first = load_image_folder(str(root))
    again = load_image_folder(str(root))
    moved = load_image_folder(str(shutil.copytree(root, tmp_path / "elsewhere")))
    assert first.layout.flat and first.train.classes == ["blue", "green", "lonely", "red"]
    assert first.heldout and first.heldout == again.heldout == moved.heldout  # names and bytes decide, not the path
    assert _relative(first.val, root) == first.heldout
    train = _relative(first.train, root)
    assert not train & first.heldout and len(train) + len(first.heldout) == 14 + 20 + 10 + 1
    held, kept = _by_class(first.heldout), _by_class(train)
    for name, total in (("red", 14), ("green", 20), ("blue", 10)):
        assert held.get(name) and kept.get(name), f"class {name} must be on both sides"
        assert 0.05 <= len(held[name]) / total <= 0.3, (name, len(held[name]))
    assert "lonely" not in held and kept["lonely"] == {os.path.join("lonely", "only.png")}
    # labels follow the class folders on both sides
    for split in (first.train, first.val):
        for path, label in split.samples:
            assert os.path.relpath(path, root).split(os.sep)[0] == split.classes[label]


def test_copies_stay_together_and_frames_are_held_out_in_blocks(tmp_path):
    root = _flat_folder(tmp_path / "photos", frames=40)
    folder = load_image_folder(str(root))
    copies = {os.path.join("red", n) for n in ("shot_a.png", "copy_of_a.png", "again_a.png")}
    assert copies <= folder.heldout or not copies & folder.heldout
    numbers = sorted(int(FRAME.search(n).group(1)) for n in folder.heldout if n.startswith("green"))
    assert numbers, "some frames must be held out"
    runs = [[numbers[0]]]
    for previous, number in zip(numbers, numbers[1:]):
        runs.append([number]) if number != previous + 1 else runs[-1].append(number)
    assert all(len(run) >= 2 for run in runs), f"frames held out one by one: {numbers}"
    assert len(runs) < len(numbers)


def test_the_report_says_what_was_found_held_and_left_out(tmp_path):
    root = _flat_folder(tmp_path / "photos")
    (root / "notes.txt").write_text("not an image")
    data = load_classification_data(str(root), 24)
    report = "\n".join(data.report)
    assert "DIR/CLASS/*" in report and "classes: 4 (blue, green, lonely, red)" in report
    assert f"images: {len(data.train)} train, {len(data.val)} val" in report
    assert f"held out {len(data.heldout)} of 45 images" in report and "2 byte-identical copies kept together" in report
    assert "class 'lonely' kept whole in training: it has 1 image" in report
    assert "left out 1 file(s) directly in" in report and "notes.txt" in report


@pytest.mark.parametrize("val", ["val", "valid", "Validation", "VAL"])
def test_a_val_folder_by_any_of_its_names_is_used_as_it_is(tmp_path, val):
    root = _split_folder(tmp_path / "data", ("Train", val))
    data = load_classification_data(str(root), 24)
    assert data.heldout is None and len(data.train) == len(data.val) == 16
    assert {os.path.dirname(os.path.dirname(p)) for p, _ in data.val.samples} == {str(root / val)}


def test_train_and_test_without_val_hold_out_val_and_keep_test(tmp_path):
    root = _split_folder(tmp_path / "data", ("train", "test"))
    data = load_classification_data(str(root), 24)
    assert data.heldout and all(name.startswith("train" + os.sep) for name in data.heldout)
    assert len(data.train) + len(data.val) == 16 and len(data.val) == len(data.heldout)
    assert not any(os.sep + "test" + os.sep in path for path, _ in data.train.samples + data.val.samples)
    assert any("kept for `botnet eval --split test`" in line and "(16 images)" in line for line in data.report)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda r: _split_folder(r, ("train", "val")) and os.makedirs(r / "cat"),
            r"mixes split folders \(train, val\) with class folders \(cat\)",
        ),
        (
            lambda r: os.makedirs(r) or _picture(COLOURS["red"], 1).save(r / "a.png"),
            "has no class folders: put each class's images in",
        ),
        (lambda r: _split_folder(r, ("val", "test")), r"has test/, val/ but no train/ folder"),
        (lambda r: _split_folder(r, ("train", "val", "valid")), r"has 2 val folders \(val, valid\): keep one"),
        (lambda r: _split_folder(r / "wrapper", ("train", "val")), r"one class folder \(wrapper\).*--data .*wrapper"),
        (lambda r: [_picture(COLOURS["red"], 1).save(p) for p in _mkdirs(r, "a", "b")], "no class has two distinct images"),
    ],
)
def test_unusable_layouts_are_refused_in_one_line(tmp_path, make, match):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DatasetError, match=match) as error:
        load_classification_data(str(root), 24)
    assert len(str(error.value).splitlines()) == 1
    if "no class" not in match:
        with pytest.raises(DatasetError, match=match):
            find_folder_layout(str(root))


def _mkdirs(root, *names):
    paths = []
    for name in names:
        os.makedirs(root / name)
        paths.append(root / name / "one.png")
    return paths


def _digits_folder(root, per_class: int = 30):
    """scikit-learn's real handwritten digits (8x8 scans, scaled up to 16 px) as a flat class folder, with one
    scan saved twice under another name."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for image, target in zip(digits.images, digits.target):
        if counts.get(target, 0) >= per_class:
            continue
        counts[target] = counts.get(target, 0) + 1
        os.makedirs(root / f"digit_{target}", exist_ok=True)
        picture = Image.fromarray((image * (255 / 16)).round().astype(np.uint8)).resize((16, 16), Image.NEAREST)
        picture.save(root / f"digit_{target}" / f"scan{counts[target]:03d}.png")
    shutil.copyfile(root / "digit_3" / "scan001.png", root / "digit_3" / "duplicate.png")
    return root


def _contents(paths) -> set[tuple[str, str]]:
    """(class folder, digest of the bytes) of each file."""
    return {(os.path.basename(os.path.dirname(p)), hashlib.sha1(open(p, "rb").read()).hexdigest()) for p in paths}


def test_real_digits_as_a_flat_folder_train_and_eval_the_held_out_images(tmp_path, capsys):
    root = _digits_folder(tmp_path / "digits")
    run_dir = tmp_path / "run"
    summary = train(TrainConfig(data=str(root), epochs=1, batch_size=16, output_dir=str(run_dir)))
    listed = read_heldout(str(run_dir / HELDOUT_FILE))
    data = load_classification_data(str(root), 24)
    assert listed == data.heldout and summary["val_images"] == len(listed)
    assert 0.1 <= len(listed) / 301 <= 0.2 and len(_by_class(listed)) == 10
    every = [p for p, _ in data.train.samples + data.val.samples]
    assert not _contents(root / n for n in listed) & _contents(p for p, _ in data.train.samples), (
        "a byte-identical copy of a training image was held out"
    )
    copies = len(every) - len(_contents(every))  # the one made above, and any the scans have of their own
    with open(run_dir / "train.log") as f:
        log = f.read()
    assert f"held out {len(listed)} of 301 images" in log and f"{copies} byte-identical copies kept together" in log

    checkpoint = str(run_dir / "model.safetensors")
    result, _, source = evaluate_checkpoint(checkpoint)
    assert result.count == len(listed) and HELDOUT_FILE in source
    assert result.top1 == pytest.approx(summary["val_top1"], abs=1e-3)
    # eval scores the listed images, not a split worked out again
    dropped = sorted(listed)[0]
    (run_dir / HELDOUT_FILE).write_text("".join(f"{n}\n" for n in sorted(listed - {dropped})))
    assert evaluate_checkpoint(checkpoint, str(root))[0].count == len(listed) - 1
    capsys.readouterr()  # the training log
    assert main(["eval", "--checkpoint", checkpoint, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == len(listed) - 1
    # another flat folder given with --data is scored whole; the data has no test split
    assert evaluate_checkpoint(checkpoint, str(shutil.copytree(root, tmp_path / "copy")))[0].count == 301
    assert main(["eval", "--checkpoint", checkpoint, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no test split" in err, err
    # without the list (a copied checkpoint), the same held-out share is worked out again
    os.remove(run_dir / HELDOUT_FILE)
    assert evaluate_checkpoint(checkpoint)[0].count == len(listed)
    (run_dir / HELDOUT_FILE).write_text("digit_3/missing.png\n")
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in .*heldout.txt are missing .*digit_3/missing.png"):
        evaluate_checkpoint(checkpoint)


def test_train_and_test_layout_runs_and_eval_scores_its_test_split(tmp_path, capsys):
    root = _split_folder(tmp_path / "data", ("train", "test"), per_class=10)
    run_dir = tmp_path / "run"
    summary = train(TrainConfig(data=str(root), epochs=1, batch_size=4, output_dir=str(run_dir)))
    listed = read_heldout(str(run_dir / HELDOUT_FILE))
    assert listed and all(n.startswith("train" + os.sep) for n in listed) and summary["val_images"] == len(listed)
    checkpoint = str(run_dir / "last.pt")
    assert evaluate_checkpoint(checkpoint)[0].count == len(listed)
    result, _, source = evaluate_checkpoint(checkpoint, split="test")
    assert result.count == 20 and source == str(root / "test")
    capsys.readouterr()  # the training log
    assert main(["eval", "--checkpoint", checkpoint, "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 20 and report["split"] == "test"


def test_a_name_that_is_not_utf8_is_split_listed_and_read_back_as_it_is(tmp_path):
    root = _flat_folder(tmp_path / "photos")
    odd = os.path.join(os.fsencode(root / "blue"), b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    _picture(COLOURS["blue"], 999).save(odd, format="PNG")
    data = load_classification_data(str(root), 24)
    seen = {path for path, _ in data.train.samples} | {path for path, _ in data.val.samples}
    assert os.fsdecode(odd) in seen and len(data.val) == len(data.heldout)
    write_heldout(str(tmp_path / "heldout.txt"), data.heldout)
    assert read_heldout(str(tmp_path / "heldout.txt")) == data.heldout
    for line in data.report:
        line.encode("utf-8")  # the log can take it


def test_a_resumed_run_holds_out_what_its_list_says(tmp_path):
    root = _flat_folder(tmp_path / "photos")
    chosen = sorted(load_image_folder(str(root)).heldout)[:1]
    data = load_image_folder(str(root), heldout=set(chosen))  # e.g. images were added since: the list decides
    assert data.heldout == set(chosen) and [os.path.relpath(p, root) for p, _ in data.val.samples] == chosen
    with pytest.raises(DatasetError, match=r"the run's held-out list names 1 image\(s\) no longer in .*: put them "
                                           r"back, or start a new run"):
        load_image_folder(str(root), heldout={"blue/gone.png"})
