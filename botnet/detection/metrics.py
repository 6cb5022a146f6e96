"""COCO box and mask AP with pycocotools, the reference implementation, per class too, and the
confusion of classes with each other and with the background.

Detections are collected as COCO result dicts (boxes as [x, y, w, h], masks
as compressed RLE) and scored against a COCO ground-truth dict.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "COCO_STATS", "CONFUSION_IOU", "CONFUSION_SCORE", "DetectionEvaluation", "coco_metrics", "detection_confusion",
    "detections_to_coco", "evaluate_coco", "per_class_table",
]  # fmt: skip

# The first six entries of COCOeval.stats, in order, under the names summary.json uses.
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The confusion matrix counts detections scoring at least CONFUSION_SCORE (`botnet detect predict`'s default
# threshold), each matched to the ground-truth object of any class it overlaps by at least CONFUSION_IOU.
CONFUSION_SCORE = 0.5
CONFUSION_IOU = 0.5


def detections_to_coco(
    output: dict[str, torch.Tensor], image_id: int, category_ids: Sequence[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One image's detector output (torchvision format, in original image
    coordinates) as COCO result dicts. Labels 1..K map to ``category_ids[label - 1]``."""
    from pycocotools import mask as mask_utils

    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    rles = None
    if "masks" in output:
        binary = (output["masks"].detach().cpu()[:, 0] > mask_threshold).numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
    results = []
    for i, (box, score, label) in enumerate(zip(xywh, scores, labels)):
        result = dict(image_id=int(image_id), category_id=int(category_ids[label - 1]), bbox=box, score=score)
        if rles is not None:
            rle = rles[i]
            result["segmentation"] = dict(size=list(rle["size"]), counts=rle["counts"].decode("ascii"))
        results.append(result)
    return results


