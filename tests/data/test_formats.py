"""Pascal VOC, YOLO and LabelMe labels read as COCO: hand-computed boxes, polygons and areas, the same targets as
the same objects written as COCO, and every bad input named in one line."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from botnet.data.coco import CocoDetection
from botnet.data.formats import (
    DetectionSplits,
    find_layout,
    layout_of,
    parse_xml,
    read_labelme,
    read_voc,
    read_yolo,
    write_coco,
)
from botnet.errors import BotnetError, ConfigError, DatasetError, MissingFileError

# split -> [(image file, width, height, [(class, polygon in pixels)])]; sizes odd and not square, so that a swapped
# width/height or an off-by-one shows. Box formats use each polygon's extent.
SCENE = {
    "train": [
        ("a.png", 37, 23, [("cat", [4, 3, 14, 3, 14, 11, 4, 11]), ("dog", [20, 5, 32, 5, 26, 20])]),
        ("b.png", 41, 29, [("dog", [0, 0, 41, 0, 41, 29, 0, 29])]),
        ("c.png", 41, 29, []),
    ],
    "val": [
        ("d.png", 37, 23, [("cat", [6, 2, 11, 2, 11, 9, 6, 9]), ("dog", [1.5, 12.25, 9.5, 20, 3, 21])]),
    ],
}
CLASSES = ["cat", "dog"]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, BotnetError)
    return message


def extent(polygon):
    xs, ys = polygon[0::2], polygon[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def make_image(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


# -- writers of each format ------------------------------------------------------------------------------------------


def write_coco_direct(root, masks=True):
    for split, images in SCENE.items():
        categories = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]
        data = {"images": [], "annotations": [], "categories": categories}
        for image_id, (name, w, h, objects) in enumerate(images, start=1):
            make_image(os.path.join(root, split, "images", name), w, h, image_id)
            data["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
            for cls, polygon in objects:
                x1, y1, x2, y2 = extent(polygon)
                ann = {"id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": CLASSES.index(cls) + 1,
                       "bbox": [x1, y1, x2 - x1, y2 - y1]}
                if masks:
                    ann["segmentation"] = [polygon]
                data["annotations"].append(ann)
        with open(os.path.join(root, split, "annotations.json"), "w") as f:
            json.dump(data, f)


def voc_xml(filename, w, h, objects):
    """objects: (name, xmin, ymin, xmax, ymax, difficult) in VOC's 1-based corners."""
    parts = [f"<annotation><folder>x</folder><filename>{filename}</filename>",
             f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                     f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def scene_voc_objects(objects):
    out = []
    for cls, polygon in objects:
        x1, y1, x2, y2 = extent(polygon)
        out.append((cls, x1 + 1, y1 + 1, x2, y2, 0))  # COCO's continuous box -> VOC's 1-based inclusive corners
    return out


def write_voc(root, layout="devkit"):
    """layout: "devkit" (Annotations/ + JPEGImages/ + ImageSets), "folders" (split/Annotations + JPEGImages),
    "beside" (split/*.xml next to the images)."""
    for split, images in SCENE.items():
        ids = []
        for seed, (name, w, h, objects) in enumerate(images, start=1):
            stem = os.path.splitext(name)[0]
            if layout == "devkit":
                image_dir, xml_dir = os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations")
            elif layout == "folders":
                image_dir, xml_dir = os.path.join(root, split, "JPEGImages"), os.path.join(root, split, "Annotations")
            else:
                image_dir = xml_dir = os.path.join(root, split)
            make_image(os.path.join(image_dir, name), w, h, seed)
            if not objects and layout != "devkit":
                continue  # an image without a file: an image without objects
            os.makedirs(xml_dir, exist_ok=True)
            with open(os.path.join(xml_dir, stem + ".xml"), "w") as f:
                f.write(voc_xml(name, w, h, scene_voc_objects(objects)))
            ids.append(stem)
        if layout == "devkit":
            os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
            with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
                f.write("\n".join(ids) + "\n")


def write_yolo(root, polygons=False, layout="ultralytics", names_as="list"):
    for split, images in SCENE.items():
        for seed, (name, w, h, objects) in enumerate(images, start=1):
            if layout == "ultralytics":
                image_dir, label_dir = os.path.join(root, "images", split), os.path.join(root, "labels", split)
            else:
                folder = os.path.join(root, "valid" if split == "val" else split)
                image_dir, label_dir = os.path.join(folder, "images"), os.path.join(folder, "labels")
            make_image(os.path.join(image_dir, name), w, h, seed)
            os.makedirs(label_dir, exist_ok=True)
            if not objects:
                continue  # no label file: an image without objects (Ultralytics' convention)
            lines = []
            for cls, polygon in objects:
                if polygons:
                    values = [v / (w if k % 2 == 0 else h) for k, v in enumerate(polygon)]
                else:
                    x1, y1, x2, y2 = extent(polygon)
                    values = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
                lines.append(" ".join([str(CLASSES.index(cls))] + [repr(v) for v in values]))
            with open(os.path.join(label_dir, os.path.splitext(name)[0] + ".txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
    if names_as == "list":
        (open(os.path.join(root, "data.yaml"), "w")).write(yaml.safe_dump({"path": ".", "names": CLASSES}))
    elif names_as == "dict":
        (open(os.path.join(root, "data.yaml"), "w")).write(yaml.safe_dump({"names": dict(enumerate(CLASSES))}))
    else:
        (open(os.path.join(root, "classes.txt"), "w")).write("\n".join(CLASSES) + "\n")


def labelme_file(image_path, w, h, shapes):
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
            "imageHeight": h, "imageWidth": w}


def labelme_shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "description": "", "shape_type": shape_type,
            "flags": {}}


def write_labelme(root, rectangles=False):
    for split, images in SCENE.items():
        for seed, (name, w, h, objects) in enumerate(images, start=1):
            make_image(os.path.join(root, split, name), w, h, seed)
            if not objects:
                continue
            shapes = []
            for cls, polygon in objects:
                if rectangles:
                    x1, y1, x2, y2 = extent(polygon)
                    shapes.append(labelme_shape(cls, [[x2, y2], [x1, y1]], "rectangle"))
                else:
                    shapes.append(labelme_shape(cls, [list(p) for p in zip(polygon[0::2], polygon[1::2])]))
            with open(os.path.join(root, split, os.path.splitext(name)[0] + ".json"), "w") as f:
                json.dump(labelme_file(name, w, h, shapes), f)


def annotations_of(splits: DetectionSplits, split="train"):
    return getattr(splits, split).annotations["annotations"]


# -- layouts ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "writer, expected",
    [
        (write_coco_direct, "coco"),
        (write_voc, "voc"),
        (lambda root: write_voc(root, "folders"), "voc"),
        (lambda root: write_voc(root, "beside"), "voc"),
        (write_yolo, "yolo"),
        (lambda root: write_yolo(root, layout="roboflow"), "yolo"),
        (write_labelme, "labelme"),
    ],
)
def test_find_layout_recognises_each_layout(tmp_path, writer, expected):
    writer(str(tmp_path))
    assert layout_of(str(tmp_path)) == expected
    splits = find_layout(str(tmp_path))
    assert splits.format == expected and [s.name for s in splits] == ["train", "val"]
    assert splits.classes == CLASSES
    assert len(splits.train.dataset(with_masks=False)) == 3 and len(splits.val.dataset(with_masks=False)) == 1


