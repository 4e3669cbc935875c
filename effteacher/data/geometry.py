"""Geometric transforms as 3x3 matrices: random affine, flips, letterbox; warping images and mapping boxes.

Matrices act on continuous pixel-corner coordinates (pixel ``i`` covers ``[i, i+1)``), so a box mapped through a
matrix lands exactly on the warped pixels; ``warp`` converts to OpenCV's pixel-centre convention.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from effteacher.utils.boxes import box_candidates, clip_boxes, transform_boxes

PAD_VALUE = 114  # grey of letterbox/mosaic/affine borders (YOLOv5)
MIN_BOX_PX = 2.0  # boxes narrower/shorter than this after augmentation are dropped
MIN_AREA_FRAC = 0.1  # boxes keeping less of their area than this are dropped


def letterbox_matrix(ratio: tuple[float, float], pad: tuple[float, float]) -> np.ndarray:
    """3x3 matrix of a letterbox from its ((ratio_h, ratio_w), (pad_w, pad_h))."""
    return np.array([[ratio[1], 0, pad[0]], [0, ratio[0], pad[1]], [0, 0, 1]], dtype=np.float64)


def random_affine_matrix(
    rng: np.random.Generator,
    out_hw: tuple[int, int],
    in_hw: tuple[int, int],
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
) -> np.ndarray:
    """Sample a YOLOv5-style random perspective/affine matrix (3x3 float64), input px -> output px.

    The input centre goes to the origin, then perspective, rotation+scale (+/- degrees, gain in
    [1-scale, 1+scale]), shear (+/- degrees), and a translation to the output centre shifted by
    +/- translate of the output size. Always draws the same number of values from ``rng``.
    """
    u = rng.uniform(-1.0, 1.0, size=8)
    c = np.eye(3)
    c[0, 2], c[1, 2] = -in_hw[1] / 2, -in_hw[0] / 2
    p = np.eye(3)
    p[2, 0], p[2, 1] = u[0] * perspective, u[1] * perspective
    r = np.eye(3)
    r[:2] = cv2.getRotationMatrix2D((0.0, 0.0), float(u[2] * degrees), float(1.0 + u[3] * scale))
    s = np.eye(3)
    s[0, 1] = math.tan(math.radians(u[4] * shear))
    s[1, 0] = math.tan(math.radians(u[5] * shear))
    t = np.eye(3)
    t[0, 2] = (0.5 + u[6] * translate) * out_hw[1]
    t[1, 2] = (0.5 + u[7] * translate) * out_hw[0]
    return t @ s @ r @ p @ c


def fliplr_matrix(width: int) -> np.ndarray:
    """3x3 matrix of a horizontal flip of an image ``width`` px wide: x -> width - x."""
    return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def flipud_matrix(height: int) -> np.ndarray:
    """3x3 matrix of a vertical flip of an image ``height`` px high: y -> height - y."""
    return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, height], [0.0, 0.0, 1.0]])


def fliplr(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip; returns (flipped image, its 3x3 matrix)."""
    return np.ascontiguousarray(img[:, ::-1]), fliplr_matrix(img.shape[1])


def flipud(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertical flip; returns (flipped image, its 3x3 matrix)."""
    return np.ascontiguousarray(img[::-1]), flipud_matrix(img.shape[0])


def warp(img: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Warp ``img`` by a 3x3 pixel-corner matrix into an ``out_hw`` image (border 114, bilinear)."""
    out_h, out_w = out_hw
    if img.shape[:2] == (out_h, out_w) and np.allclose(matrix, np.eye(3)):
        return img.copy()
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    m = np.linalg.inv(half) @ matrix @ half  # corner coords -> OpenCV's pixel-centre coords
    border = (PAD_VALUE,) * 3
    if m[2, 0] != 0 or m[2, 1] != 0:
        return cv2.warpPerspective(img, m, (out_w, out_h), borderValue=border)
    return cv2.warpAffine(img, m[:2], (out_w, out_h), borderValue=border)


def transform_and_filter(
    boxes: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int], area_thr: float = MIN_AREA_FRAC
) -> tuple[np.ndarray, np.ndarray]:
    """Map xyxy boxes through ``matrix``, clip to ``out_hw`` and drop boxes that did not survive.

    A box is dropped when a side is < 2 px or it keeps < area_thr of its pre-augmentation area
    (the original area scaled by the matrix's area gain). Returns (boxes (k, 4) float32, keep (n,) bool).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return boxes, np.zeros((0,), dtype=bool)
    new = clip_boxes(transform_boxes(boxes.astype(np.float64), matrix), out_hw)
    gain = math.sqrt(abs(np.linalg.det(matrix[:2, :2])) or 1.0)
    keep = box_candidates(boxes * gain, new, wh_thr=MIN_BOX_PX, area_thr=area_thr)
    return new[keep].astype(np.float32), keep
