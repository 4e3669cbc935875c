"""Pure box conversions and transforms, numpy and torch."""

from __future__ import annotations

import numpy as np
import torch

from effteacher.utils.boxes import (
    box_candidates,
    scale_boxes,
    transform_boxes,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)


def test_box_formats_roundtrip_numpy_and_torch():
    b = np.array([[10.0, 20.0, 30.0, 60.0]], dtype=np.float32)
    np.testing.assert_allclose(xywh2xyxy(xyxy2xywh(b)), b)
    np.testing.assert_allclose(xyxy2xywh(b), [[20, 40, 20, 40]])
    n = xyxy2xywhn(b, 100, 200)
    np.testing.assert_allclose(n, [[0.2, 0.2, 0.2, 0.2]])
    np.testing.assert_allclose(xywhn2xyxy(n, 100, 200), b, rtol=1e-6)
    t = torch.tensor(b)
    assert torch.allclose(xywh2xyxy(xyxy2xywh(t)), t)


def test_transform_boxes_flip_and_scale():
    b = np.array([[10.0, 20.0, 30.0, 60.0]], dtype=np.float32)
    flip = np.array([[-1, 0, 100], [0, 1, 0], [0, 0, 1]], dtype=np.float32)  # width 100 hflip
    np.testing.assert_allclose(transform_boxes(b, flip), [[70, 20, 90, 60]])
    scale = np.diag([2.0, 0.5, 1.0]).astype(np.float32)
    out_t = transform_boxes(torch.tensor(b), torch.tensor(scale))
    assert torch.allclose(out_t, torch.tensor([[20.0, 10.0, 60.0, 30.0]]))
    rot = np.array([[0, -1, 100], [1, 0, 0], [0, 0, 1]], dtype=np.float32)  # 90 degrees
    np.testing.assert_allclose(transform_boxes(b, rot), [[40, 10, 80, 30]])


def test_transform_boxes_one_matrix_per_box_equals_one_call_per_matrix():
    """(n, 3, 3) matrices, as the Pseudo Label Assigner maps a batch's boxes: row i goes through matrix i."""
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(6, 2, generator=g) * 50
    boxes = torch.cat([boxes, boxes + 1 + torch.rand(6, 2, generator=g) * 40], 1)
    mats = torch.eye(3).repeat(6, 1, 1)
    mats[:, :2, :2] += torch.rand(6, 2, 2, generator=g) * 0.4 - 0.2  # scale, shear, rotation-like
    mats[:, :2, 2] = torch.rand(6, 2, generator=g) * 30
    mats[:, 2, :2] = torch.rand(6, 2, generator=g) * 1e-3  # perspective
    one_each = torch.cat([transform_boxes(boxes[i:i + 1], mats[i]) for i in range(6)])
    assert torch.allclose(transform_boxes(boxes, mats), one_each, atol=1e-5)
    assert transform_boxes(boxes[:0], mats[:0]).shape == (0, 4)


def test_box_candidates_and_scale_boxes():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 3, 3]], dtype=np.float32)
    assert box_candidates(before, after).tolist() == [True, False, False]
    # 200x100 image letterboxed into 128x128: gain 0.64, pad_h = (128-64)/2 = 32
    boxes = np.array([[0.0, 32.0, 128.0, 96.0]])
    out = scale_boxes((128, 128), boxes, (100, 200))
    np.testing.assert_allclose(out, [[0, 0, 200, 100]], atol=1e-4)