def test_a_coco_file_finds_its_images_folder_and_names_itself_in_messages(tmp_path):
    write_coco_direct(str(tmp_path))
    splits = find_layout(str(tmp_path))
    assert splits.train.source == str(tmp_path / "train" / "annotations.json")
    assert splits.train.image_dir == str(tmp_path / "train" / "images")
    assert splits.train.dataset().ann_file == splits.train.source and splits.has_masks()


def test_empty_and_unknown_folders_are_refused_with_the_expected_layouts(tmp_path):
    with pytest.raises(DatasetError) as error:
        find_layout(str(tmp_path))
    assert re.match(r".* is empty: it looks for Pascal VOC .xml, YOLO labels/\*.txt .*LabelMe .json and COCO .json "
                    r"files in any folder layout; for image classification .* use `botnet train --data .*`$",
                    one_line(error))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError) as error:
        find_layout(str(tmp_path))
    assert "holds no annotation files botnet reads: it looks for Pascal VOC" in one_line(error)
    with pytest.raises(MissingFileError, match="does not exist"):
        find_layout(str(tmp_path / "nowhere"))


# -- the same objects in every format give the same targets ----------------------------------------------------------


def _targets(dataset):
    return [dataset[i][1] for i in range(len(dataset))]


def _same_targets(got, want, masks):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a["boxes"].as_subclass(torch.Tensor), b["boxes"].as_subclass(torch.Tensor),
                                   atol=1e-4, rtol=0)
        assert a["labels"].tolist() == b["labels"].tolist()
        if masks:
            assert torch.equal(a["masks"], b["masks"])
            torch.testing.assert_close(a["area"], b["area"], atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "writer, masks",
    [
        (write_voc, False),
        (lambda root: write_voc(root, "beside"), False),
        (write_yolo, False),
        (lambda root: write_yolo(root, polygons=True), True),
        (lambda root: write_yolo(root, polygons=True, layout="roboflow", names_as="dict"), True),
        (lambda root: write_yolo(root, names_as="classes.txt"), False),
        (write_labelme, True),
    ],
)
def test_each_format_gives_the_targets_of_the_same_objects_written_as_coco(tmp_path, writer, masks):
    write_coco_direct(str(tmp_path / "coco"), masks=masks)
    writer(str(tmp_path / "other"))
    reference, converted = find_layout(str(tmp_path / "coco")), find_layout(str(tmp_path / "other"))
    assert converted.has_masks() == masks
    for split in ("train", "val"):
        want = _targets(getattr(reference, split).dataset(with_masks=masks))
        got = _targets(getattr(converted, split).dataset(with_masks=masks))
        _same_targets(got, want, masks)


