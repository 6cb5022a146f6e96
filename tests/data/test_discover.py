"""Real labelling-tool exports read as found: every layout and quirk of tool_exports.py, nothing lost.

Each export is pointed to as its user downloaded it. The reader must find its format, its classes, every
labelled and background image and every object (all splits together), keep the export's own splits (a test
split apart), hold out a val split where there is none, and say in its report what it fixed and left out.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from tool_exports import (
    ALL_EXPORTS,
    ALL_QUIRKS,
    labelimg_voc_flat,
    labelme3_video,
    quirk_box_outside,
    quirk_coco_category_zero,
    quirk_duplicate_images,
    quirk_exif_orientation,
    quirk_subpixel_overshoot,
    quirk_unused_class_and_nc,
    quirk_wrong_size_labelme,
    quirk_zero_size_voc,
    roboflow_coco_test_only,
    roboflow_yolov8,
)

from botnet.data.formats import find_layout, layout_of
from botnet.errors import ConfigError, DatasetError


def _images_and_objects(splits) -> tuple[int, int]:
    return (sum(len(split.coco()["images"]) for split in splits),
            sum(len(split.coco()["annotations"]) for split in splits))


@pytest.mark.parametrize("build", ALL_EXPORTS + ALL_QUIRKS, ids=lambda build: build.__name__)
def test_every_export_is_read_as_found_and_nothing_is_lost(tmp_path, build):
    export = build(tmp_path)
    splits = find_layout(str(export.data))
    assert splits.format == export.format == layout_of(str(export.data))
    assert splits.classes == export.classes
    assert _images_and_objects(splits) == (export.images, export.objects)
    names = [split.name for split in splits]
    assert names[:2] == ["train", "val"]
    assert ("test" in names) == ("test" in export.splits and len(export.splits) > 1)
    assert (splits.heldout is None) == ("val" in export.splits)
    for split in splits:  # every check a training run makes
        dataset = split.dataset(with_masks=splits.has_masks())
        assert len(dataset) == len(split.coco()["images"])
    for kind, count in export.skipped.items():
        assert any(f"{count} LabelMe {kind} shapes, which have no area" in line for line in splits.report)
    if export.unlabelled:
        assert any(f"{export.unlabelled} images no annotation file names" in line for line in splits.report)


@pytest.mark.parametrize("build", ALL_EXPORTS + ALL_QUIRKS, ids=lambda build: build.__name__)
def test_the_held_out_split_is_the_same_on_every_read_and_can_be_given(tmp_path, build):
    export = build(tmp_path)
    first, second = find_layout(str(export.data)), find_layout(str(export.data))
    assert first.heldout == second.heldout
    if first.heldout is None:
        return
    images = len(first.heldout) + len(first.train.coco()["images"])
    assert 1 <= len(first.heldout) <= max(2, round(0.2 * images))
    val_files = {os.path.join(first.val.image_dir, e["file_name"]) for e in first.val.coco()["images"]}
    assert val_files == {os.path.join(first.root, name) for name in first.heldout}
    chosen = set(sorted(first.heldout)[:1])
    given = find_layout(str(export.data), heldout=chosen)
    assert given.heldout == chosen and len(given.val.coco()["images"]) == 1


def test_a_folder_of_two_formats_names_both_and_the_flag(tmp_path):
    labelimg_voc_flat(tmp_path / "voc")
    roboflow_yolov8(tmp_path / "yolo")
    with pytest.raises(DatasetError, match=r"holds labels in 2 formats: Pascal VOC \(7 files\), YOLO \(\d+ files\); "
                                           r"choose one with --data-format voc\|yolo$"):
        find_layout(str(tmp_path))
    assert find_layout(str(tmp_path), data_format="yolo").format == "yolo"
    with pytest.raises(DatasetError, match="holds no LabelMe annotation files"):
        find_layout(str(tmp_path), data_format="labelme")
    with pytest.raises(ConfigError, match="--data-format must be one of coco, voc, yolo, labelme, got 'xml'"):
        find_layout(str(tmp_path), data_format="xml")


def test_two_coco_files_for_one_split_name_the_files_and_the_flag(tmp_path):
    export = quirk_coco_category_zero(tmp_path)
    train = tmp_path / "train" / "_annotations.coco.json"
    (tmp_path / "train" / "copy.json").write_bytes(train.read_bytes())
    with pytest.raises(DatasetError, match=r"holds 2 COCO files for the train split \(train/_annotations.coco.json, "
                                           r"train/copy.json\): give the one to train on with --data FILE.json"):
        find_layout(str(export.data))
    one = find_layout(str(train))  # a COCO file given alone: its images beside it, val held out
    assert one.format == "coco" and one.heldout and _images_and_objects(one)[0] == 6


def test_cocos_own_download_reads_the_instances_files_and_the_split_folders(tmp_path):
    """annotations/{instances,person_keypoints}_{train,val}2017.json beside train2017/ and val2017/."""
    export = quirk_coco_category_zero(tmp_path / "export")
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, folder in (("train", "train"), ("val", "valid")):
        os.rename(export.data / folder, root / f"{split}2017")
        data = (root / f"{split}2017" / "_annotations.coco.json").read_bytes()
        os.remove(root / f"{split}2017" / "_annotations.coco.json")
        for kind in ("instances", "person_keypoints"):
            (root / "annotations" / f"{kind}_{split}2017.json").write_bytes(data)
    splits = find_layout(str(root))
    assert splits.heldout is None and _images_and_objects(splits) == (export.images, export.objects)
    assert splits.train.source.endswith("instances_train2017.json") and splits.train.image_dir.endswith("train2017")
    assert any("2 COCO files beside the instances file of their split" in line for line in splits.report)


def test_a_test_only_export_is_all_the_data_and_split(tmp_path):
    export = roboflow_coco_test_only(tmp_path)
    splits = find_layout(str(export.data))
    assert splits.test is None and splits.heldout
    assert "held out 2 of its 6 test-split images as val" in splits.report[1]
    assert "category 0 'pets' is no annotation's and the supercategory of the others" in splits.report[-1]
    with pytest.raises(DatasetError, match=r"has no test split \(it has train, val\)"):
        splits.split("test")


def test_a_data_yaml_is_resolved_as_ultralytics_does(tmp_path):
    export = roboflow_yolov8(tmp_path)
    by_folder, by_yaml = find_layout(str(export.data)), find_layout(str(tmp_path / "data.yaml"))
    for a, b in zip(by_folder, by_yaml):
        assert a.name == b.name and a.coco()["images"] == b.coco()["images"]
    assert by_yaml.split("test").coco()["annotations"] == by_folder.split("test").coco()["annotations"]
    (tmp_path / "data.yaml").write_text("names: [a, b, c]\ntrain: ../nowhere/images\nval: ../valid/images\n")
    with pytest.raises(DatasetError, match=r"data.yaml: the train images '../nowhere/images' are not at .*nowhere/images: "
                                           r"fix the path in the yaml"):
        find_layout(str(tmp_path / "data.yaml"))


def test_sizes_from_the_image_files_are_fixed_and_counted(tmp_path):
    for build, count in ((quirk_zero_size_voc, 2), (quirk_wrong_size_labelme, 2)):
        export = build(tmp_path / build.__name__)
        report = find_layout(str(export.data)).report
        assert f"fixed: {count} x image size taken from the image file (the label file gave 0 or another size)" in report


def test_subpixel_overshoot_is_clipped_and_counted_and_a_box_outside_is_refused(tmp_path):
    export = quirk_subpixel_overshoot(tmp_path / "subpixel")
    splits = find_layout(str(export.data))
    assert "fixed: 3 x object overshooting the image edge by under a pixel, clipped to it" in splits.report
    for split in splits:
        for target in (split.dataset(with_masks=False)[k][1] for k in range(len(split.coco()["images"]))):
            boxes, size = target["boxes"], target["boxes"].canvas_size
            assert boxes[:, 0::2].max() <= size[1] and boxes[:, 1::2].max() <= size[0] and boxes.min() >= 0
    bad = quirk_box_outside(tmp_path / "outside")
    with pytest.raises(DatasetError, match=r"_annotations.coco.json: the box \(84, 39\)-\(140, 79\) reaches outside the "
                                           r"120x90 image .*cam_0001.jpg; fix it"):
        find_layout(str(bad.data))


def test_category_zero_is_a_class_and_an_unused_duplicate_name_is_dropped(tmp_path):
    export = quirk_coco_category_zero(tmp_path)
    splits = find_layout(str(export.data))
    categories = splits.train.coco()["categories"]
    assert [(c["id"], c["name"]) for c in categories] == [(0, "cat"), (1, "dog"), (2, "bird")]
    labels = {int(v) for k in range(6) for v in splits.train.dataset(with_masks=False)[k][1]["labels"]}
    assert labels <= {1, 2, 3} and 1 in labels  # category 0 is trained as the first class
    assert any("category 3 'dog' has the name of another and no annotation: left out" in line for line in splits.report)


def test_an_unused_class_is_kept_and_a_wrong_nc_is_reported(tmp_path):
    export = quirk_unused_class_and_nc(tmp_path)
    splits = find_layout(str(export.data))
    assert splits.classes == ["cat", "fish", "dog", "bird"]
    assert any(re.search(r"data.yaml gives nc: 3 but names 4 classes: the names are used", line) for line in splits.report)


def test_exif_orientation_is_reported_and_pixels_are_read_as_stored(tmp_path):
    export = quirk_exif_orientation(tmp_path)
    splits = find_layout(str(export.data))
    assert any(line.startswith("2 images carry an EXIF orientation tag: botnet reads pixels as stored")
               for line in splits.report)
    for split in splits:
        dataset = split.dataset(with_masks=False)
        for k, entry in enumerate(split.coco()["images"]):
            image = dataset[k][0]
            assert tuple(image.shape[-2:]) == (entry["height"], entry["width"])  # not rotated


def test_byte_identical_copies_stay_on_one_side(tmp_path):
    export = quirk_duplicate_images(tmp_path)
    splits = find_layout(str(export.data))
    copies = [e for split in splits for e in split.coco()["images"] if "IMG_2041" in e["file_name"]]
    assert len(copies) == 2
    assert len({name for name in splits.heldout if "IMG_2041" in name}) in (0, 2)



def test_frames_of_a_video_are_held_out_as_a_contiguous_block(tmp_path):
    export = labelme3_video(tmp_path)
    splits = find_layout(str(export.data))
    frames = sorted(int(re.search(r"(\d+)\.jpg$", name).group(1)) for name in splits.heldout)
    assert len(frames) == 2 and frames[1] - frames[0] == 1


# -- layouts and traps found in review: each a real export's habit --------------------------------------------------


def test_an_image_named_like_a_split_stays_in_its_folders_split(tmp_path):
    export = labelimg_voc_flat(tmp_path)
    for old in sorted((tmp_path / "images").iterdir())[:2]:  # test_tube_IMG_0001.jpg is a photo, not a split
        os.rename(old, old.with_name("test_tube_" + old.name))
        xml = tmp_path / "annotations" / (old.stem + ".xml")
        os.rename(xml, xml.with_name("test_tube_" + xml.name))
    splits = find_layout(str(export.data))
    assert splits.test is None and _images_and_objects(splits) == (export.images, export.objects)


def test_a_labels_folder_above_the_data_does_not_make_text_files_yolo_labels(tmp_path):
    export = labelimg_voc_flat(tmp_path / "labels" / "voc")
    (tmp_path / "labels" / "voc" / "README.txt").write_text("exported with LabelImg")
    assert find_layout(str(export.data)).format == "voc"


def test_a_data_yaml_whose_path_points_elsewhere_and_val_equal_to_train(tmp_path):
    export = roboflow_yolov8(tmp_path / "datasets" / "pets")
    yaml_file = tmp_path / "configs" / "pets.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text("path: ../datasets/pets\ntrain: train/images\nval: train/images\nnames: [bird, cat, dog]\n")
    splits = find_layout(str(yaml_file))
    assert len(splits.train.coco()["images"]) == len(splits.val.coco()["images"]) == 6
    assert any(line.startswith("6 images are in both the train and the val split") for line in splits.report)


def test_folders_reached_through_symbolic_links_are_read(tmp_path):
    export = roboflow_yolov8(tmp_path / "store")
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in ("train", "valid", "test", "data.yaml"):
        os.symlink(export.data / name, linked / name)
    os.symlink(linked, linked / "train" / "loop")  # a link back up must not loop
    assert _images_and_objects(find_layout(str(linked))) == (export.images, export.objects)


def test_cvat_yolo_with_obj_names_and_labels_beside_the_images(tmp_path):
    export = quirk_unused_class_and_nc(tmp_path / "src")
    root = tmp_path / "cvat"
    (root / "obj_train_data").mkdir(parents=True)
    for image in (export.data / "images").iterdir():
        shutil.copy(image, root / "obj_train_data" / image.name)
        shutil.copy(export.data / "labels" / (image.stem + ".txt"), root / "obj_train_data" / (image.stem + ".txt"))
    (root / "obj.names").write_text("cat\nfish\ndog\nbird\n")
    (root / "obj.data").write_text("classes = 4\ntrain = data/train.txt\n")
    splits = find_layout(str(root))
    assert splits.classes == ["cat", "fish", "dog", "bird"]
    assert _images_and_objects(splits) == (export.images, export.objects)


def test_coco_file_names_from_windows_and_from_the_labelling_machine(tmp_path):
    export = quirk_coco_category_zero(tmp_path)
    path = tmp_path / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "C:\\Users\\ann\\export\\" + data["images"][0]["file_name"]
    data["images"][1]["file_name"] = "/home/ann/export/" + data["images"][1]["file_name"]
    path.write_text(json.dumps(data))
    assert _images_and_objects(find_layout(str(export.data))) == (export.images, export.objects)
    data["images"][1]["id"] = data["images"][2]["id"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"_annotations.coco.json has two images with id {data['images'][2]['id']}"):
        find_layout(str(export.data))


def test_the_vocs_test_list_without_annotations_is_no_split(tmp_path):
    export = labelimg_voc_flat(tmp_path)
    os.rename(tmp_path / "annotations", tmp_path / "Annotations")
    lists = tmp_path / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    stems = sorted(p.stem for p in (tmp_path / "Annotations").iterdir())
    (lists / "trainval.txt").write_text("\n".join(stems) + "\n")
    (lists / "test.txt").write_text("2012_000001\n2012_000002\n")  # VOC2012's test tar: ids without XML
    splits = find_layout(str(export.data))
    assert splits.test is None and splits.heldout
    assert len(splits.train.coco()["images"]) + len(splits.val.coco()["images"]) == len(stems)
