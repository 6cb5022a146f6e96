"""The IoU matrix that matches anchors and proposals to the objects, in fewer passes over memory.

torchvision's RPN compares every anchor with every object (``rpn.box_similarity``, a K x A matrix: 100
objects and 200,000 anchors in a 1,024-px image make 20 million entries), and its ``box_iou`` builds
the corners as K x A x 2 temporaries. :func:`box_iou` computes the same numbers, operation for
operation, from the four coordinates as contiguous vectors, in place where it can.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_iou"]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """The (N, M) IoU of (N, 4) and (M, 4) boxes (x1, y1, x2, y2): equal to ``torchvision.ops.box_iou``
    bit for bit (the same operations in the same order on each entry)."""
    if boxes1.dtype not in (torch.float32, torch.float64) or boxes2.dtype != boxes1.dtype:
        from torchvision.ops import box_iou as reference  # other types: torchvision's upcasting

        return reference(boxes1, boxes2)
    x1, y1, x2, y2 = (column[:, None] for column in boxes1.unbind(1))
    u1, v1, u2, v2 = (column.contiguous() for column in boxes2.unbind(1))
    widths = torch.minimum(x2, u2).sub_(torch.maximum(x1, u1)).clamp_(min=0)
    heights = torch.minimum(y2, v2).sub_(torch.maximum(y1, v1)).clamp_(min=0)
    inter = widths.mul_(heights)
    union = (((x2 - x1) * (y2 - y1)) + (u2 - u1) * (v2 - v1)).sub_(inter)
    return inter.div_(union)
