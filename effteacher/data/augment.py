"""Augmentation views: letterbox, affine, HSV, flips, mosaic, mixup, and the weak/strong unlabeled views.

Every random augmentation SAMPLES its parameters from a passed ``np.random.Generator`` and then
APPLIES them deterministically; the geometric ones return their 3x3 matrix. Matrices act on
continuous pixel-corner coordinates (the coordinates boxes live in: pixel ``i`` covers
``[i, i+1)``), so a box mapped through a matrix lands exactly on the warped pixels; ``warp``
converts to OpenCV's pixel-centre convention. Images are RGB uint8 ``(H, W, 3)``; boxes are
``(n, 4)`` float32 xyxy pixels; everything is vectorised over boxes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np

from effteacher.config import AugmentConfig
from effteacher.data.geometry import (
    PAD_VALUE,
    fliplr,
    fliplr_matrix,
    flipud,
    letterbox_matrix,
    random_affine_matrix,
    transform_and_filter,
    warp,
)
from effteacher.errors import DatasetError
from effteacher.utils.boxes import clip_boxes, transform_boxes

MIXUP_BETA = 32.0  # mixup ratio ~ Beta(32, 32), i.e. close to 0.5 (YOLOv5)


# ---------------------------------------------------------------- loading and letterbox
def load_resized(
    path: str | Path, imgsz: int, fast: bool = False
) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Read an image as RGB and resize it so its long side is ``imgsz`` (aspect kept).

    Shrinking uses area interpolation (best quality, for evaluation) unless ``fast`` (bilinear,
    about 3x faster: for augmented training views, like YOLOv5).

    Returns (img (h, w, 3) uint8 RGB, (h0, w0) original shape, (h, w) resized shape).
    Raises DatasetError naming the file when it cannot be read.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None and not Path(path).exists():
        raise DatasetError(f"{path}: not found; fix the path or remove it from the list")
    if img is None:
        raise DatasetError(
            f"{path}: cannot read image (missing, corrupt or not an image); "
            "remove it from the dataset or re-run `effteacher check` to find bad files"
        )
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h0, w0 = img.shape[:2]
    r = imgsz / max(h0, w0)
    if r != 1:
        w, h = max(1, round(w0 * r)), max(1, round(h0 * r))
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if r < 1 and not fast else cv2.INTER_LINEAR)
    return img, (h0, w0), img.shape[:2]


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int],
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping aspect ratio and pad (value 114) to ``new_shape`` = (h, w) or a square side.

    auto: pad only up to the next multiple of ``stride`` (minimum rectangle) instead of new_shape.
    scaleup: allow enlarging; False only shrinks (validation).
    Returns (img, (ratio_h, ratio_w), (pad_w, pad_h)): a point (x, y) of the input maps to
    (x * ratio_w + pad_w, y * ratio_h + pad_h). Pads are whole pixels (left/top), so the mapping is exact.
    """
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    h, w = img.shape[:2]
    r = min(new_shape[0] / h, new_shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    out_h, out_w = new_shape
    if auto:
        out_w = nw + (out_w - nw) % stride
        out_h = nh + (out_h - nh) % stride
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    left, top = (out_w - nw) // 2, (out_h - nh) // 2
    img = cv2.copyMakeBorder(
        img, top, out_h - nh - top, left, out_w - nw - left, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    return img, (nh / h, nw / w), (float(left), float(top))


# ---------------------------------------------------------------- geometry


# ---------------------------------------------------------------- photometric
def sample_hsv_gains(rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> np.ndarray:
    """(3,) multiplicative hue/saturation/value gains in [1-g, 1+g]."""
    return rng.uniform(-1.0, 1.0, 3) * np.array([hgain, sgain, vgain]) + 1.0


def apply_hsv(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Apply HSV gains to an RGB uint8 image with lookup tables; returns a new image."""
    if np.allclose(gains, 1.0):
        return img.copy()
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float64)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def augment_hsv(img: np.ndarray, rng: np.random.Generator, h: float, s: float, v: float) -> np.ndarray:
    """Random HSV jitter (YOLOv5): sample gains, apply with LUTs. Shape and dtype are kept."""
    return apply_hsv(img, sample_hsv_gains(rng, h, s, v))


@functools.lru_cache(maxsize=8)
def _photometric(color_jitter: float, blur: float, noise: float):  # -> albumentations.Compose

    return A.Compose(
        [
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=color_jitter),
            A.GaussianBlur(sigma_limit=(0.1, 2.0), p=blur),
            A.GaussNoise(std_range=(0.01, 0.05), p=noise),
        ]
    )


def photometric(img: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """Albumentations colour jitter, gaussian blur and gaussian noise with the config's probabilities.

    The albumentations pipeline is seeded from ``rng`` so the result is reproducible.
    """
    seed = int(rng.integers(0, 2**31 - 1))
    if aug.color_jitter <= 0 and aug.blur <= 0 and aug.noise <= 0:
        return img
    pipe = _photometric(float(aug.color_jitter), float(aug.blur), float(aug.noise))
    pipe.set_random_seed(seed)
    return pipe(image=img)["image"]


def sample_cutout(
    rng: np.random.Generator, hw: tuple[int, int], max_boxes: int = 5, area: tuple[float, float] = (0.02, 0.2)
) -> tuple[np.ndarray, np.ndarray]:
    """Sample random-erasing rectangles WITHOUT looking at any label.

    1..max_boxes rectangles, each covering ``area`` (fraction of the image, uniform) with an
    aspect ratio log-uniform in [0.3, 3.3]. Returns (rects (k, 4) int xyxy, colours (k, 3) uint8).
    """
    h, w = hw
    k = int(rng.integers(1, max_boxes + 1))
    frac = rng.uniform(area[0], area[1], k) / k
    ar = np.exp(rng.uniform(math.log(0.3), math.log(3.3), k))
    bw = np.clip(np.sqrt(frac * h * w * ar), 1, w)
    bh = np.clip(np.sqrt(frac * h * w / ar), 1, h)
    x1 = rng.uniform(0, 1, k) * (w - bw)
    y1 = rng.uniform(0, 1, k) * (h - bh)
    rects = np.stack([x1, y1, x1 + bw, y1 + bh], 1).round().astype(np.int64)
    colours = rng.integers(0, 256, (k, 3)).astype(np.uint8)
    return rects, colours


def apply_cutout(img: np.ndarray, rects: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Fill each xyxy rectangle with its colour; returns a new image."""
    out = img.copy()
    for (x1, y1, x2, y2), c in zip(rects, colours):  # at most a handful of rectangles, not boxes
        out[y1:y2, x1:x2] = c
    return out


# ---------------------------------------------------------------- mosaic and mixup
def sample_mosaic_center(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """Mosaic centre (xc, yc), each uniform in [size/2, 3*size/2) on the 2*size canvas."""
    xc, yc = rng.uniform(size / 2, 3 * size / 2, 2)
    return int(xc), int(yc)


def place_mosaic4(
    imgs: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    classes: Sequence[np.ndarray],
    size: int,
    center: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place 4 images around ``center`` on a (2*size, 2*size) canvas (deterministic part of mosaic).

    Image 0 ends at the centre (top-left quadrant), 1 is top-right, 2 bottom-left, 3 bottom-right;
    each is cropped by the canvas. Its boxes (xyxy px of that image) are offset by its top-left
    corner and clipped to the canvas. Returns (canvas, boxes (n, 4) float32, cls (n,) int64).
    """
    xc, yc = center
    s2 = 2 * size
    canvas = np.full((s2, s2, 3), PAD_VALUE, dtype=np.uint8)
    out_boxes, out_cls = [], []
    for i, img in enumerate(imgs[:4]):
        h, w = img.shape[:2]
        ox = xc - w if i in (0, 2) else xc
        oy = yc - h if i in (0, 1) else yc
        x1a, y1a, x2a, y2a = max(ox, 0), max(oy, 0), min(ox + w, s2), min(oy + h, s2)
        canvas[y1a:y2a, x1a:x2a] = img[y1a - oy : y2a - oy, x1a - ox : x2a - ox]
        b = np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4) + np.array([ox, oy, ox, oy], dtype=np.float32)
        out_boxes.append(b)
        out_cls.append(np.asarray(classes[i], dtype=np.int64).reshape(-1))
    b = clip_boxes(np.concatenate(out_boxes, 0), (s2, s2))
    return canvas, b, np.concatenate(out_cls, 0)


def mosaic4(
    imgs: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    classes: Sequence[np.ndarray],
    size: int,
    rng: np.random.Generator,
    aug: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv5 4-image mosaic: random centre on a 2S canvas, then a random affine down to S x S.

    imgs: 4 RGB images (long side ~size); boxes: 4 arrays (n_i, 4) xyxy px; classes: 4 arrays (n_i,).
    Returns (img (size, size, 3), boxes (n, 4) xyxy px float32, cls (n,) int64).
    """
    center = sample_mosaic_center(rng, size)
    canvas, b, c = place_mosaic4(imgs, boxes, classes, size, center)
    m = random_affine_matrix(
        rng, (size, size), canvas.shape[:2], aug.degrees, aug.translate, aug.scale, aug.shear, aug.perspective
    )
    img = warp(canvas, m, (size, size))
    b, keep = transform_and_filter(b, m, (size, size))
    return img, b, c[keep]


def mixup(
    img1: np.ndarray,
    boxes1: np.ndarray,
    cls1: np.ndarray,
    img2: np.ndarray,
    boxes2: np.ndarray,
    cls2: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend two same-size images with a Beta(32, 32) ratio; boxes and classes are concatenated."""
    if img1.shape != img2.shape:
        raise ValueError(f"mixup needs images of the same shape, got {img1.shape} and {img2.shape}")
    r = rng.beta(MIXUP_BETA, MIXUP_BETA)
    img = (img1.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)).round().astype(np.uint8)
    return img, np.concatenate([boxes1, boxes2], 0), np.concatenate([cls1, cls2], 0)


# ---------------------------------------------------------------- views
def labeled_view(
    img: np.ndarray,
    boxes: np.ndarray,
    cls: np.ndarray,
    out_hw: tuple[int, int],
    rng: np.random.Generator,
    aug: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-mosaic labeled view: letterbox + random affine in one warp, then HSV and flips.

    img: RGB image; boxes (n, 4) xyxy px of img. Returns (img out_hw, boxes xyxy px, cls).
    """
    h, w = img.shape[:2]
    r = min(out_hw[0] / h, out_hw[1] / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    lb = letterbox_matrix((nh / h, nw / w), ((out_hw[1] - nw) // 2, (out_hw[0] - nh) // 2))
    a = random_affine_matrix(rng, out_hw, out_hw, aug.degrees, aug.translate, aug.scale, aug.shear, aug.perspective)
    m = a @ lb
    out = warp(img, m, out_hw)
    boxes, keep = transform_and_filter(boxes, m, out_hw)
    out, boxes = photometric_and_flips(out, boxes, rng, aug)
    return out, boxes, np.asarray(cls)[keep]


def photometric_and_flips(
    img: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, aug: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The end of the labeled view: HSV jitter, then vertical and horizontal flips (boxes follow)."""
    img = apply_hsv(img, sample_hsv_gains(rng, aug.hsv_h, aug.hsv_s, aug.hsv_v))
    u = rng.random(2)
    if u[0] < aug.flipud:
        img, m = flipud(img)
        boxes = transform_boxes(boxes, m)
    if u[1] < aug.fliplr:
        img, m = fliplr(img)
        boxes = transform_boxes(boxes, m)
    return img, np.asarray(boxes, dtype=np.float32)


def weak_view(
    img: np.ndarray, rng: np.random.Generator, imgsz: int, aug: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher view of an unlabeled image: letterbox to (imgsz, imgsz) + optional horizontal flip.

    Returns (weak (imgsz, imgsz, 3) uint8, M_weak (3, 3) mapping input-image px -> weak-view px).
    """
    out, ratio, pad = letterbox(img, imgsz, auto=False, scaleup=True)
    out, f = weak_flip(out, rng, aug)
    return out, f @ letterbox_matrix(ratio, pad)


def weak_flip(img: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """The weak view's optional horizontal flip [aug.weak_fliplr]; draws one value from ``rng``.

    Returns (img (H, W, 3), its 3x3 matrix: the flip, or the identity when not flipped).
    """
    if rng.random() < aug.weak_fliplr:
        return fliplr(img)
    return img, np.eye(3)


def strong_view(
    weak_img: np.ndarray, rng: np.random.Generator, aug: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Student view made from the weak view; it takes no labels, so it cannot leak them.

    Random affine (strong_* fields) and optional horizontal flip in one warp, then HSV,
    albumentations colour jitter / blur / noise, and cutout at label-blind random places.
    Returns (strong (S, S, 3) uint8, M (3, 3) float64 mapping weak-view px -> strong-view px).
    """
    hw = weak_img.shape[:2]
    m = random_affine_matrix(
        rng, hw, hw, aug.strong_degrees, aug.strong_translate, aug.strong_scale, aug.strong_shear, 0.0
    )
    if rng.random() < aug.strong_fliplr:
        m = fliplr_matrix(hw[1]) @ m
    out = warp(weak_img, m, hw)
    out = apply_hsv(out, sample_hsv_gains(rng, aug.hsv_h, aug.hsv_s, aug.hsv_v))
    out = photometric(out, rng, aug)
    if rng.random() < aug.cutout:
        rects, colours = sample_cutout(rng, hw)
        out = apply_cutout(out, rects, colours)
    return np.ascontiguousarray(out), m
