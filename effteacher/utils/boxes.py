"""Pure box-format conversions and geometric box transforms, for numpy arrays and torch tensors.

Formats: ``xyxy`` = (x1, y1, x2, y2) corners, ``xywh`` = (cx, cy, w, h) centre and size; a trailing
``n`` means normalised to 0-1 by the image width/height. Every function is vectorised over boxes
(shape ``(..., 4)``) and returns the same array type it was given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _clone(x: Any) -> Any:
    return x.clone() if hasattr(x, "clone") else np.array(x, copy=True)


def xywh2xyxy(x: Any) -> Any:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    y = _clone(x)
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def xyxy2xywh(x: Any) -> Any:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    y = _clone(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywhn2xyxy(x: Any, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> Any:
    """Normalised (cx, cy, w, h) -> pixel (x1, y1, x2, y2), with an optional offset (padding)."""
    y = _clone(x)
    y[..., 0] = w * (x[..., 0] - x[..., 2] / 2) + padw
    y[..., 1] = h * (x[..., 1] - x[..., 3] / 2) + padh
    y[..., 2] = w * (x[..., 0] + x[..., 2] / 2) + padw
    y[..., 3] = h * (x[..., 1] + x[..., 3] / 2) + padh
    return y


def xyxy2xywhn(x: Any, w: float, h: float) -> Any:
    """Pixel (x1, y1, x2, y2) -> normalised (cx, cy, w, h)."""
    y = xyxy2xywh(x)
    y[..., [0, 2]] = y[..., [0, 2]] / w
    y[..., [1, 3]] = y[..., [1, 3]] / h
    return y


def clip_boxes(boxes: Any, shape: tuple[int, int]) -> Any:
    """Clip xyxy boxes in place to an image of ``shape`` = (height, width); returns them."""
    h, w = shape
    if hasattr(boxes, "clamp_"):
        boxes[..., 0].clamp_(0, w)
        boxes[..., 1].clamp_(0, h)
        boxes[..., 2].clamp_(0, w)
        boxes[..., 3].clamp_(0, h)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


def transform_boxes(boxes: Any, matrix: Any) -> Any:
    """Map xyxy boxes through a 3x3 projective matrix; the result is the corners' bounding box.

    boxes: (n, 4) xyxy in the source image's pixels. matrix: (3, 3) mapping source pixel
    coordinates (x, y, 1) to destination pixels, or (torch only) (n, 3, 3), one matrix per box.
    Returns (n, 4) xyxy in destination pixels (not clipped). Works for numpy and torch.
    """
    n = boxes.shape[0]
    is_torch = hasattr(boxes, "new_ones")
    if is_torch:
        corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n, 4, 2)
        pts = torch.cat([corners, boxes.new_ones(n, 4, 1)], 2)  # (n, 4, 3)
        m = matrix.to(boxes.dtype)
        pts = pts @ (m.transpose(-1, -2) if m.ndim == 3 else m.T)
        pts = pts[..., :2] / pts[..., 2:3]
        return torch.cat([pts.amin(1), pts.amax(1)], 1)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n * 4, 2)
    pts = np.concatenate([corners, np.ones((n * 4, 1), dtype=corners.dtype)], 1) @ np.asarray(matrix).T
    pts = pts[:, :2] / pts[:, 2:3]
    pts = pts.reshape(n, 4, 2)
    return np.concatenate([pts.min(1), pts.max(1)], 1).astype(boxes.dtype, copy=False)


def box_candidates(
    box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100, area_thr: float = 0.1
) -> np.ndarray:
    """Keep mask for boxes that survived augmentation.

    box1: (n, 4) xyxy before augmentation (scaled to the output), box2: (n, 4) after. A box is
    kept when both sides are > wh_thr pixels, it keeps > area_thr of its area and its aspect ratio
    stays < ar_thr.
    """
    w1, h1 = box1[:, 2] - box1[:, 0], box1[:, 3] - box1[:, 1]
    w2, h2 = box2[:, 2] - box2[:, 0], box2[:, 3] - box2[:, 1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < ar_thr)


def scale_boxes(
    img1_shape: tuple[int, int],
    boxes: Any,
    img0_shape: tuple[int, int],
    ratio_pad: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Any:
    """Undo a letterbox: xyxy boxes in the letterboxed ``img1_shape`` (h, w) -> original ``img0_shape``.

    ratio_pad: ((ratio_h, ratio_w), (pad_w, pad_h)) as returned by the letterbox; computed from the
    shapes when omitted. Clips to the original image. Modifies and returns ``boxes``.
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad = ((img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2)
        gx = gy = gain
    else:
        gy, gx = ratio_pad[0]
        pad = ratio_pad[1]
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., [0, 2]] /= gx
    boxes[..., [1, 3]] /= gy
    return clip_boxes(boxes, img0_shape)
