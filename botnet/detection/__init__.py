"""BoTNet backbones for torchvision's Faster R-CNN and Mask R-CNN, and COCO metrics."""

from .backbone import DETECTION_IMG_SIZE, botnet_fpn_backbone, replace_batch_norm
from .metrics import COCO_STATS, coco_metrics, detections_to_coco
from .models import (
    DETECTORS,
    create_detector,
    fasterrcnn_botnet50_fpn,
    fasterrcnn_botnet101_fpn,
    fasterrcnn_botnet152_fpn,
    fasterrcnn_botnet200_fpn,
    fasterrcnn_resnet50_fpn,
    maskrcnn_botnet50_fpn,
    maskrcnn_botnet101_fpn,
    maskrcnn_botnet152_fpn,
    maskrcnn_botnet200_fpn,
    maskrcnn_resnet50_fpn,
)

__all__ = [
    "COCO_STATS",
    "DETECTION_IMG_SIZE",
    "DETECTORS",
    "botnet_fpn_backbone",
    "coco_metrics",
    "create_detector",
    "detections_to_coco",
    "fasterrcnn_botnet50_fpn",
    "fasterrcnn_botnet101_fpn",
    "fasterrcnn_botnet152_fpn",
    "fasterrcnn_botnet200_fpn",
    "fasterrcnn_resnet50_fpn",
    "maskrcnn_botnet50_fpn",
    "maskrcnn_botnet101_fpn",
    "maskrcnn_botnet152_fpn",
    "maskrcnn_botnet200_fpn",
    "maskrcnn_resnet50_fpn",
    "replace_batch_norm",
]
