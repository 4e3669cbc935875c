"""Augmentation views: hand-made boxes through letterbox, flips, affine, mosaic; weak -> strong transforms."""

import dataclasses

import cv2
import numpy as np
import pytest

from effteacher.config import AugmentConfig
from effteacher.data.augment import (
    apply_cutout,
    augment_hsv,
    labeled_view,
    letterbox,
    load_resized,
    mixup,
    mosaic4,
    place_mosaic4,
    sample_cutout,
    strong_view,
    weak_view,
)
from effteacher.data.geometry import (
    PAD_VALUE,
    fliplr,
    flipud,
    letterbox_matrix,
    random_affine_matrix,
    transform_and_filter,
    warp,
)
from effteacher.errors import DatasetError
from effteacher.utils.boxes import transform_boxes

RED = np.array([255, 0, 0], dtype=np.uint8)
GREY = np.array([100, 100, 100], dtype=np.uint8)

# geometry only: every photometric op and cutout off
GEOM = dataclasses.replace(
    AugmentConfig(), hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, color_jitter=0.0, blur=0.0, noise=0.0, cutout=0.0
)


def colour_box(img: np.ndarray, colour: np.ndarray, others: tuple = (GREY,)) -> np.ndarray | None:
    """xyxy (pixel-corner) bounding box of pixels closer to ``colour`` than to any of ``others``."""
    d1 = np.abs(img.astype(np.int32) - colour.astype(np.int32)).sum(-1)
    d2 = np.min([np.abs(img.astype(np.int32) - np.asarray(o, np.int32)).sum(-1) for o in others], 0)
    ys, xs = np.nonzero(d1 < d2)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def red_rect_image(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = GREY
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = RED
    return img


def test_letterbox_box_and_padding():
    img = red_rect_image(50, 100, (10, 5, 30, 25))
    out, ratio, pad = letterbox(img, 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert ratio == (64 / 50, 128 / 100) and pad == (0.0, 32.0)
    assert (out[:32] == PAD_VALUE).all() and (out[96:] == PAD_VALUE).all()
    m = letterbox_matrix(ratio, pad)
    box = transform_boxes(np.array([[10, 5, 30, 25]], np.float64), m)[0]
    np.testing.assert_allclose(box, [12.8, 38.4, 38.4, 64.0])
    assert iou(box, colour_box(out, RED)) > 0.9
    # auto: minimum stride rectangle; scaleup=False never enlarges
    out, ratio, pad = letterbox(img, 128, auto=True)
    assert out.shape == (64, 128, 3) and pad == (0.0, 0.0)
    out, ratio, pad = letterbox(img, (128, 160), scaleup=False)
    assert out.shape == (128, 160, 3) and ratio == (1.0, 1.0) and pad == (30.0, 39.0)


def test_flips_move_box_with_pixels():
    img = red_rect_image(64, 80, (10, 20, 30, 40))
    box = np.array([[10, 20, 30, 40]], np.float32)
    out, m = fliplr(img)
    np.testing.assert_allclose(transform_boxes(box, m)[0], [50, 20, 70, 40])
    np.testing.assert_allclose(colour_box(out, RED), [50, 20, 70, 40])
    out, m = flipud(img)
    np.testing.assert_allclose(transform_boxes(box, m)[0], [10, 24, 30, 44])
    np.testing.assert_allclose(colour_box(out, RED), [10, 24, 30, 44])


def test_scale_translate_affine_exact():
    img = red_rect_image(32, 32, (4, 4, 12, 10))
    m = np.array([[2.0, 0, 5], [0, 2.0, 7], [0, 0, 1]])
    out = warp(img, m, (96, 96))
    boxes, keep = transform_and_filter(np.array([[4, 4, 12, 10]], np.float32), m, (96, 96))
    assert keep.tolist() == [True]
    np.testing.assert_allclose(boxes[0], [13, 15, 29, 27])
    np.testing.assert_allclose(colour_box(out, RED), [13, 15, 29, 27])


def test_random_affine_without_rotation_is_scale_translate():
    rng = np.random.default_rng(3)
    m = random_affine_matrix(rng, (64, 64), (128, 128), degrees=0, translate=0, scale=0, shear=0)
    # input centre (64, 64) -> output centre (32, 32), no scaling
    np.testing.assert_allclose(m, [[1, 0, -32], [0, 1, -32], [0, 0, 1]], atol=1e-12)
    m = random_affine_matrix(np.random.default_rng(4), (64, 64), (64, 64), 0, 0.1, 0.5, 0)
    assert abs(m[0, 1]) < 1e-12 and abs(m[1, 0]) < 1e-12 and 0.5 <= m[0, 0] <= 1.5
    img = red_rect_image(64, 64, (20, 24, 40, 44))
    out = warp(img, m, (64, 64))
    b, _ = transform_and_filter(np.array([[20, 24, 40, 44]], np.float32), m, (64, 64))
    assert iou(b[0], colour_box(out, RED)) > 0.9


def test_candidates_drop_tiny_and_mostly_cut_boxes():
    m = np.array([[1.0, 0, -50], [0, 1.0, 0], [0, 0, 1]])  # shift left by 50
    boxes = np.array(
        [
            [60, 10, 80, 30],  # fully visible -> kept
            [40, 10, 51, 30],  # 1 px left after the shift -> dropped (< 2 px)
            [10, 10, 54, 50],  # 4 of 44 px wide visible: 9% of its area -> dropped
            [30, 10, 60, 40],  # 10 of 30 px visible: 33% -> kept, clipped
        ],
        np.float32,
    )
    out, keep = transform_and_filter(boxes, m, (64, 64))
    assert keep.tolist() == [True, False, False, True]
    np.testing.assert_allclose(out, [[10, 10, 30, 30], [0, 10, 10, 40]])
    # the area gain of the matrix is accounted for: a 2x down-scale is not a 75% area loss
    out, keep = transform_and_filter(np.array([[0, 0, 40, 40]], np.float32), np.diag([0.5, 0.5, 1.0]), (64, 64))
    assert keep.tolist() == [True]
    empty, keep = transform_and_filter(np.zeros((0, 4), np.float32), m, (64, 64))
    assert empty.shape == (0, 4) and keep.shape == (0,)


def test_mosaic_placement_exact_offsets():
    colours = [np.array(c, np.uint8) for c in ([200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0])]
    sizes = [(40, 60), (30, 50), (50, 40), (80, 90)]  # (h, w)
    imgs = [np.full((h, w, 3), c, np.uint8) for (h, w), c in zip(sizes, colours)]
    boxes = [
        np.array([[0, 0, 60, 40]], np.float32),
        np.array([[10, 10, 20, 20]], np.float32),
        np.array([[0, 0, 40, 50]], np.float32),
        np.array([[70, 50, 90, 80]], np.float32),
    ]
    classes = [np.array([0]), np.array([1]), np.array([2]), np.array([3])]
    canvas, b, c = place_mosaic4(imgs, boxes, classes, 64, (50, 70))
    assert canvas.shape == (128, 128, 3)
    # offsets: img0 (xc-w, yc-h) = (-10, 30); img1 (xc, yc-h) = (50, 40); img2 (xc-w, yc) = (10, 70); img3 (50, 70)
    np.testing.assert_allclose(b, [[0, 30, 50, 70], [60, 50, 70, 60], [10, 70, 50, 120], [120, 120, 128, 128]])
    assert c.tolist() == [0, 1, 2, 3]
    assert (canvas[30, 0] == colours[0]).all() and (canvas[69, 49] == colours[0]).all()
    assert (canvas[29, 0] == PAD_VALUE).all() and (canvas[69, 50] == colours[1]).all()
    assert (canvas[40, 50] == colours[1]).all() and (canvas[39, 50] == PAD_VALUE).all()
    assert (canvas[70, 10] == colours[2]).all() and (canvas[119, 49] == colours[2]).all()
    assert (canvas[127, 127] == colours[3]).all() and (canvas[70, 50] == colours[3]).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mosaic4_boxes_follow_pixels(seed):
    colours = [np.array(c, np.uint8) for c in ([255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 255])]
    imgs, boxes, classes = [], [], []
    for k, col in enumerate(colours):
        img = np.empty((64, 48 + 8 * k, 3), np.uint8)
        img[:] = GREY
        img[10:50, 8:40] = col
        imgs.append(img)
        boxes.append(np.array([[8, 10, 40, 50]], np.float32))
        classes.append(np.array([k]))
    aug = dataclasses.replace(GEOM, degrees=5.0)
    out, b, c = mosaic4(imgs, boxes, classes, 64, np.random.default_rng(seed), aug)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and len(b) == len(c) >= 1
    for box, k in zip(b, c):
        others = [GREY, np.full(3, PAD_VALUE)] + [col for j, col in enumerate(colours) if j != k]
        found = colour_box(out, colours[k], others)
        assert found is not None and iou(box, found) > 0.75, (box, found)


def test_hsv_keeps_shape_and_dtype():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = augment_hsv(img, np.random.default_rng(0), 0.015, 0.7, 0.4)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert np.array_equal(augment_hsv(img, np.random.default_rng(0), 0, 0, 0), img)


def test_mixup_and_cutout():
    a, b = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    rng = np.random.default_rng(0)
    img, boxes, cls = mixup(a, np.ones((1, 4)), np.array([0]), b, np.ones((2, 4)), np.array([1, 2]), rng)
    assert len(boxes) == 3 and cls.tolist() == [0, 1, 2] and 50 < img.mean() < 150
    with pytest.raises(ValueError):
        mixup(a, boxes, cls, np.zeros((4, 4, 3), np.uint8), boxes, cls, np.random.default_rng(0))
    rects, cols = sample_cutout(np.random.default_rng(1), (60, 80))
    assert (rects[:, [0, 2]] >= 0).all() and (rects[:, [0, 2]] <= 80).all() and (rects[:, [1, 3]] <= 60).all()
    out = apply_cutout(np.zeros((60, 80, 3), np.uint8), rects, cols)
    x1, y1, x2, y2 = rects[-1]
    assert (out[y1:y2, x1:x2] == cols[-1]).all()


def test_labeled_view_box_tracks_rectangle():
    img = red_rect_image(90, 120, (40, 30, 80, 60))
    aug = dataclasses.replace(GEOM, degrees=10.0, fliplr=0.5, flipud=0.5)
    for seed in range(4):
        box = np.array([[40, 30, 80, 60]], np.float32)
        out, b, c = labeled_view(img, box, np.array([3]), (96, 96), np.random.default_rng(seed), aug)
        assert out.shape == (96, 96, 3) and c.tolist() == [3]
        assert iou(b[0], colour_box(out, RED)) > 0.9


def test_load_resized_and_unreadable(tmp_path):
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), np.zeros((50, 100, 3), np.uint8) + np.array([0, 0, 255], np.uint8))  # BGR red
    img, hw0, hw = load_resized(p, 64)
    assert hw0 == (50, 100) and hw == (32, 64) and img.shape == (32, 64, 3)
    assert (img[0, 0] == [255, 0, 0]).all()  # RGB
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="bad.jpg"):
        load_resized(bad, 64)


