"""COCO instance data: targets for torchvision's detectors, and every bad input named, or skipped and counted."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision import tv_tensors
from torchvision.transforms import v2

from botnet.data.box_masks import BoxMasks, RandomHorizontalFlip
from botnet.data.coco import CocoDetection, SkippedAnnotations
from botnet.data.folder import DatasetError

W, H = 40, 30  # non-square on purpose: a swapped width/height shows


def drawn_mask(shape: str) -> np.ndarray:
    """A (H, W) 0/1 mask drawn with PIL, independent of pycocotools."""
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "disc":
        draw.ellipse([18, 6, 30, 20], fill=1)
    else:
        draw.polygon([(28, 18), (39, 29), (28, 29)], fill=1)
    return np.array(canvas, dtype=np.uint8)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def box_of(mask: np.ndarray) -> list[float]:
    """COCO [x, y, w, h] of a mask's pixels."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@dataclass
class Coco:
    """A tiny COCO dataset on disk; change ``data`` and call ``write()`` to make it bad."""

    image_dir: str
    ann_file: str
    data: dict
    masks: dict[int, np.ndarray]  # annotation id -> the mask that was drawn for it

    def write(self) -> None:
        with open(self.ann_file, "w") as f:
            json.dump(self.data, f)

    def ann(self, ann_id: int) -> dict:
        return next(a for a in self.data["annotations"] if a["id"] == ann_id)

    def load(self, **kwargs) -> CocoDetection:
        self.write()
        return CocoDetection(self.image_dir, self.ann_file, **kwargs)


