"""What `effteacher predict` writes of one image's detections: the drawn boxes, YOLO label lines and box crops."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from effteacher.utils.boxes import xyxy2xywhn

if TYPE_CHECKING:  # a type only: predictor.py imports this module
    from effteacher.predict.predictor import Detections

CROP_GAIN, CROP_PAD = 1.02, 10  # YOLOv5's save_one_box margins: a crop shows a little context around its box


def palette(n: int) -> list[tuple[int, int, int]]:
    """n distinct BGR colours (HSV wheel)."""
    hsv = np.stack([(np.arange(max(n, 1)) * 37) % 180, np.full(max(n, 1), 200), np.full(max(n, 1), 255)], 1)
    bgr = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(v) for v in c) for c in bgr]


def draw_detections(img: np.ndarray, det: Detections, line_width: int | None = None, hide_labels: bool = False,
                    hide_conf: bool = False) -> np.ndarray:
    """A copy of the BGR image with each box drawn, labelled with its class name and score unless hidden.
    line_width: pixels (default: from the image size, as YOLOv5)."""
    out = img.copy()
    colors = palette(len(det.names))
    lw = line_width or max(round(sum(img.shape[:2]) / 2 * 0.003), 1)
    boxes = det.boxes.round().astype(int).tolist()
    for (x1, y1, x2, y2), s, c in zip(boxes, det.scores.tolist(), det.classes.tolist()):
        color = colors[int(c) % len(colors)]
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        if hide_labels:
            continue
        label = det.names[int(c)] if hide_conf else f"{det.names[int(c)]} {s:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, lw / 3, max(lw - 1, 1))
        top = y1 - th - base if y1 - th - base >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), color, -1, cv2.LINE_AA)
        cv2.putText(out, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, lw / 3, (255, 255, 255),
                    max(lw - 1, 1), cv2.LINE_AA)
    return out


def label_lines(det: Detections, save_conf: bool = True) -> list[str]:
    """``cls cx cy w h conf`` lines (without ``conf`` unless ``save_conf``), box normalised by the image size."""
    h, w = det.shape
    xywhn = xyxy2xywhn(det.boxes.astype(np.float64), w, h)
    return [f"{int(c)} {b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f}" + (f" {s:.5f}" if save_conf else "")
            for c, b, s in zip(det.classes.tolist(), xywhn.tolist(), det.scores.tolist())]


def save_crops(img: np.ndarray, det: Detections, crops_dir: Path, stem: str) -> int:
    """Write each box of ``det`` cut from the original image to ``crops_dir/<class>/<stem>.jpg`` (``<stem>_2.jpg``
    ... for more boxes of a class), with YOLOv5's small margin. Returns how many were written."""
    h, w = img.shape[:2]
    written = 0
    for box, c in zip(det.boxes.astype(np.float64), det.classes.tolist()):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        bw, bh = (box[2] - box[0]) * CROP_GAIN + CROP_PAD, (box[3] - box[1]) * CROP_GAIN + CROP_PAD
        x1, y1 = int(max(cx - bw / 2, 0)), int(max(cy - bh / 2, 0))
        x2, y2 = int(min(cx + bw / 2, w)), int(min(cy + bh / 2, h))
        if x2 <= x1 or y2 <= y1:
            continue
        folder = crops_dir / re.sub(r"[\\/]", "_", det.names[int(c)])  # a name is one folder, never a path
        folder.mkdir(parents=True, exist_ok=True)
        path, k = folder / f"{stem}.jpg", 1
        while path.exists():
            k += 1
            path = folder / f"{stem}_{k}.jpg"
        cv2.imwrite(str(path), img[y1:y2, x1:x2])
        written += 1
    return written