def test_labelme_rectangles_give_the_boxes_and_box_masks(tmp_path):
    write_coco_direct(str(tmp_path / "coco"), masks=False)
    write_labelme(str(tmp_path / "lm"), rectangles=True)
    reference, converted = find_layout(str(tmp_path / "coco")), find_layout(str(tmp_path / "lm"))
    got, want = _targets(converted.train.dataset()), _targets(reference.train.dataset(with_masks=False))
    _same_targets(got, want, masks=False)
    for target in got:  # each mask is its box
        for box, mask in zip(target["boxes"].tolist(), target["masks"]):
            x1, y1, x2, y2 = (round(v) for v in box)
            assert int(mask.sum()) == (x2 - x1) * (y2 - y1) and int(mask[y1:y2, x1:x2].sum()) == int(mask.sum())


# -- hand-computed conversions ---------------------------------------------------------------------------------------


def test_voc_boxes_are_one_based_inclusive_corners(tmp_path):
    write_voc(str(tmp_path))
    splits = read_voc(str(tmp_path))
    first = annotations_of(splits)[0]
    # <xmin>5 <ymin>4 <xmax>14 <ymax>11: pixels 5..14 and 4..11 (1-based), i.e. x 4..14, y 3..11
    assert first["bbox"] == [4.0, 3.0, 10.0, 8.0] and first["area"] == 80.0 and first["iscrowd"] == 0
    assert "segmentation" not in first and not splits.has_masks()
    assert splits.train.annotations["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [(i["file_name"], i["width"], i["height"]) for i in splits.train.annotations["images"]] == [
        ("a.png", 37, 23), ("b.png", 41, 29), ("c.png", 41, 29)]
    whole = annotations_of(splits)[2]
    assert whole["bbox"] == [0.0, 0.0, 41.0, 29.0]  # (1, 1, W, H) covers the whole image


def test_voc_difficult_objects_are_trained_ignored_or_dropped(tmp_path):
    write_voc(str(tmp_path))
    xml = tmp_path / "Annotations" / "a.xml"
    xml.write_text(voc_xml("a.png", 37, 23, [("cat", 5, 4, 14, 11, 1), ("dog", 12.5, 2.5, 30.25, 20, 0)]))
    trained = annotations_of(read_voc(str(tmp_path)))
    assert [a["iscrowd"] for a in trained[:2]] == [0, 0]
    assert trained[1]["bbox"] == [11.5, 1.5, 18.75, 18.5]  # CVAT's fractional corners
    ignored = annotations_of(read_voc(str(tmp_path), difficult="ignore"))
    assert [a["iscrowd"] for a in ignored[:2]] == [1, 0]
    dataset = find_layout(str(tmp_path), difficult="ignore").train.dataset(with_masks=False)
    assert dataset[0][1]["labels"].tolist() == [2]  # the difficult cat is not a training target
    dropped = annotations_of(read_voc(str(tmp_path), difficult="drop"))
    assert len(dropped) == len(trained) - 1
    with pytest.raises(ValueError, match="difficult must be one of"):
        read_voc(str(tmp_path), difficult="maybe")


def test_voc_size_zero_in_the_file_is_taken_from_the_image(tmp_path):
    write_voc(str(tmp_path))
    (tmp_path / "Annotations" / "a.xml").write_text(voc_xml("a.png", 0, 0, [("cat", 5, 4, 14, 11, 0)]))
    image = read_voc(str(tmp_path)).train.annotations["images"][0]
    assert (image["width"], image["height"]) == (37, 23)


