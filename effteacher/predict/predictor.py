"""Prediction: the `Detector` Python API and `effteacher predict` (annotated images, labels, JSON, speed)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from rich.markup import escape

from effteacher.config.commands import PredictOptions, with_overrides
from effteacher.data.augment import letterbox
from effteacher.data.dataset import image_shape
from effteacher.data.sources import find_sources
from effteacher.errors import DatasetError
from effteacher.export.runtime import load_backend
from effteacher.models.postprocess import detections_from_output
from effteacher.utils.boxes import scale_boxes, xyxy2xywhn
from effteacher.utils.console import info, warn
from effteacher.utils.files import run_folder, unique_name


@dataclass
class Detections:
    """Detections of one image, in its original pixels.

    boxes (n, 4) float32 xyxy, scores (n,) float32, classes (n,) int64; names = the model's class
    names (``labels`` gives the name of each box); path = the image file (None for arrays);
    shape = (height, width) of the original image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: list[str]
    path: str | None = None
    shape: tuple[int, int] = (0, 0)
    speed: dict[str, float] = field(default_factory=dict)  # ms: preprocess, inference, nms

    @property
    def labels(self) -> list[str]:
        """Class name of each box."""
        return [self.names[int(c)] for c in self.classes]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _read(image: Any) -> tuple[np.ndarray, str | None]:
    """A BGR uint8 (h, w, 3) image from a path (validated first: DatasetError naming a corrupt or truncated
    file) or an array (grayscale/BGRA converted)."""
    if isinstance(image, (str, Path)):
        if not Path(image).exists():
            raise DatasetError(f"{image}: not found; fix the path or remove it from the source list")

        try:  # the checks of `effteacher check`: cv2 decodes a truncated JPEG with only a bare libjpeg warning
            image_shape(image, min_size=1)
        except (ValueError, OSError) as e:
            raise DatasetError(f"{image}: {e}; skipped, re-save or delete the image") from None
        img = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{image}: cannot read image (missing or corrupt); pass a valid image file")
        return img, str(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DatasetError(f"expected a BGR image array (h, w, 3), got shape {arr.shape}")
    return np.ascontiguousarray(arr.astype(np.uint8, copy=False)), None


class Detector:
    """Run any weights format on images: ``Detector("best.pt")("img.jpg") -> [Detections]``.

    weights: .pt / .onnx / .torchscript / .engine / an OpenVINO *_openvino_model folder; conf/iou: NMS
    thresholds; imgsz: inference size (default: the one stored with the weights); images may be paths or BGR
    numpy arrays.
    """

    def __init__(self, weights: str | Path, device: str = "cpu", conf: float = 0.25, iou: float = 0.45,
                 imgsz: int | None = None, max_det: int = 300, half: bool = False) -> None:
        self.backend = load_backend(weights, device, half=half)
        self.names = list(self.backend.names)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        fixed = self.backend.fixed_shape
        self.imgsz: tuple[int, int] = tuple(fixed) if fixed else ((imgsz, imgsz) if imgsz else self.backend.imgsz)

    def preprocess(self, img: np.ndarray) -> tuple[torch.Tensor, tuple[tuple[float, float], tuple[float, float]]]:
        """BGR (h, w, 3) -> letterboxed RGB float (1, 3, H, W) 0-1 on the device, and its (ratio, pad)."""
        auto = self.backend.fixed_shape is None
        out, ratio, pad = letterbox(img, self.imgsz, auto=auto, stride=self.backend.stride)
        x = torch.from_numpy(np.ascontiguousarray(out[..., ::-1].transpose(2, 0, 1)))[None]  # BGR -> RGB, CHW
        return x.to(self.backend.device).float() / 255.0, (ratio, pad)

    def predict_one(self, image: Any) -> Detections:
        """Detections of one image (path or BGR array), boxes in its original pixels."""
        img, path = _read(image)
        dev = self.backend.device
        t0 = time.perf_counter()
        x, ratio_pad = self.preprocess(img)
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = self.backend(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t2 = time.perf_counter()
            det = detections_from_output(out, self.backend.has_nms, self.conf, self.iou, self.max_det)[0]
            det = det.float().cpu().numpy().astype(np.float64)  # a copy: scale_boxes works in place
        t3 = time.perf_counter()
        boxes = scale_boxes(tuple(x.shape[2:]), det[:, :4], img.shape[:2], ratio_pad)
        return Detections(
            boxes=boxes.astype(np.float32), scores=det[:, 4].astype(np.float32),
            classes=det[:, 5].astype(np.int64), names=self.names, path=path,
            shape=(int(img.shape[0]), int(img.shape[1])),
            speed={"preprocess": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1), "nms": 1e3 * (t3 - t2)},
        )

    def __call__(self, images: Any) -> list[Detections]:
        """One image (path or BGR array) or a list of them -> a list of Detections (same order)."""
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        return [self.predict_one(im) for im in images]


def palette(n: int) -> list[tuple[int, int, int]]:
    """n distinct BGR colours (HSV wheel)."""
    hsv = np.stack([(np.arange(max(n, 1)) * 37) % 180, np.full(max(n, 1), 200), np.full(max(n, 1), 255)], 1)
    bgr = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(v) for v in c) for c in bgr]


