"""torchvision's Mask R-CNN trained on :class:`~botnet.data.box_masks.BoxMasks` targets: the resize leaves
the crops as they are and the mask loss samples its targets from them, so a step's cost no longer grows
with objects x image pixels. Dense (N, H, W) masks train exactly as in torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..data.box_masks import BoxMasks

__all__ = ["BoxMaskRoIHeads", "BoxMaskTransform", "train_on_box_masks"]


def _box_masks(targets) -> bool:
    return targets is not None and len(targets) > 0 and isinstance(targets[0].get("masks"), BoxMasks)


class BoxMaskTransform(GeneralizedRCNNTransform):
    """The detection resize, passing BoxMasks through: their targets are sampled at the image's own scale."""

    def resize(self, image: Tensor, target: dict | None = None) -> tuple[Tensor, dict | None]:
        if target is None or not isinstance(target.get("masks"), BoxMasks):
            return super().resize(image, target)
        rest = {key: value for key, value in target.items() if key != "masks"}
        image, rest = super().resize(image, rest)
        return image, {**rest, "masks": target["masks"]}


class BoxMaskRoIHeads(RoIHeads):
    """The RoI heads with the mask loss of Mask R-CNN (He et al. 2017: per-pixel sigmoid cross-entropy on
    the matched class's 28 x 28 logits of each positive RoI) taken from BoxMasks targets.

    torchvision computes the box branch and the sampling of RoIs as always; only the mask branch, hidden
    from it while it runs, is computed here.
    """

    _masks_apart = False  # the mask branch is computed by this class for the call under way
    _sampled: tuple | None = None

    def has_mask(self) -> bool:
        return not self._masks_apart and super().has_mask()

    def select_training_samples(self, proposals, targets):
        sampled = super().select_training_samples(proposals, targets)
        self._sampled = sampled
        return sampled

    def forward(self, features, proposals, image_shapes, targets=None):
        if not (self.training and super().has_mask() and _box_masks(targets)):
            return super().forward(features, proposals, image_shapes, targets)
        self._masks_apart = True
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
            sampled = self._sampled
        finally:
            self._masks_apart, self._sampled = False, None
        losses["loss_mask"] = self._mask_loss(features, sampled, image_shapes, [t["masks"] for t in targets])
        return result, losses

    def _mask_loss(self, features, sampled, image_shapes, masks: list[BoxMasks]) -> Tensor:
        proposals, matched_idxs, labels, _ = sampled
        positive = [torch.where(image_labels > 0)[0] for image_labels in labels]
        boxes = [image_proposals[pos] for image_proposals, pos in zip(proposals, positive)]
        mask_features = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        logits = self.mask_predictor(mask_features)
        size = logits.shape[-1]
        targets = torch.cat([
            image_masks.roi_targets(image_boxes, matched[pos], shape, size)
            for image_masks, image_boxes, matched, pos, shape in zip(masks, boxes, matched_idxs, positive, image_shapes)
        ])  # fmt: skip
        classes = torch.cat([image_labels[pos] for image_labels, pos in zip(labels, positive)])
        if targets.numel() == 0:
            return logits.sum() * 0
        chosen = logits[torch.arange(len(classes), device=classes.device), classes]  # the matched class's logits
        return F.binary_cross_entropy_with_logits(chosen, targets)


def train_on_box_masks(model: MaskRCNN) -> MaskRCNN:
    """``model`` (a torchvision Mask R-CNN) taking BoxMasks targets as well as dense masks. Its modules and
    weights stay as they are; only the transform's and the RoI heads' classes change."""
    model.transform.__class__ = BoxMaskTransform
    model.roi_heads.__class__ = BoxMaskRoIHeads
    return model