def test_yolo_boxes_and_polygons_in_pixels(tmp_path):
    write_yolo(str(tmp_path))
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n\n1 0.1 0.1 0.9 0.1 0.5 0.9\n")
    anns = annotations_of(read_yolo(str(tmp_path)))
    box, polygon = anns[0], anns[1]
    np.testing.assert_allclose(box["bbox"], [0.4 * 37, 0.3 * 23, 0.2 * 37, 0.4 * 23])
    assert box["area"] == pytest.approx(0.2 * 37 * 0.4 * 23) and "segmentation" not in box
    np.testing.assert_allclose(polygon["segmentation"][0], [3.7, 2.3, 33.3, 2.3, 18.5, 20.7])
    np.testing.assert_allclose(polygon["bbox"], [3.7, 2.3, 29.6, 18.4])
    assert box["category_id"] == 1 and polygon["category_id"] == 2


def test_yolo_rectangle_polygon_area_is_its_pixels(tmp_path):
    write_yolo(str(tmp_path), polygons=True)
    first = annotations_of(read_yolo(str(tmp_path)))[0]
    np.testing.assert_allclose(first["segmentation"][0], [4, 3, 14, 3, 14, 11, 4, 11], atol=1e-6)
    assert first["area"] == 80.0


def test_yolo_dict_names_keep_their_indices(tmp_path):
    write_yolo(str(tmp_path))
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  3: dog\n")
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "train" / "b.txt").write_text("3 0.5 0.5 1 1\n")
    (tmp_path / "labels" / "val" / "d.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    splits = read_yolo(str(tmp_path))
    assert splits.train.annotations["categories"] == [{"id": 1, "name": "cat"}, {"id": 4, "name": "dog"}]
    assert [a["category_id"] for a in annotations_of(splits)] == [1, 4]


def test_yolo_images_in_subfolders_and_without_labels(tmp_path):
    write_yolo(str(tmp_path))
    make_image(str(tmp_path / "images" / "train" / "sub" / "e.png"), 9, 7)
    (tmp_path / "labels" / "train" / "sub").mkdir()
    (tmp_path / "labels" / "train" / "sub" / "e.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "labels" / "train" / "classes.txt").write_text("cat\ndog\n")  # LabelImg leaves one there
    images = read_yolo(str(tmp_path)).train.annotations["images"]
    assert [i["file_name"] for i in images] == ["a.png", "b.png", "c.png", "sub/e.png"]
    assert find_layout(str(tmp_path)).train.dataset(with_masks=False)[2][1]["boxes"].shape == (0, 4)


def test_labelme_shapes(tmp_path):
    write_labelme(str(tmp_path))
    shapes = [
        labelme_shape("cat", [[14, 11], [4, 3]], "rectangle"),
        labelme_shape("dog", [[18, 11], [18, 16]], "circle"),
        labelme_shape("dog", [[1, 1], [3, 1], [2, 3]], group_id=7),
        labelme_shape("dog", [[30, 1], [33, 1], [32, 4]], group_id=7),
        labelme_shape("cat", [[1, 20], [5, 20]], "line"),
        labelme_shape("cat", [[1, 20]], "point"),
        labelme_shape("cat", [[1, 20]], "point"),
        {"label": "cat", "points": [[20, 2], [24, 2], [22, 6]]},  # old LabelMe: no shape_type
    ]
    (tmp_path / "train" / "a.json").write_text(json.dumps(labelme_file("a.png", 37, 23, shapes)))
    splits = read_labelme(str(tmp_path))
    rectangle, circle, grouped, untyped = annotations_of(splits)[:4]
    assert rectangle["bbox"] == [4.0, 3.0, 10.0, 8.0] and rectangle["area"] == 80.0
    assert rectangle["segmentation"] == [[4.0, 3.0, 14.0, 3.0, 14.0, 11.0, 4.0, 11.0]]
    assert len(circle["segmentation"][0]) == 72
    np.testing.assert_allclose(circle["bbox"], [13, 6, 10, 10], atol=1e-9)
    assert abs(circle["area"] - np.pi * 25) < 10
    assert len(grouped["segmentation"]) == 2 and grouped["bbox"] == [1.0, 1.0, 32.0, 3.0]
    assert untyped["bbox"] == [20.0, 2.0, 4.0, 4.0]
    assert ("left out: 1 LabelMe line shapes, which have no area to detect (e.g. train/a.json); 2 LabelMe point "
            "shapes, which have no area to detect (e.g. train/a.json)") in splits.report
    assert len(splits.train.dataset()[0][1]["masks"]) == 4


def test_labelme_image_path_with_backslashes_and_folders(tmp_path):
    write_labelme(str(tmp_path))
    os.makedirs(tmp_path / "train" / "pics")
    os.replace(tmp_path / "train" / "a.png", tmp_path / "train" / "pics" / "a.png")
    data = json.loads((tmp_path / "train" / "a.json").read_text())
    data["imagePath"] = "pics\\a.png"
    (tmp_path / "train" / "a.json").write_text(json.dumps(data))
    images = read_labelme(str(tmp_path)).train.annotations["images"]
    assert [i["file_name"] for i in images] == ["b.png", "c.png", "pics/a.png"]


# -- CocoDetection from a dict ---------------------------------------------------------------------------------------


def test_coco_detection_takes_a_dict_and_names_its_source(tmp_path):
    write_coco_direct(str(tmp_path))
    with open(tmp_path / "train" / "annotations.json") as f:
        data = json.load(f)
    images = str(tmp_path / "train" / "images")
    from_dict = CocoDetection(images, annotations=data, source="my labels")
    from_file = CocoDetection(images, str(tmp_path / "train" / "annotations.json"))
    _same_targets(_targets(from_dict), _targets(from_file), masks=True)
    assert from_dict.ann_file == "my labels" and from_dict.coco_gt["annotations"] == from_file.coco_gt["annotations"]
    assert data["annotations"][0].get("area") is None  # the given dict is not changed
    data["annotations"][0]["bbox"] = [100, 100, 5, 5]
    with pytest.raises(DatasetError, match=r"^my labels: 1 entries cannot be used: 1 degenerate box"):
        CocoDetection(images, annotations=data, source="my labels")
    with pytest.raises(DatasetError, match='^my labels has no "images" key'):
        CocoDetection(images, annotations={"annotations": [], "categories": []}, source="my labels")
    with pytest.raises(TypeError, match="either ann_file"):
        CocoDetection(images)
    with pytest.raises(TypeError, match="either ann_file"):
        CocoDetection(images, "x.json", annotations=data)


# -- write_coco ------------------------------------------------------------------------------------------------------


def test_write_coco_gives_a_coco_folder_with_the_same_targets(tmp_path):
    write_yolo(str(tmp_path / "yolo"), polygons=True)
    splits = find_layout(str(tmp_path / "yolo"))
    written = write_coco(splits, str(tmp_path / "out"))
    assert written.format == "coco" and layout_of(str(tmp_path / "out")) == "coco"
    link = tmp_path / "out" / "train" / "images" / "a.png"
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "yolo" / "images" / "train" / "a.png")
    again = find_layout(str(tmp_path / "out"))
    for split in ("train", "val"):
        _same_targets(_targets(getattr(again, split).dataset()), _targets(getattr(splits, split).dataset()), True)
    info = json.loads((tmp_path / "out" / "train" / "annotations.json").read_text())["info"]
    assert "YOLO train data" in info["description"]
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        write_coco(splits, str(tmp_path / "out"))


def test_write_coco_copies_where_links_cannot_be_made(tmp_path, monkeypatch):
    write_voc(str(tmp_path / "voc"))
    splits = find_layout(str(tmp_path / "voc"))

    def no_links(*args):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_links)
    write_coco(splits, str(tmp_path / "out"))
    copy = tmp_path / "out" / "val" / "images" / "d.png"
    assert copy.is_file() and not copy.is_symlink()
    assert len(find_layout(str(tmp_path / "out")).train.dataset(with_masks=False)) == 3


