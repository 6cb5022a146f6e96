"""Faster R-CNN and Mask R-CNN with BoTNet (or ResNet) FPN backbones, as torchvision models.

``create_detector`` builds any pairing; the named builders are the paper's
(Table 3 and 4: BoT50..BoT200 against ResNet-50 with FPN).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from ..errors import ConfigError
from .backbone import DETECTION_IMG_SIZE, botnet_fpn_backbone
from .box_mask_heads import train_on_box_masks
from .matching import box_iou
from .roi_align import MultiScaleRoIAlign

__all__ = [
    "DETECTORS",
    "create_detector",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_botnet50_fpn",
    "fasterrcnn_botnet101_fpn",
    "fasterrcnn_botnet152_fpn",
    "fasterrcnn_botnet200_fpn",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_botnet50_fpn",
    "maskrcnn_botnet101_fpn",
    "maskrcnn_botnet152_fpn",
    "maskrcnn_botnet200_fpn",
]

DETECTORS: dict[str, type[FasterRCNN]] = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN}


# torchvision's names for the four counts of ``proposals``, in its order
_PROPOSAL_ARGS = ("rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
                  "rpn_post_nms_top_n_test")  # fmt: skip


def create_detector(
    detector: str,
    backbone: str,
    num_classes: int,
    *,
    backbone_weights: Mapping[str, Tensor] | str | os.PathLike | None = None,
    trainable_layers: int | None = None,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    norm_layer: Callable[[int], nn.Module] | None = None,
    img_size: int | tuple[int, int] = DETECTION_IMG_SIZE,
    model_overrides: Mapping[str, Any] | None = None,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    box_head_width: int | None = None,
    mask_head_width: int | None = None,
    proposals: Sequence[int] | None = None,
    roi_sampling_ratio: int = 2,
    **kwargs: Any,
) -> FasterRCNN:
    """A torchvision detector ("fasterrcnn" or "maskrcnn") on an FPN over ``backbone``.

    Args:
        detector: "fasterrcnn" or "maskrcnn".
        backbone: a registered model name (``botnet list``).
        num_classes: object classes plus one for the background.
        backbone_weights, trainable_layers, returned_layers, norm_layer, img_size:
            see ``botnet_fpn_backbone``.
        model_overrides: model settings for the backbone (``create_model`` overrides).
        fpn_channels: FPN channels (torchvision: 256).
        anchor_sizes: one anchor size in pixels per pyramid level (P2.. and the
            extra P6), each at aspect ratios 0.5, 1 and 2. Default 8 x each level's
            stride from the backbone's ``feature_info`` (torchvision's 32, 64, 128,
            256, 512 for stride-32 models; 32, 64, 128, 128, 256 for the S1 models,
            whose c5 keeps stride 16); small images need smaller ones.
        box_head_width: width of the two-layer box head (torchvision: 1024).
        mask_head_width: channels of the four mask-head convolutions (torchvision: 256).
        proposals: RPN proposals kept before and after NMS in training, then in testing (torchvision: 2000,
            2000, 1000, 1000).
        roi_sampling_ratio: bilinear samples per RoI-Align bin side (torchvision: 2; 1 samples a
            quarter as much). The box and mask heads pool with ``botnet.detection.roi_align``, which
            computes torchvision's RoI-Align with every level in one gather (faster on a CPU).
        **kwargs: passed on to torchvision's FasterRCNN / MaskRCNN (min_size,
            max_size, rpn_anchor_generator, box_detections_per_img, ...).

    The arguments have the names of ``botnet detect train``'s settings (``--detector``, ``--fpn-channels``,
    ``--proposals``, ``--model-overrides`` of the backbone).

    A Mask R-CNN trains on dense (N, H, W) masks as torchvision's does, and on
    ``BoxMasks`` crops (``CocoDetection(mask_crops=True)``) without full-image float
    copies of every mask each step (``botnet.detection.box_mask_heads``).
    """
    if detector not in DETECTORS:
        raise ConfigError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes counts the background too, so it must be an int >= 2, got {num_classes!r}")
    fpn = botnet_fpn_backbone(
        backbone,
        trainable_layers=trainable_layers,
        returned_layers=returned_layers,
        norm_layer=norm_layer,
        backbone_weights=backbone_weights,
        img_size=img_size,
        out_channels=fpn_channels,
        **dict(model_overrides or {}),
    )
    levels = len(tuple(returned_layers)) + 1  # the FPN levels plus the max-pooled extra one
    if anchor_sizes is None:
        # torchvision's sizes: 8 x each level's stride (P2 32 px ... P6 512 px for stride-32 c5 models).
        anchor_sizes = [8 * stride for stride in fpn.feature_strides]
    else:
        if len(anchor_sizes) != levels:
            raise ConfigError(
                f"anchor_sizes needs one size per pyramid level ({levels} for returned_layers={tuple(returned_layers)}), "
                f"got {tuple(anchor_sizes)}"
            )
        if not all(isinstance(s, int) and s > 0 for s in anchor_sizes):
            raise ConfigError(f"anchor_sizes must be positive ints (pixels), got {tuple(anchor_sizes)}")
    kwargs.setdefault(
        "rpn_anchor_generator", AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * levels)
    )
    if proposals is not None:
        if len(proposals) != 4 or not all(isinstance(n, int) and n > 0 for n in proposals):
            raise ConfigError(
                f"proposals must be four positive ints (before and after NMS, train then test), got {proposals!r}"
            )
        if set(_PROPOSAL_ARGS) & set(kwargs):
            raise ConfigError("give proposals or torchvision's rpn_*_nms_top_n_* arguments, not both")
        kwargs.update(zip(_PROPOSAL_ARGS, proposals))
    if not isinstance(roi_sampling_ratio, int) or roi_sampling_ratio < 1:
        raise ConfigError(f"roi_sampling_ratio must be a positive int, got {roi_sampling_ratio!r}")
    # torchvision's pooling (7 x 7 boxes, 14 x 14 masks, every FPN level but the extra one), every level at once
    names = [str(k) for k in range(levels - 1)]
    kwargs.setdefault("box_roi_pool", MultiScaleRoIAlign(names, 7, roi_sampling_ratio))
    if detector == "maskrcnn":
        kwargs.setdefault("mask_roi_pool", MultiScaleRoIAlign(names, 14, roi_sampling_ratio))
    heads_given = box_head_width is not None or (detector == "maskrcnn" and mask_head_width is not None)
    if box_head_width is not None:
        kwargs["box_head"] = TwoMLPHead(fpn_channels * 7 * 7, box_head_width)
        kwargs["box_predictor"] = FastRCNNPredictor(box_head_width, num_classes)
    elif heads_given:
        kwargs["box_predictor"] = FastRCNNPredictor(1024, num_classes)  # torchvision's default box head width
    if detector == "maskrcnn" and mask_head_width is not None:
        kwargs["mask_head"] = MaskRCNNHeads(fpn_channels, [mask_head_width] * 4, 1)
        kwargs["mask_predictor"] = MaskRCNNPredictor(mask_head_width, mask_head_width, num_classes)
    elif detector == "maskrcnn" and heads_given:
        kwargs["mask_predictor"] = MaskRCNNPredictor(256, 256, num_classes)  # torchvision's default mask head
    # torchvision takes num_classes only when it builds the predictors itself.
    model = DETECTORS[detector](fpn, num_classes=None if heads_given else num_classes, **kwargs)
    model.rpn.box_similarity = model.roi_heads.box_similarity = box_iou  # torchvision's numbers, in fewer passes
    return train_on_box_masks(model) if detector == "maskrcnn" else model


def fasterrcnn_resnet50_fpn(num_classes: int = 91, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN, ResNet-50 FPN: the baseline. Keyword arguments as for ``create_detector``."""
    return create_detector("fasterrcnn", "resnet50", num_classes, **kwargs)


