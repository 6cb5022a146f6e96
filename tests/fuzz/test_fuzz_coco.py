"""Generated COCO annotation files, valid ones made bad in every way: missing fields, wrong types, NaN and huge
numbers, negative and out-of-image boxes, bad polygons and RLE (compressed strings included: pycocotools reads
a malformed one out of bounds), duplicate ids. Each ends in our own error, or in a dataset whose every item
loads and whose ground truth pycocotools can score."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from fuzzing import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from botnet.data.coco import CocoDetection
from botnet.data.detection_profile import profile_annotations
from botnet.detection.metrics import coco_metrics, detections_to_coco
from botnet.errors import BotnetError
from botnet.tasks.detection import DetectConfig
from botnet.tasks.detection_defaults import fit_detection_defaults

SIZES = {1: (40, 30), 2: (20, 16), 3: (12, 12)}  # image id -> (width, height)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco_images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 20), dtype=np.uint8)).save(folder / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).convert("P").save(folder / "c.png")
    return str(folder)


def _valid() -> dict:
    mask = np.zeros((16, 20), dtype=np.uint8, order="F")
    mask[3:9, 4:15] = 1
    compressed = mask_utils.encode(mask)
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.jpg", "width": 20, "height": 16},
            {"id": 3, "file_name": "c.png"},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8],
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [20.5, 10, 15, 15],
             "segmentation": [[20.5, 10, 35.5, 10, 28, 25]], "area": 112.5},
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [4, 3, 11, 6],
             "segmentation": {"size": [16, 20], "counts": compressed["counts"].decode()}},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 16], "iscrowd": 1,
             "segmentation": {"size": [16, 20], "counts": [0, 320]}},
        ],
    }  # fmt: skip


RLE_ALPHABET = "".join(chr(c) for c in range(48, 112))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.sampled_from([0, 1, -1, 2, 5, 16, 20, 30, 40, 320, 600, 2**31, 2**32 + 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.text(RLE_ALPHABET, max_size=12),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=10,
)

points = st.lists(st.one_of(st.floats(-50, 80), st.sampled_from([0, 1e12, -1e12, 12.5])), min_size=0, max_size=14)


@st.composite
def annotations(draw):
    """An annotation with plausible fields, each of which may be bad."""
    ann = {
        "id": draw(st.integers(1, 12) | st.sampled_from([None, "7", 1.5])),
        "image_id": draw(st.sampled_from([1, 2, 3, 4, "1"])),
        "category_id": draw(st.sampled_from([1, 5, 9, None, "1"])),
        "bbox": draw(st.lists(st.floats(-60, 90) | st.sampled_from([0, math.nan, math.inf]), min_size=3, max_size=5)),
    }
    kind = draw(st.sampled_from(["polygon", "polygons", "rle", "compressed", "none", "random"]))
    height, width = draw(st.sampled_from([(30, 40), (16, 20), (12, 12), (5, 5), (0, 3)]))
    if kind == "polygon":
        ann["segmentation"] = [draw(points)]
    elif kind == "polygons":
        ann["segmentation"] = draw(st.lists(points, max_size=3))
    elif kind == "rle":
        counts = draw(st.lists(st.integers(-3, 2 * height * width + 2), max_size=6))
        if draw(st.booleans()) and height * width:
            counts = counts + [max(0, height * width - sum(counts))] if sum(counts) < height * width else counts
        ann["segmentation"] = {"size": [height, width], "counts": counts}
    elif kind == "compressed":
        ann["segmentation"] = {"size": [height, width], "counts": draw(st.text(RLE_ALPHABET, max_size=12))}
    elif kind == "random":
        ann["segmentation"] = draw(json_values)
    for key in ("iscrowd", "area"):
        if draw(st.booleans()):
            ann[key] = draw(st.sampled_from([0, 1, 2, True, -1.0, 12.5, math.nan, "0", None]))
    return ann


def _paths(tree, prefix=()):
    yield prefix
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _paths(value, (*prefix, index))


@st.composite
def annotation_files(draw):
    """A valid file with a few random edits: delete, replace, duplicate, or add a plausible bad annotation."""
    data = _valid()
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["delete", "replace", "duplicate", "add", "add"]))
        if op == "add":
            data.setdefault("annotations", [])
            if isinstance(data["annotations"], list):
                data["annotations"].append(draw(annotations()))
            continue
        path = draw(st.sampled_from(list(_paths(data))[1:] or [()]))
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if op == "delete":
            del parent[path[-1]]
        elif op == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    if draw(st.integers(0, 19)) == 0:
        data = draw(json_values)
    return data


def _check_dataset(dataset: CocoDetection, with_masks: bool) -> None:
    results = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        height, width = image.shape[-2:]
        boxes = target["boxes"].as_subclass(torch.Tensor)
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and bool(boxes.isfinite().all())
        if len(boxes):
            assert bool((boxes[:, 2:] > boxes[:, :2]).all()) and float(boxes.min()) >= 0
            assert float(boxes[:, 0::2].max()) <= width and float(boxes[:, 1::2].max()) <= height
        labels = target["labels"]
        assert len(labels) == len(boxes) and all(1 <= int(v) <= len(dataset.category_ids) for v in labels)
        output = {"boxes": boxes, "labels": labels, "scores": torch.ones(len(boxes))}
        if with_masks:
            masks = target["masks"].as_subclass(torch.Tensor)
            assert tuple(masks.shape) == (len(boxes), height, width)
            output["masks"] = masks[:, None].float()
        results += detections_to_coco(output, target["image_id"], dataset.category_ids)
    metrics = coco_metrics(dataset.coco_gt, results, ("bbox", "segm") if with_masks else ("bbox",))
    assert all(-100 <= value <= 100 for value in metrics.values())


@fuzz_settings(300)
@given(data=annotation_files(), skip_bad=st.booleans(), with_masks=st.booleans(), broken_text=st.integers(0, 30))
def test_annotation_files_are_refused_cleanly_or_fully_usable(
    image_dir, tmp_path_factory, data, skip_bad, with_masks, broken_text
):
    ann_file = tmp_path_factory.mktemp("coco") / "annotations.json"
    text = json.dumps(data, allow_nan=True)
    if broken_text == 0:  # a file cut short, or not UTF-8
        text = text[: len(text) // 2]
    ann_file.write_bytes(text.encode() if broken_text != 1 else b"\xff\xfe" + text.encode())
    try:
        dataset = CocoDetection(image_dir, str(ann_file), skip_bad=skip_bad, with_masks=with_masks)
    except BotnetError as error:
        event(f"refused: {type(error).__name__}")
        return
    event("accepted, entries left out" if dataset.skipped.total() else "accepted")
    _check_dataset(dataset, with_masks)


@fuzz_settings(300)
@given(train=annotation_files(), val=annotation_files(), recipe=st.sampled_from([None, "paper"]))
def test_damaged_files_profile_and_fit_without_failing(train, val, recipe):
    """The fitted defaults read the raw labels before the full check: whatever they hold, the profile and the
    rules give settings a run accepts (the check that follows names what is wrong)."""
    profile = profile_annotations(train, val)
    assert profile.instances == len(profile.box_sides) == sum(profile.boxes_per_image)
    config, _ = fit_detection_defaults(DetectConfig(data="x", recipe=recipe), profile, device="cpu")
    resolved = dataclasses.replace(config, data=None).resolve(1)  # every value the rules chose passes the checks
    assert resolved.min_size <= resolved.max_size and (resolved.anchor_sizes is None or min(resolved.anchor_sizes) > 0)