# -- errors: one line, naming the file and the fix -------------------------------------------------------------------


def _voc(tmp_path):
    write_voc(str(tmp_path))
    return tmp_path / "Annotations" / "a.xml"


def _error(read, root):
    with pytest.raises(BotnetError) as error:
        read(str(root))
    return one_line(error)


def test_voc_errors(tmp_path):
    xml = _voc(tmp_path)
    xml.write_text(voc_xml("a.png", 37, 23, [("cat", 5, 4, 44, 11, 0)]))
    assert _error(read_voc, tmp_path) == (
        f"{xml}, object 1 ('cat'): the box (4, 3)-(44, 11) reaches outside the 37x23 image "
        f"{tmp_path / 'JPEGImages' / 'a.png'}; fix it (the labels may belong to another image)")
    xml.write_text(voc_xml("a.png", 37, 23, [("cat", 14, 4, 5, 11, 0)]))
    assert "object 1 ('cat'): the box (13, 3)-(5, 11) has no area" in _error(read_voc, tmp_path)
    xml.write_text(voc_xml("a.png", 37, 23, [("cat", "five", 4, 5, 11, 0)]))
    assert f"{xml}, object 1: <xmin> is 'five', not a number" in _error(read_voc, tmp_path)
    xml.write_text(voc_xml("a.png", 37, 23, [("cat", 5, 4, 14, 11, 0)])[:-20])
    assert re.match(rf"{re.escape(str(xml))} is not valid XML \(.*line 1, column \d+\): fix or re-export it",
                    _error(read_voc, tmp_path))
    xml.write_text(voc_xml("a.png", 41, 29, [("cat", 5, 4, 14, 11, 0)]))  # a wrong size: the image file's is used
    assert "fixed: 1 x image size taken from the image file (the label file gave 0 or another size)" in read_voc(
        tmp_path).report
    xml.write_text("<root/>")
    assert "is XML but not a Pascal VOC annotation (its root is <root>" in _error(read_voc, tmp_path)


