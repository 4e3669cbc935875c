"""Elementwise IoU, GIoU, DIoU and CIoU between paired boxes (pure tensor maths)."""

from __future__ import annotations

import math

import torch


def bbox_iou(
    box1: torch.Tensor,
    box2: torch.Tensor,
    xywh: bool = True,
    GIoU: bool = False,
    DIoU: bool = False,
    CIoU: bool = False,
    eps: float = 1e-7,
) -> torch.Tensor:
    """IoU of box1[i] with box2[i] (broadcasting), optionally the G/D/C variant.

    box1, box2: (..., 4) as (cx, cy, w, h) when ``xywh`` else (x1, y1, x2, y2). Returns (...,).
    GIoU = IoU - (C - U)/C; DIoU = IoU - rho^2/c^2; CIoU = DIoU - alpha*v with
    v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2, alpha = v / (1 - IoU + v) (alpha carries no gradient).
    """
    if xywh:
        (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
        b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
        b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    else:
        b1x1, b1y1, b1x2, b1y2 = box1.unbind(-1)
        b2x1, b2y1, b2x2, b2y2 = box2.unbind(-1)
        w1, h1 = b1x2 - b1x1, b1y2 - b1y1
        w2, h2 = b2x2 - b2x1, b2y2 - b2y1
    h1, h2 = h1 + eps, h2 + eps  # keeps atan(w/h) finite for degenerate boxes
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (GIoU or DIoU or CIoU):
        return iou
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)  # enclosing box
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    if GIoU and not (DIoU or CIoU):
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4
    if not CIoU:
        return iou - rho2 / c2
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)