@pytest.fixture
def coco(tmp_path) -> Coco:
    """a.png (RGB, 2 objects), b.png (grey, 1 object and 1 crowd region), c.png (palette, nothing); ids 3 and 7."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    gradient = np.zeros((H, W, 3), dtype=np.uint8)
    gradient[..., 0] = np.arange(W, dtype=np.uint8)[None, :] * 6  # red grows left to right: a flip shows
    gradient[..., 1] = np.arange(H, dtype=np.uint8)[:, None] * 8
    Image.fromarray(gradient).save(image_dir / "a.png")
    Image.fromarray(gradient[..., 0]).save(image_dir / "b.png")  # grey ("L")
    Image.fromarray(gradient).convert("P").save(image_dir / "c.png")

    disc, triangle = drawn_mask("disc"), drawn_mask("triangle")
    crowd = np.zeros((H, W), dtype=np.uint8)
    crowd[0:10, 0:10] = 1
    compressed = mask_utils.encode(np.asfortranarray(triangle))
    data = {
        "images": [
            {"id": 10, "file_name": "a.png", "width": W, "height": H},
            {"id": 20, "file_name": "b.png"},  # no width/height: taken from the file
            {"id": 30, "file_name": "c.png", "width": W, "height": H},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat", "supercategory": "animal"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 4, 10, 8],  # no area: the polygon's
             "segmentation": [[5, 4, 15, 4, 15, 12, 5, 12]]},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": box_of(disc), "area": 123.0,
             "segmentation": uncompressed_rle(disc), "iscrowd": 0},
            {"id": 3, "image_id": 20, "category_id": 3, "bbox": [28, 18, 20, 20],  # reaches past the corner
             "segmentation": {"size": [H, W], "counts": compressed["counts"].decode()}},
            {"id": 4, "image_id": 20, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 1,
             "segmentation": uncompressed_rle(crowd)},
        ],
    }  # fmt: skip
    result = Coco(str(image_dir), str(tmp_path / "instances.json"), data, {2: disc, 3: triangle, 4: crowd})
    result.write()
    return result


def test_categories_sorted_by_id_and_labels_contiguous(coco):
    ds = coco.load()
    assert ds.categories == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    assert ds.category_ids == [3, 7] and ds.classes == ["cat", "dog"]
    assert len(ds) == 3 and ds.image_ids == [10, 20, 30]
    assert ds.image_path(1) == os.path.join(coco.image_dir, "b.png")
    assert ds.skipped.total() == 0 and ds.skipped.summary() == "" and ds.skipped.as_dict() == {}


def test_image_and_target_types(coco):
    image, target = coco.load()[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32 and image.shape == (3, H, W)
    assert 0 <= image.min() and image.max() <= 1
    red = torch.from_numpy(np.arange(W) * 6 / 255).float()
    torch.testing.assert_close(image[0, 5], red)
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format == tv_tensors.BoundingBoxFormat.XYXY
    assert tuple(boxes.canvas_size) == (H, W) and boxes.dtype == torch.float32
    x, y, w, h = coco.ann(2)["bbox"]
    torch.testing.assert_close(boxes.as_subclass(torch.Tensor), torch.tensor([[5.0, 4, 15, 12], [x, y, x + w, y + h]]))
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [2, 1]
    assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].dtype == torch.uint8
    assert target["masks"].shape == (2, H, W)
    assert target["image_id"] == 10
    # area: the polygon's when missing (a 10x8 rectangle), as given otherwise
    assert target["area"].dtype == torch.float32 and target["area"].tolist() == [80.0, 123.0]
    assert target["iscrowd"].dtype == torch.int64 and target["iscrowd"].tolist() == [0, 0]


def test_polygon_and_rle_masks_decode_to_the_drawn_pixels(coco):
    ds = coco.load()
    masks_a, masks_b = ds[0][1]["masks"].numpy(), ds[1][1]["masks"].numpy()
    reference = COCO(coco.ann_file)
    np.testing.assert_array_equal(masks_a[0], reference.annToMask(coco.ann(1)))  # polygon
    rectangle = np.zeros((H, W), dtype=np.uint8)
    rectangle[4:12, 5:15] = 1
    np.testing.assert_array_equal(masks_a[0], rectangle)
    np.testing.assert_array_equal(masks_a[1], coco.masks[2])  # uncompressed RLE
    np.testing.assert_array_equal(masks_b[0], coco.masks[3])  # compressed RLE


def test_boxes_clipped_crowd_left_out_of_targets_but_kept_for_evaluation(coco):
    ds = coco.load()
    _, target = ds[1]
    assert target["boxes"].tolist() == [[28.0, 18.0, 40.0, 30.0]]  # [28, 18, 20, 20] clipped to the image
    assert target["labels"].tolist() == [1] and target["masks"].shape == (1, H, W) and target["iscrowd"].tolist() == [0]
    gt = {a["id"]: a for a in ds.coco_gt["annotations"]}
    assert sorted(gt) == [1, 2, 3, 4] and gt[4]["iscrowd"] == 1
    assert gt[3]["bbox"] == [28.0, 18.0, 12.0, 12.0]
    assert all("area" in a and a["iscrowd"] in (0, 1) for a in gt.values())
    assert gt[4]["area"] == 100.0 and gt[3]["area"] == float(coco.masks[3].sum())
    assert [(i["id"], i["width"], i["height"]) for i in ds.coco_gt["images"]] == [(10, W, H), (20, W, H), (30, W, H)]
    assert [c["id"] for c in ds.coco_gt["categories"]] == [3, 7]


def test_grey_and_palette_images_become_rgb(coco):
    ds = coco.load()
    grey = ds[1][0]
    assert grey.shape == (3, H, W)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])
    assert ds[2][0].shape == (3, H, W)


def test_image_without_annotations_gives_empty_target(coco):
    _, target = coco.load()[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, H, W) and target["area"].shape == (0,) and target["iscrowd"].shape == (0,)


def test_coco_gt_scores_perfect_detections_perfectly(coco, capsys):
    ds = coco.load()
    gt = COCO()
    gt.dataset = ds.coco_gt
    gt.createIndex()
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
         "segmentation": mask_utils.encode(np.asfortranarray(gt.annToMask(a)))}
        for a in ds.coco_gt["annotations"] if not a["iscrowd"]
    ]  # fmt: skip
    for iou_type in ("bbox", "segm"):
        evaluator = COCOeval(gt, gt.loadRes([dict(d) for d in detections]), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0), iou_type


def test_v2_transforms_flip_image_boxes_and_masks_together(coco):
    plain = coco.load()
    flipped = CocoDetection(coco.image_dir, coco.ann_file, transforms=v2.Compose([v2.RandomHorizontalFlip(p=1)]))
    (image, target), (image_f, target_f) = plain[0], flipped[0]
    torch.testing.assert_close(image_f.as_subclass(torch.Tensor), image.flip(-1).as_subclass(torch.Tensor))
    assert isinstance(target_f["boxes"], tv_tensors.BoundingBoxes)
    x1, y1, x2, y2 = target["boxes"].unbind(-1)
    expected = torch.stack([W - x2, y1, W - x1, y2], dim=-1)
    torch.testing.assert_close(target_f["boxes"].as_subclass(torch.Tensor), expected.as_subclass(torch.Tensor))
    assert torch.equal(target_f["masks"], target["masks"].flip(-1))
    for k, mask in enumerate(target_f["masks"]):  # each flipped mask still fills its flipped box
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == target_f["boxes"][k].tolist()
    assert torch.equal(target_f["labels"], target["labels"])


def test_boxes_only_without_masks(coco):
    del coco.ann(1)["segmentation"]
    with pytest.raises(DatasetError, match=r"annotation 1 \(image a.png\).*no segmentation.*with_masks=False"):
        coco.load(skip_bad=True)  # not a skippable problem
    ds = coco.load(with_masks=False)
    _, target = ds[0]
    assert "masks" not in target and target["area"].tolist() == [80.0, 123.0]  # w * h without a mask


# -- bad input: named in the error, or left out and counted -----------------------------------------------------------


def test_missing_annotation_file_or_image_folder(coco, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDetection(coco.image_dir, str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="no_images"):
        CocoDetection(str(tmp_path / "no_images"), coco.ann_file)


def test_annotation_file_not_coco(coco):
    with open(coco.ann_file, "w") as f:
        f.write("{not json")
    with pytest.raises(DatasetError, match="instances.json is not a JSON file"):
        CocoDetection(coco.image_dir, coco.ann_file)
    del coco.data["categories"]
    with pytest.raises(DatasetError, match='instances.json has no "categories" key'):
        coco.load()


@pytest.mark.parametrize(
    "section, duplicate, message",
    [
        ("images", {"id": 10, "file_name": "c.png"}, "two images with id 10"),
        ("annotations", {"id": 2, "image_id": 30, "category_id": 3, "bbox": [1, 1, 2, 2]}, "two annotations with id 2"),
        ("categories", {"id": 3, "name": "cow"}, "two categories with id 3 .'cat' and 'cow'."),
    ],
)
def test_duplicate_ids(coco, section, duplicate, message):
    coco.data[section].append(duplicate)
    with pytest.raises(DatasetError, match=message):
        coco.load(skip_bad=True)


def test_annotation_for_an_image_not_listed(coco):
    coco.ann(3)["image_id"] = 99
    with pytest.raises(DatasetError, match="annotation 3 in .*instances.json is for image_id 99"):
        coco.load(skip_bad=True)


def test_image_size_disagreeing_with_the_file_is_never_skipped(coco):
    coco.data["images"][0]["width"] = 41
    with pytest.raises(DatasetError, match="a.png is 40x30 but listed as 41x30"):
        coco.load(skip_bad=True)


def test_rle_of_another_size(coco):
    coco.ann(3)["segmentation"]["size"] = [W, H]
    with pytest.raises(DatasetError, match=r"annotation 3 .*\[40, 30\].*b.png is \[30, 40\]"):
        coco.load(skip_bad=True)


def test_missing_image(coco):
    os.remove(os.path.join(coco.image_dir, "b.png"))
    with pytest.raises(DatasetError, match=r"1 entries cannot be used: 1 missing image \(b.png .*--skip-bad"):
        coco.load()
    ds = coco.load(skip_bad=True)
    # its two annotations go with it, counted once, as the image
    assert ds.skipped.as_dict() == {"missing_image": 1} and ds.skipped.total() == 1
    assert ds.image_ids == [10, 30] and len(ds) == 2
    assert [a["id"] for a in ds.coco_gt["annotations"]] == [1, 2]
    assert [i["id"] for i in ds.coco_gt["images"]] == [10, 30]
    assert ds[1][1]["image_id"] == 30


def test_corrupt_image(coco):
    with open(os.path.join(coco.image_dir, "a.png"), "wb") as f:
        f.write(b"this is not a png")
    with pytest.raises(DatasetError, match=r"1 unreadable image \(a.png"):
        coco.load()
    ds = coco.load(skip_bad=True)
    assert ds.skipped.as_dict() == {"corrupt_image": 1}
    assert ds.image_ids == [20, 30] and [a["id"] for a in ds.coco_gt["annotations"]] == [3, 4]


def test_unknown_category(coco):
    coco.ann(2)["category_id"] = 5
    with pytest.raises(
        DatasetError, match=r"annotation with an unknown category \(annotation 2 in a.png: category_id 5"
    ):
        coco.load()
    ds = coco.load(skip_bad=True)
    assert ds.skipped.as_dict() == {"unknown_category": 1}
    assert ds[0][1]["labels"].tolist() == [2] and ds[0][1]["masks"].shape == (1, H, W)
    assert 2 not in [a["id"] for a in ds.coco_gt["annotations"]]


def test_degenerate_boxes(coco):
    coco.ann(1)["bbox"] = [5, 4, 0, 8]
    coco.ann(2)["bbox"] = [1, 2, math.nan, 3]
    coco.ann(3)["bbox"] = [45, 5, 10, 10]  # wholly right of the image
    coco.ann(4)["bbox"] = [1, 2, 3]
    with pytest.raises(DatasetError, match="4 entries cannot be used: 4 degenerate boxes") as raised:
        coco.load()
    message = str(raised.value)
    assert "annotation 1 in a.png: w=0 h=8" in message
    assert "annotation 3 in b.png: w=0 h=10 after clipping to the 40x30 image" in message
    assert "annotation 4 in b.png: bbox [1, 2, 3] is not 4 finite numbers" in message
    ds = coco.load(skip_bad=True)
    assert ds.skipped.as_dict() == {"degenerate_box": 4} and len(ds) == 3  # images stay, empty
    assert ds.coco_gt["annotations"] == [] and ds[0][1]["boxes"].shape == (0, 4)


def test_several_problems_counted_each(coco):
    os.remove(os.path.join(coco.image_dir, "c.png"))
    coco.ann(1)["bbox"] = [5, 4, 10, -1]
    coco.ann(2)["category_id"] = 4
    ds = coco.load(skip_bad=True)
    assert ds.skipped.as_dict() == {"missing_image": 1, "degenerate_box": 1, "unknown_category": 1}
    assert ds.skipped.total() == 3
    assert ds.skipped.summary() == (
        "1 missing image (c.png (no such file)); 1 degenerate box (annotation 1 in a.png: w=10 h=-1); "
        "1 annotation with an unknown category (annotation 2 in a.png: category_id 4)"
    )
    assert ds.image_ids == [10, 20] and [a["id"] for a in ds.coco_gt["annotations"]] == [3, 4]


def test_summary_shows_a_few_examples():
    skipped = SkippedAnnotations()
    assert skipped.summary() == "" and skipped.total() == 0
    for k in range(7):
        skipped.add("degenerate_box", f"annotation {k}")
    assert skipped.counts == {"degenerate_box": 7} and len(skipped.examples["degenerate_box"]) == 5
    assert (
        skipped.summary()
        == "7 degenerate boxes (annotation 0, annotation 1, annotation 2, annotation 3, annotation 4, ...)"
    )
    with pytest.raises(ValueError, match="unknown reason"):
        skipped.add("tired", "x")


def test_crowd_region_without_mask_gets_its_box_for_mask_evaluation(coco):
    del coco.ann(4)["segmentation"]
    gt = {a["id"]: a for a in coco.load().coco_gt["annotations"]}
    assert gt[4]["segmentation"] == [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]] and gt[4]["area"] == 100.0
    assert "segmentation" not in {a["id"]: a for a in coco.load(with_masks=False).coco_gt["annotations"]}[4]


def test_mask_crops_hold_the_masks_the_dense_targets_hold(coco):
    """Polygon, uncompressed and compressed RLE, a mask past the image's corner, an image without objects."""
    dense, crops = coco.load(), coco.load(mask_crops=True)
    for index in range(len(dense)):
        masks = crops[index][1]["masks"]
        assert isinstance(masks, BoxMasks) and masks.canvas == (H, W)
        assert torch.equal(masks.dense(), dense[index][1]["masks"].as_subclass(torch.Tensor))


def test_flip_of_mask_crops_equals_v2_flip_of_dense_masks(coco):
    v2_flipped = CocoDetection(coco.image_dir, coco.ann_file, transforms=v2.RandomHorizontalFlip(p=1))
    ours = CocoDetection(coco.image_dir, coco.ann_file, transforms=RandomHorizontalFlip(p=1), mask_crops=True)
    for (image, target), (image_c, target_c) in zip(v2_flipped, ours):
        assert torch.equal(image_c, image)
        assert torch.equal(target_c["boxes"], target["boxes"]) and target_c["boxes"].canvas_size == (H, W)
        assert torch.equal(target_c["masks"].dense(), target["masks"].as_subclass(torch.Tensor))