@pytest.mark.parametrize("seed", range(8))
def test_weak_to_strong_transform_maps_box(seed):
    img = red_rect_image(90, 120, (40, 30, 80, 60))
    aug = dataclasses.replace(GEOM, strong_degrees=15.0, strong_shear=2.0)
    rng = np.random.default_rng(seed)
    weak, m_weak = weak_view(img, rng, 96, aug)
    strong, m = strong_view(weak, rng, aug)
    assert weak.shape == strong.shape == (96, 96, 3)
    box_w = transform_boxes(np.array([[40, 30, 80, 60]], np.float64), m_weak)[0]
    assert iou(box_w, colour_box(weak, RED)) > 0.9
    box_s, keep = transform_and_filter(box_w[None].astype(np.float32), m, (96, 96))
    assert keep[0]
    assert iou(box_s[0], colour_box(strong, RED)) > 0.9


def test_weak_and_strong_flips_happen_and_are_in_the_matrix():
    img = red_rect_image(64, 64, (4, 10, 20, 30))  # off-centre, so a flip is visible
    aug = dataclasses.replace(GEOM, strong_translate=0.0, strong_scale=0.0, weak_fliplr=0.5, strong_fliplr=0.5)
    flips_w = flips_s = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        weak, m_weak = weak_view(img, rng, 64, aug)
        strong, m = strong_view(weak, rng, aug)
        flips_w += m_weak[0, 0] < 0
        flips_s += m[0, 0] < 0
        b = transform_boxes(transform_boxes(np.array([[4, 10, 20, 30]], np.float64), m_weak), m)[0]
        np.testing.assert_allclose(b, colour_box(strong, RED), atol=1)
    assert 0 < flips_w < 12 and 0 < flips_s < 12


def test_strong_view_photometric_ops_run():
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    aug = dataclasses.replace(AugmentConfig(), cutout=1.0, blur=1.0, noise=1.0, color_jitter=1.0)
    a, ma = strong_view(img, np.random.default_rng(5), aug)
    b, mb = strong_view(img, np.random.default_rng(5), aug)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(ma, mb)  # reproducible from the Generator
