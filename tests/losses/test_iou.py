"""IoU variants (IoU, GIoU, CIoU) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from effteacher.losses.iou import bbox_iou


def xyxy(*v: float) -> torch.Tensor:
    return torch.tensor([v], dtype=torch.float64)


def test_identical_boxes_score_one() -> None:
    b = torch.tensor([[5.0, 5.0, 2.0, 3.0]], dtype=torch.float64)
    for kw in ({}, {"GIoU": True}, {"DIoU": True}, {"CIoU": True}):
        assert bbox_iou(b, b, **kw).item() == pytest.approx(1.0, abs=1e-6)


def test_giou_disjoint_hand_value() -> None:
    # IoU 0, union 2, enclosing box 3x1 -> GIoU = 0 - (3 - 2) / 3
    g = bbox_iou(xyxy(0, 0, 1, 1), xyxy(2, 0, 3, 1), xywh=False, GIoU=True)
    assert g.item() == pytest.approx(-1 / 3, abs=1e-6)
    assert bbox_iou(xyxy(0, 0, 1, 1), xyxy(2, 0, 3, 1), xywh=False).item() == pytest.approx(0.0, abs=1e-9)


def test_ciou_hand_value() -> None:
    # box1 2x2 at (1, 1); box2 2x1 at (2, 0.5): inter 1, union 5, enclosing 3x2, rho^2 = 1.25
    iou = 0.2
    v = 4 / math.pi**2 * (math.atan(2 / 1) - math.atan(2 / 2)) ** 2
    alpha = v / (1 - iou + v)
    expected = iou - 1.25 / 13 - alpha * v
    c = bbox_iou(xyxy(0, 0, 2, 2), xyxy(1, 0, 3, 1), xywh=False, CIoU=True)
    assert c.item() == pytest.approx(expected, abs=1e-6)
    # xywh input gives the same
    c2 = bbox_iou(torch.tensor([[1.0, 1, 2, 2]]), torch.tensor([[2.0, 0.5, 2, 1]]), CIoU=True)
    assert c2.item() == pytest.approx(expected, abs=1e-5)
    d = bbox_iou(xyxy(0, 0, 2, 2), xyxy(1, 0, 3, 1), xywh=False, DIoU=True)
    assert d.item() == pytest.approx(iou - 1.25 / 13, abs=1e-6)