def _coco_evaluators(coco_gt: dict[str, Any], results: Sequence[dict[str, Any]], iou_types: Sequence[str]) -> dict:
    """pycocotools' COCOeval per IoU type, evaluated, accumulated and summarised (``results`` not empty)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    evaluators = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = copy.deepcopy(dict(coco_gt))
        gt.dataset.setdefault("info", {})
        gt.createIndex()
        for iou_type in iou_types:
            if iou_type == "segm" and any("segmentation" not in r for r in results):
                raise ValueError("segm metrics need masks in every result; the detector gives none")
            detections = copy.deepcopy(list(results))
            if iou_type == "segm":  # without boxes, pycocotools takes each detection's area from its mask
                for detection in detections:
                    detection.pop("bbox", None)
            detections = gt.loadRes(detections)
            evaluator = COCOeval(gt, detections, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            evaluators[iou_type] = evaluator
    return evaluators


def coco_metrics(
    coco_gt: dict[str, Any], results: Sequence[dict[str, Any]], iou_types: Sequence[str] = ("bbox", "segm")
) -> dict[str, float]:
    """COCO AP, AP50, AP75, APs, APm, APl in percent per IoU type, keyed like ``bbox_AP``, ``segm_AP50``.

    An empty ``results`` scores 0 everywhere (pycocotools cannot load an empty
    result list). Area ranges with no ground truth score -100 (pycocotools' -1)."""
    if not results:
        return {f"{iou_type}_{name}": 0.0 for iou_type in iou_types for name in COCO_STATS}
    return _summary(_coco_evaluators(coco_gt, results, iou_types))


def _summary(evaluators: dict) -> dict[str, float]:
    return {
        f"{iou_type}_{name}": float(value) * 100
        for iou_type, evaluator in evaluators.items()
        for name, value in zip(COCO_STATS, evaluator.stats[: len(COCO_STATS)])
    }


@dataclass
class DetectionEvaluation:
    """A detector's scores on a held-out set.

    ``metrics``: as :func:`coco_metrics`. ``per_class``: for each class (by name), its ground-truth
    ``objects`` and, per IoU type, AP and AP50 in percent (None for a class with no objects).
    ``pr_curves``: per IoU type and class, the precision at recall 0, 0.01, ..., 1 at IoU 0.5 (COCO's
    interpolated precision, 100 detections an image; 0 past the recall reached). ``confusion``: counts,
    rows the true class and columns the predicted one, the classes then "background" in both (see
    :func:`detection_confusion`)."""

    metrics: dict[str, float]
    classes: list[str]
    per_class: dict[str, dict[str, Any]]
    pr_curves: dict[str, dict[str, list[float]]]
    confusion: list[list[int]]

    def as_dict(self) -> dict[str, Any]:
        """What summary.json and ``botnet detect eval --json`` hold of it (the curves are drawn, not listed)."""
        confusion = dict(
            labels=[*self.classes, "background"], rows="true", columns="predicted", counts=self.confusion,
            score_threshold=CONFUSION_SCORE, iou_threshold=CONFUSION_IOU,
        )  # fmt: skip
        return dict(per_class=self.per_class, confusion=confusion)


def _class_precision(evaluator, k: int) -> tuple[float | None, float | None, list[float]]:
    """Class ``k``'s AP and AP50 in percent (None without ground truth) and its precision curve at IoU 0.5,
    from COCOeval's accumulated precision (IoU thresholds, recall points, classes, areas, max detections)."""
    precision = evaluator.eval["precision"][:, :, k, 0, -1]  # every area, 100 detections an image
    if not (precision > -1).any():
        return None, None, [0.0] * precision.shape[1]
    at_50 = precision[0]
    return (
        float(precision[precision > -1].mean() * 100),
        float(at_50[at_50 > -1].mean() * 100),
        [max(float(p), 0.0) for p in at_50],
    )


def evaluate_coco(
    coco_gt: dict[str, Any], results: Sequence[dict[str, Any]], iou_types: Sequence[str] = ("bbox", "segm")
) -> DetectionEvaluation:
    """Everything :class:`DetectionEvaluation` holds, from one pycocotools evaluation per IoU type."""
    categories = sorted(coco_gt["categories"], key=lambda c: c["id"])  # COCOeval's order of classes
    names = [c["name"] for c in categories]
    objects = defaultdict(int)
    for annotation in coco_gt["annotations"]:
        objects[annotation["category_id"]] += not annotation.get("iscrowd", 0)
    per_class = {name: {"objects": objects[c["id"]]} for name, c in zip(names, categories)}
    curves: dict[str, dict[str, list[float]]] = {}
    evaluators = _coco_evaluators(coco_gt, results, iou_types) if results else {}
    for iou_type in iou_types:
        curves[iou_type] = {}
        for k, name in enumerate(names):
            if iou_type in evaluators:
                ap, ap50, curve = _class_precision(evaluators[iou_type], k)
            else:  # nothing detected
                ap = ap50 = 0.0 if per_class[name]["objects"] else None
                curve = [0.0] * 101
            per_class[name].update({f"{iou_type}_AP": ap, f"{iou_type}_AP50": ap50})
            curves[iou_type][name] = curve
    metrics = _summary(evaluators) if evaluators else coco_metrics(coco_gt, [], iou_types)
    confusion = detection_confusion(coco_gt, results, [c["id"] for c in categories])
    return DetectionEvaluation(metrics, names, per_class, curves, confusion)


def _xyxy(boxes: list[list[float]]) -> torch.Tensor:
    xywh = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


def detection_confusion(
    coco_gt: dict[str, Any],
    results: Sequence[dict[str, Any]],
    category_ids: Sequence[int],
    score_threshold: float = CONFUSION_SCORE,
    iou_threshold: float = CONFUSION_IOU,
) -> list[list[int]]:
    """Counts of (true class, predicted class), the classes in ``category_ids``' order then background.

    In each image, the detections scoring at least ``score_threshold`` are paired with ground-truth boxes
    of any class, the pair of highest box IoU first, each box in one pair at most, pairs below
    ``iou_threshold`` never: a pair counts at (its truth's class, its detection's class); a detection
    left unpaired at (background, its class); an object left unpaired at (its class, background).
    Crowd regions, as in COCO's evaluation, count nowhere, and nor does an unpaired detection lying
    mostly (``iou_threshold`` of its area) inside one."""
    from torchvision.ops import box_iou

    index = {category_id: i for i, category_id in enumerate(category_ids)}
    background = len(category_ids)
    counts = [[0] * (background + 1) for _ in range(background + 1)]
    truths, found, crowds = defaultdict(list), defaultdict(list), defaultdict(list)
    for annotation in coco_gt["annotations"]:
        if annotation.get("iscrowd", 0):
            crowds[annotation["image_id"]].append(annotation["bbox"])
        else:
            truths[annotation["image_id"]].append((annotation["bbox"], index[annotation["category_id"]]))
    for result in results:
        if result["score"] >= score_threshold:
            found[result["image_id"]].append((result["bbox"], index[result["category_id"]]))
    for image_id in set(truths) | set(found):
        true, predicted = truths[image_id], found[image_id]
        paired_true, paired_predicted = set(), set()
        if true and predicted:
            iou = box_iou(_xyxy([b for b, _ in true]), _xyxy([b for b, _ in predicted]))
            for flat in torch.argsort(iou.flatten(), descending=True, stable=True).tolist():
                i, j = divmod(flat, len(predicted))
                if iou[i, j] < iou_threshold:
                    break
                if i not in paired_true and j not in paired_predicted:
                    paired_true.add(i)
                    paired_predicted.add(j)
                    counts[true[i][1]][predicted[j][1]] += 1
        for i, (_, label) in enumerate(true):
            if i not in paired_true:
                counts[label][background] += 1
        in_crowd = _inside(crowds[image_id], [b for b, _ in predicted], iou_threshold)
        for j, (_, label) in enumerate(predicted):
            if j not in paired_predicted and not in_crowd[j]:
                counts[background][label] += 1
    return counts


def _inside(regions: list[list[float]], boxes: list[list[float]], share: float) -> list[bool]:
    """Whether each of ``boxes`` has at least ``share`` of its area inside one of ``regions`` (all [x, y, w, h])."""
    if not regions or not boxes:
        return [False] * len(boxes)
    outer, inner = _xyxy(regions), _xyxy(boxes)
    corner_low = torch.maximum(outer[:, None, :2], inner[None, :, :2])
    corner_high = torch.minimum(outer[:, None, 2:], inner[None, :, 2:])
    overlap = (corner_high - corner_low).clamp(min=0).prod(-1)
    area = (inner[:, 2:] - inner[:, :2]).prod(-1).clamp(min=1e-9)
    return ((overlap / area) >= share).any(0).tolist()


def per_class_table(per_class: dict[str, dict[str, Any]]) -> list[str]:
    """:attr:`DetectionEvaluation.per_class` as the lines of a table (``-`` where a class has no objects)."""
    kinds = [k for k in ("bbox", "segm") if f"{k}_AP" in next(iter(per_class.values()), {})]
    width = max([5, *(len(name) for name in per_class)])
    lines = [f"{'class':<{width}} {'objects':>7}" + "".join(f" {_KIND_NAMES[k] + ' AP':>8} {'AP50':>6}" for k in kinds)]
    for name, row in per_class.items():
        cells = ""
        for kind in kinds:
            for metric, cell in (("AP", 8), ("AP50", 6)):
                value = row[f"{kind}_{metric}"]
                cells += f" {value:{cell}.1f}" if value is not None else f" {'-':>{cell}}"
        lines.append(f"{name:<{width}} {row['objects']:>7}{cells}")
    return lines


_KIND_NAMES = {"bbox": "box", "segm": "mask"}
