"""What predict writes of one result: label lines with or without conf, drawing options, crops per class folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from effteacher.predict.annotate import draw_detections, label_lines, save_crops
from effteacher.predict.predictor import Detections


def _det() -> Detections:
    return Detections(boxes=np.array([[10, 20, 50, 60], [0, 0, 30, 30], [40, 40, 90, 70]], np.float32),
                      scores=np.array([0.9, 0.5, 0.7], np.float32), classes=np.array([1, 0, 1]),
                      names=["cat", "a/b"], shape=(80, 100))


def test_label_lines_conf_column() -> None:
    with_conf, without = label_lines(_det()), label_lines(_det(), save_conf=False)
    assert with_conf[0] == "1 0.300000 0.500000 0.400000 0.500000 0.90000"
    assert without[0] == "1 0.300000 0.500000 0.400000 0.500000"


def test_draw_options_change_the_drawing() -> None:
    img = np.zeros((80, 100, 3), np.uint8)
    full, thin = draw_detections(img, _det()), draw_detections(img, _det(), line_width=1, hide_labels=True)
    thick = draw_detections(img, _det(), line_width=4, hide_labels=True)
    no_conf = draw_detections(img, _det(), hide_conf=True)
    assert (thick > 0).sum() > (thin > 0).sum() > 0
    assert (full > 0).sum() > (no_conf > 0).sum() > (draw_detections(img, _det(), hide_labels=True) > 0).sum()
    assert not img.any()  # the input is never drawn on


def test_crops_per_class_folder(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)
    assert save_crops(img, _det(), tmp_path / "crops", "photo") == 3
    got = sorted(str(p.relative_to(tmp_path / "crops")) for p in (tmp_path / "crops").rglob("*.jpg"))
    assert got == ["a_b/photo.jpg", "a_b/photo_2.jpg", "cat/photo.jpg"]  # a '/' in a name stays one folder
    crop = cv2.imread(str(tmp_path / "crops" / "a_b" / "photo.jpg"))
    assert crop.shape[:2] == (51, 51)  # 40x40 box x 1.02 + 10 px = 50.8, cut at whole pixels around its centre