def draw_detections(img: np.ndarray, det: Detections) -> np.ndarray:
    """A copy of the BGR image with each box, its class name and score drawn."""
    out = img.copy()
    colors = palette(len(det.names))
    lw = max(round(sum(img.shape[:2]) / 2 * 0.003), 1)
    boxes = det.boxes.round().astype(int).tolist()
    for (x1, y1, x2, y2), s, c in zip(boxes, det.scores.tolist(), det.classes.tolist()):
        color = colors[int(c) % len(colors)]
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        label = f"{det.names[int(c)]} {s:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, lw / 3, max(lw - 1, 1))
        top = y1 - th - base if y1 - th - base >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw, top + th + base), color, -1, cv2.LINE_AA)
        cv2.putText(out, label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, lw / 3, (255, 255, 255),
                    max(lw - 1, 1), cv2.LINE_AA)
    return out


def label_lines(det: Detections) -> list[str]:
    """``cls cx cy w h conf`` lines, box normalised by the original image size."""
    h, w = det.shape
    xywhn = xyxy2xywhn(det.boxes.astype(np.float64), w, h)
    return [f"{int(c)} {b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {s:.5f}"
            for c, b, s in zip(det.classes.tolist(), xywhn.tolist(), det.scores.tolist())]


def run_predict(source: str | Path, weights: str | Path, *, options: PredictOptions | None = None,
                **overrides: Any) -> Path:
    """`effteacher predict`: run weights on SOURCE; writes into runs/predict/exp{N} and returns that folder."""
    o = with_overrides(PredictOptions, options, overrides)
    files = find_sources(source)
    det = Detector(weights, device=o.device, conf=o.conf, iou=o.iou, imgsz=o.imgsz, max_det=o.max_det)
    with run_folder(o.project, o.name, o.exist_ok) as save_dir:
        if o.save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        records: list[dict[str, Any]] = []
        times = np.zeros(3)
        n_done = n_labels = 0
        for i, f in enumerate(files):
            try:
                img, _ = _read(f)
            except DatasetError as e:
                warn(str(e))
                continue
            d = det.predict_one(img)
            d.path = str(f)
            times += (d.speed["preprocess"], d.speed["inference"], d.speed["nms"])
            n_done += 1
            out_name = unique_name(f.name, used)
            counts = np.bincount(d.classes, minlength=len(det.names)) if len(d) else np.zeros(0, np.int64)
            summary = ", ".join(f"{n} {det.names[c]}" for c, n in enumerate(counts.tolist()) if n) or "no detections"
            info(escape(f"image {i + 1}/{len(files)} {f}: {d.shape[0]}x{d.shape[1]} {summary}, "
                        f"{d.speed['inference']:.1f}ms"))
            if o.save_images:
                cv2.imwrite(str(save_dir / out_name), draw_detections(img, d))
            if o.save_txt and len(d):
                (save_dir / "labels" / f"{Path(out_name).stem}.txt").write_text("\n".join(label_lines(d)) + "\n")
                n_labels += 1
            if o.save_json:
                wh = d.boxes[:, 2:] - d.boxes[:, :2]
                records += [{"image_id": Path(out_name).stem, "file_name": str(f), "category_id": int(c),
                             "name": det.names[int(c)], "bbox": [round(float(b[0]), 3), round(float(b[1]), 3),
                                                                 round(float(s[0]), 3), round(float(s[1]), 3)],
                             "score": round(float(p), 5)} for b, s, c, p in zip(d.boxes, wh, d.classes, d.scores)]
        if n_done == 0:
            raise DatasetError(f"none of the {len(files)} images in '{source}' could be read")
        if o.save_json:
            (save_dir / "predictions.json").write_text(json.dumps(records))
        sp = times / n_done
        h, w = det.imgsz
        info(f"Speed: {sp[0]:.1f}ms pre-process, {sp[1]:.1f}ms inference, {sp[2]:.1f}ms NMS per image "
             f"at shape (1, 3, {h}, {w})")
        extra = f", {n_labels} label files in {save_dir / 'labels'}" if o.save_txt else ""
        info(escape(f"Results saved to {save_dir}{extra}"))
        return save_dir


__all__: Sequence[str] = ("Detector", "Detections", "run_predict", "label_lines", "draw_detections")