def test_voc_entity_bombs_are_refused(tmp_path):
    xml = _voc(tmp_path)
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            "<annotation><filename>&lol2;</filename></annotation>")
    xml.write_text(bomb)
    assert f"{xml} declares a DOCTYPE or ENTITY" in _error(read_voc, tmp_path)
    xml.write_bytes(bomb.encode("utf-16"))  # a byte search would not see it
    assert f"{xml} declares a DOCTYPE or ENTITY" in _error(read_voc, tmp_path)
    xml.write_text('<!DOCTYPE a SYSTEM "file:///etc/passwd"><annotation/>')
    assert "declares a DOCTYPE" in _error(read_voc, tmp_path)
    assert parse_xml(str(tmp_path / "Annotations" / "b.xml")).tag == "annotation"


def test_voc_unknown_val_class_and_missing_files(tmp_path):
    _voc(tmp_path)
    val = tmp_path / "Annotations" / "d.xml"
    val.write_text(voc_xml("d.png", 37, 23, [("cat", 5, 4, 14, 11, 0), ("horse", 5, 4, 14, 11, 0)]))
    assert read_voc(tmp_path).classes == ["cat", "dog", "horse"]  # a class only val has is a class
    os.remove(val)
    assert re.match(rf"{re.escape(str(tmp_path / 'ImageSets' / 'Main' / 'val.txt'))} line 1 names 'd', but .*d.xml "
                    rf"does not exist", _error(read_voc, tmp_path))
    val.write_text(voc_xml("d.png", 37, 23, []))
    os.remove(tmp_path / "JPEGImages" / "d.png")
    assert _error(read_voc, tmp_path) == (
        f"{val} has no image in {tmp_path / 'Annotations'} or {tmp_path / 'JPEGImages'} (its <filename> is 'd.png'): "
        f"add the image, or remove the label file")
    os.remove(tmp_path / "ImageSets" / "Main" / "val.txt")
    os.remove(val)
    held = read_voc(tmp_path)  # no val list: val is held out of train
    assert len(held.heldout) == 1 and held.heldout < {"JPEGImages/a.png", "JPEGImages/b.png", "JPEGImages/c.png"}


def test_voc_split_folder_errors(tmp_path):
    write_voc(str(tmp_path), "beside")
    (tmp_path / "train" / "orphan.xml").write_text(voc_xml("orphan.png", 37, 23, []))
    assert f"{tmp_path / 'train' / 'orphan.xml'} has no image in {tmp_path / 'train'}" in _error(read_voc, tmp_path)
    os.remove(tmp_path / "train" / "orphan.xml")
    for name in os.listdir(tmp_path / "val"):
        os.remove(tmp_path / "val" / name)
    held = read_voc(tmp_path)  # an empty val folder: val is held out of train
    assert len(held.heldout) == 1 and held.heldout < {"train/a.png", "train/b.png", "train/c.png"}


def _yolo(tmp_path, polygons=False):
    write_yolo(str(tmp_path), polygons=polygons)
    return tmp_path / "labels" / "train" / "a.txt"