def fasterrcnn_botnet50_fpn(num_classes: int = 91, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN, BoT50 FPN (BoT blocks in c5). Keyword arguments as for ``create_detector``."""
    return create_detector("fasterrcnn", "botnet50", num_classes, **kwargs)


def fasterrcnn_botnet101_fpn(num_classes: int = 91, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN, BoT101 FPN. Keyword arguments as for ``create_detector``."""
    return create_detector("fasterrcnn", "botnet101", num_classes, **kwargs)


def fasterrcnn_botnet152_fpn(num_classes: int = 91, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN, BoT152 FPN. Keyword arguments as for ``create_detector``."""
    return create_detector("fasterrcnn", "botnet152", num_classes, **kwargs)


def fasterrcnn_botnet200_fpn(num_classes: int = 91, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN, BoT200 FPN. Keyword arguments as for ``create_detector``."""
    return create_detector("fasterrcnn", "botnet200", num_classes, **kwargs)


def maskrcnn_resnet50_fpn(num_classes: int = 91, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN, ResNet-50 FPN: the paper's baseline (Table 3). Keyword arguments as for ``create_detector``."""
    return create_detector("maskrcnn", "resnet50", num_classes, **kwargs)


def maskrcnn_botnet50_fpn(num_classes: int = 91, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN, BoT50 FPN (paper Table 3). Keyword arguments as for ``create_detector``."""
    return create_detector("maskrcnn", "botnet50", num_classes, **kwargs)


def maskrcnn_botnet101_fpn(num_classes: int = 91, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN, BoT101 FPN (paper Table 4). Keyword arguments as for ``create_detector``."""
    return create_detector("maskrcnn", "botnet101", num_classes, **kwargs)


def maskrcnn_botnet152_fpn(num_classes: int = 91, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN, BoT152 FPN (paper Table 4). Keyword arguments as for ``create_detector``."""
    return create_detector("maskrcnn", "botnet152", num_classes, **kwargs)


def maskrcnn_botnet200_fpn(num_classes: int = 91, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN, BoT200 FPN (paper Table 4). Keyword arguments as for ``create_detector``."""
    return create_detector("maskrcnn", "botnet200", num_classes, **kwargs)
