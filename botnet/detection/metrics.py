"""COCO box and mask AP with pycocotools, the reference implementation.

Detections are collected as COCO result dicts (boxes as [x, y, w, h], masks
as compressed RLE) and scored against a COCO ground-truth dict.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["COCO_STATS", "coco_metrics", "detections_to_coco"]

# The first six entries of COCOeval.stats, in order, under the names summary.json uses.
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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


def coco_metrics(
    coco_gt: dict[str, Any], results: Sequence[dict[str, Any]], iou_types: Sequence[str] = ("bbox", "segm")
) -> dict[str, float]:
    """COCO AP, AP50, AP75, APs, APm, APl in percent per IoU type, keyed like ``bbox_AP``, ``segm_AP50``.

    An empty ``results`` scores 0 everywhere (pycocotools cannot load an empty
    result list). Area ranges with no ground truth score -100 (pycocotools' -1)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    metrics: dict[str, float] = {}
    if not results:
        return {f"{iou_type}_{name}": 0.0 for iou_type in iou_types for name in COCO_STATS}
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
            for name, value in zip(COCO_STATS, evaluator.stats[: len(COCO_STATS)]):
                metrics[f"{iou_type}_{name}"] = float(value) * 100
    return metrics