@pytest.mark.parametrize(
    "lines, message",
    [
        ("0 0.5 0.5 0.2\n", "line 1 has 4 values: a box is 'class cx cy w h' (5 values), a polygon"),
        ("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.2 0.2 0.3\n", "line 2 has 6 values"),
        ("0 0.5 0.5 nan 0.2\n", "line 1: 'nan' is not a finite number; fix the line"),
        ("0 0.5 0.5 x 0.2\n", "line 1: 'x' is not a finite number"),
        ("cat 0.5 0.5 0.2 0.2\n", "line 1: 'cat' is not a finite number"),
        ("0.5 0.5 0.5 0.2 0.2\n", "line 1: the class '0.5' is not a class index (0, 1, ...)"),
        ("2 0.5 0.5 0.2 0.2\n", "line 1: class 2 is not one of the 2 classes of"),
        ("0 15 10 5 5\n", "line 1: coordinate 15 is over 1, but YOLO labels are fractions (0..1) of the image size"),
        ("0 0.05 0.5 0.5 0.2\n", "line 1: the box (-7.4, 9.2)-(11.1, 13.8) reaches outside the 37x23 image "),
        ("0 0.5 0.5 0 0.2\n", "line 1: the box (18.5, 9.2)-(18.5, 13.8) has no area"),
        ("1 0.1 0.1 0.9 0.1 -0.5 0.9\n", "line 1: the polygon reaches (-18.5..33.3, 2.3..20.7), outside the 37x23"),
    ],
)
def test_yolo_line_errors_name_the_line(tmp_path, lines, message):
    label = _yolo(tmp_path)
    label.write_text(lines)
    text = _error(read_yolo, tmp_path)
    assert text.startswith(f"{label} line ") and message in text


def test_yolo_file_errors(tmp_path):
    label = _yolo(tmp_path)
    orphan = tmp_path / "labels" / "val" / "zzz.txt"
    orphan.write_text("0 0.5 0.5 0.1 0.1\n")
    assert "left out: 1 YOLO label files without their image (e.g. labels/val/zzz.txt)" in read_yolo(tmp_path).report
    os.remove(orphan)
    label.write_bytes(b"\xff\xfe0 0.5")
    assert f"{label} is not a YOLO label file (not UTF-8 text" in _error(read_yolo, tmp_path)
    label.write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [cat, dog\n")
    assert f"{tmp_path / 'data.yaml'} is not valid YAML (" in _error(read_yolo, tmp_path)
    (tmp_path / "data.yaml").write_text("nc: 2\n")
    assert "has no 'names' list of classes" in _error(read_yolo, tmp_path)
    (tmp_path / "data.yaml").write_text("names: [cat, [dog]]\n")
    assert "class 1 in 'names' is not a name" in _error(read_yolo, tmp_path)
    os.remove(tmp_path / "data.yaml")
    assert "has YOLO labels but no data.yaml, classes.txt or obj.names naming the classes" in _error(read_yolo, tmp_path)
    (tmp_path / "classes.txt").write_text("cat\n\ndog\n")
    assert f"{tmp_path / 'classes.txt'} line 2 is empty" in _error(read_yolo, tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\n\n")
    assert read_yolo(str(tmp_path)).train.annotations["categories"][1] == {"id": 2, "name": "dog"}
    make_image(str(tmp_path / "images" / "train" / "a.jpg"), 5, 5)
    assert f"{label} would label both {tmp_path / 'images' / 'train' / 'a.jpg'} and " in _error(read_yolo, tmp_path)
    os.remove(tmp_path / "images" / "train" / "a.jpg")
    shutil.rmtree(tmp_path / "labels" / "val")
    unlabelled = read_yolo(tmp_path)  # images/val/ has no labels: left out, and val held out of train
    assert unlabelled.heldout and "1 images no annotation file names (e.g. images/val/d.png)" in unlabelled.report[-1]


def test_yolo_unreadable_image_is_left_to_coco_detection(tmp_path):
    _yolo(tmp_path)
    (tmp_path / "images" / "train" / "a.png").write_bytes(b"not an image")
    split = read_yolo(str(tmp_path)).train
    assert split.annotations["images"][0] == {"id": 1, "file_name": "a.png"}
    unreadable = r"^YOLO train data in .*: 1 entries cannot be used: 1 unreadable image \(a.png"
    with pytest.raises(DatasetError, match=unreadable):
        split.dataset(with_masks=False)
    assert len(split.dataset(with_masks=False, skip_bad=True)) == 2


def _labelme(tmp_path):
    write_labelme(str(tmp_path))
    return tmp_path / "train" / "a.json"


@pytest.mark.parametrize(
    "shape, message",
    [
        (labelme_shape("cat", [[1, 1], [5, 5]]), "shape 1 ('cat'): a polygon has 2 point(s); an object's outline needs "
                                                 "at least 3: fix or remove it"),
        (labelme_shape("cat", [[1, 1], [50, 5], [3, 9]]), "shape 1 ('cat'): the polygon reaches (1..50, 1..9), outside "
                                                          "the 37x23 image "),
        (labelme_shape("cat", [[1, 1], [5, "x"], [3, 9]]), "shape 1 ('cat'): points must be a list of [x, y] pairs"),
        (labelme_shape("cat", [[1, 1]], "rectangle"), "shape 1 ('cat'): a rectangle needs 2 corner points, got 1"),
        (labelme_shape("cat", [[1, 1], [1, 9]], "rectangle"), "shape 1 ('cat'): the box (1, 1)-(1, 9) has no area"),
        (labelme_shape("cat", [[1, 1]], "mask"), "shape 1 ('cat'): shape_type 'mask' is not read (polygon, rectangle "
                                                 "and circle are; line, linestrip, point, points are left out): draw "
                                                 "the object as a polygon in LabelMe"),
        (labelme_shape("", [[1, 1], [5, 5], [3, 9]]), "shape 1 has no label"),
        ("cat", "shape 1 is not a JSON object"),
    ],
)
def test_labelme_shape_errors(tmp_path, shape, message):
    path = _labelme(tmp_path)
    path.write_text(json.dumps(labelme_file("a.png", 37, 23, [shape])))
    assert _error(read_labelme, tmp_path).startswith(f"{path}, {message}")


def test_labelme_file_errors(tmp_path):
    path = _labelme(tmp_path)
    good = json.loads(path.read_text())
    path.write_text(json.dumps(good)[:-10])
    assert re.match(rf"{re.escape(str(path))} is not a JSON file \(.*line 1 column \d+.*\): fix or re-save it",
                    _error(read_labelme, tmp_path))
    path.write_text(json.dumps([good]))
    assert _error(read_labelme, tmp_path) == (
        f'{path} is not a LabelMe file: it needs a JSON object with a "shapes" list')
    path.write_text(json.dumps({**good, "imagePath": "gone.png"}))
    assert _error(read_labelme, tmp_path) == (
        f"{path} labels 'gone.png', which is not beside it: put the image there (the embedded imageData "
        f"is not read), or remove the label file")
    path.write_text(json.dumps({**good, "imageWidth": 23, "imageHeight": 37}))
    fixed = "fixed: 1 x image size taken from the image file (the label file gave 0 or another size)"
    assert fixed in read_labelme(tmp_path).report
    path.write_text(json.dumps({**good, "imageWidth": "37"}))
    assert "imageWidth x imageHeight is '37' x 23" in _error(read_labelme, tmp_path)
    path.write_text(json.dumps(good))
    val = tmp_path / "val" / "d.json"
    data = json.loads(val.read_text())
    data["shapes"][1]["label"] = "horse"
    val.write_text(json.dumps(data))
    assert read_labelme(tmp_path).classes == ["cat", "dog", "horse"]  # a class only val has is a class
    data["shapes"][1]["label"] = "cat"
    data["imagePath"] = "a.png"
    val.write_text(json.dumps(data))
    assert "labels 'a.png', which is not beside it" in _error(read_labelme, tmp_path)
    make_image(str(tmp_path / "val" / "a.png"), 37, 23)
    data["imagePath"] = "d.png"
    (tmp_path / "val" / "second.json").write_text(json.dumps(data))
    val.write_text(json.dumps(data))
    assert f"are labels of the same image {tmp_path / 'val' / 'd.png'}: keep one" in _error(read_labelme, tmp_path)


def test_detect_convert_writes_coco_files_that_read_as_the_original(tmp_path, capsys):
    """`botnet detect convert DIR --to coco OUT`: the written COCO folder gives the targets the YOLO folder
    gives, and a second conversion into the same folder is refused without touching it."""
    from botnet.cli import main

    write_yolo(str(tmp_path / "yolo"), polygons=True)
    out = str(tmp_path / "out")
    assert main(["detect", "convert", str(tmp_path / "yolo"), "--to", "coco", out]) == 0
    assert "from the yolo data" in capsys.readouterr().out
    original, written = find_layout(str(tmp_path / "yolo")), find_layout(out)
    assert written.format == "coco"
    for split in ("train", "val"):
        want = _targets(getattr(original, split).dataset(with_masks=True))
        got = _targets(getattr(written, split).dataset(with_masks=True))
        _same_targets(got, want, masks=True)
    assert main(["detect", "convert", str(tmp_path / "yolo"), out]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
