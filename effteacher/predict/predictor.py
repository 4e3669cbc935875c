"""The `Detector` Python API: any weights format on images, arrays or a video's frames, one at a time or batched.

`effteacher predict` (command.py) runs it over a source; drawing and label lines are in annotate.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch

from effteacher.data.augment import letterbox
from effteacher.data.dataset import image_shape
from effteacher.data.video import VideoReader
from effteacher.errors import ConfigError, DatasetError
from effteacher.export.runtime import load_backend
from effteacher.models.postprocess import detections_from_output
from effteacher.predict.annotate import draw_detections, label_lines
from effteacher.utils.boxes import scale_boxes


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
    frame: int = 0
    speed: dict[str, float] = field(default_factory=dict)  # ms: preprocess, inference, nms

    @property
    def labels(self) -> list[str]:
        """Class name of each box."""
        return [self.names[int(c)] for c in self.classes]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def read_image(image: Any) -> tuple[np.ndarray, str | None]:
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

    weights: .pt / .onnx / .torchscript / .engine / an OpenVINO *_openvino_model folder; conf/iou: NMS thresholds; imgsz: inference
    size (default: the one stored with the weights); classes: class indices to keep (None = all);
    images may be paths or BGR numpy arrays. ``det(images, batch=16)`` runs them 16 at a time and
    ``det.video(path)`` yields the detections of a video's frames.
    """

    def __init__(self, weights: str | Path, device: str = "cpu", conf: float = 0.25, iou: float = 0.45,
                 imgsz: int | None = None, max_det: int = 300, half: bool = False,
                 classes: Sequence[int] | None = None) -> None:
        self.backend = load_backend(weights, device, half=half)
        self.names = list(self.backend.names)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        fixed = self.backend.fixed_shape
        self.imgsz: tuple[int, int] = tuple(fixed) if fixed else ((imgsz, imgsz) if imgsz else self.backend.imgsz)
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        bad = [c for c in self.classes or () if not 0 <= c < len(self.names)]
        if bad:
            raise ConfigError(f"--classes {bad[0]}: the model has {len(self.names)} classes (0-{len(self.names) - 1}: "
                              f"{', '.join(self.names[:5])}{' ...' if len(self.names) > 5 else ''})")

    def preprocess(self, img: np.ndarray) -> tuple[torch.Tensor, tuple[tuple[float, float], tuple[float, float]]]:
        """BGR (h, w, 3) -> letterboxed RGB float (1, 3, H, W) 0-1 on the device, and its (ratio, pad)."""
        auto = self.backend.fixed_shape is None
        out, ratio, pad = letterbox(img, self.imgsz, auto=auto, stride=self.backend.stride)
        x = torch.from_numpy(np.ascontiguousarray(out[..., ::-1].transpose(2, 0, 1)))[None]  # BGR -> RGB, CHW
        return x.to(self.backend.device).float() / 255.0, (ratio, pad)

    def predict_one(self, image: Any) -> Detections:
        """Detections of one image (path or BGR array), boxes in its original pixels."""
        img, path = read_image(image)
        d = self.predict_batch([img])[0]
        d.path = path
        return d

    def predict_batch(self, imgs: Sequence[np.ndarray]) -> list[Detections]:
        """Detections of BGR arrays, in order. Each image is letterboxed exactly as alone; images of one letterbox
        shape (a video's frames, photos of one size) run through the model together, so the results equal one at a
        time. ``speed`` is each image's share of its group's time."""
        t_start = time.perf_counter()
        prepared = [self.preprocess(img) for img in imgs]
        pre_share = 1e3 * (time.perf_counter() - t_start) / max(len(imgs), 1)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (x, _) in enumerate(prepared):
            groups.setdefault(tuple(x.shape), []).append(i)
        results: list[Detections | None] = [None] * len(imgs)
        dev = self.backend.device
        for idx in groups.values():
            t0 = time.perf_counter()
            x = torch.cat([prepared[i][0] for i in idx])
            t1 = time.perf_counter()
            with torch.inference_mode():
                out = self.backend(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t2 = time.perf_counter()
                dets = detections_from_output(out, self.backend.has_nms, self.conf, self.iou, self.max_det,
                                              self.classes)
                dets = [d.float().cpu().numpy().astype(np.float64) for d in dets]  # copies: scale_boxes is in place
            t3 = time.perf_counter()
            n = len(idx)
            for i, det in zip(idx, dets):
                img, ratio_pad = imgs[i], prepared[i][1]
                boxes = scale_boxes(tuple(x.shape[2:]), det[:, :4], img.shape[:2], ratio_pad)
                results[i] = Detections(
                    boxes=boxes.astype(np.float32), scores=det[:, 4].astype(np.float32),
                    classes=det[:, 5].astype(np.int64), names=self.names,
                    shape=(int(img.shape[0]), int(img.shape[1])),
                    speed={"preprocess": pre_share + 1e3 * (t1 - t0) / n, "inference": 1e3 * (t2 - t1) / n,
                           "nms": 1e3 * (t3 - t2) / n})
        return [r for r in results if r is not None]

    def __call__(self, images: Any, batch: int = 1) -> list[Detections]:
        """One image (path or BGR array) or a list of them -> a list of Detections (same order), ``batch`` images
        per model call."""
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        return [d for chunk in chunks(images, batch) for d in self._run_paths(chunk)]

    def _run_paths(self, chunk: Sequence[Any]) -> list[Detections]:
        read = [read_image(im) for im in chunk]
        dets = self.predict_batch([img for img, _ in read])
        for d, (_, path) in zip(dets, read):
            d.path = path
        return dets

    def video(self, path: str | Path, batch: int = 1, vid_stride: int = 1) -> Iterator[Detections]:
        """Detections of a video file's frames (every ``vid_stride``-th), ``batch`` frames per model call; each
        has ``path`` and its 1-based ``frame`` number."""
        reader = VideoReader(path, vid_stride)
        for chunk in chunks(reader, batch):
            for d, (number, _) in zip(self.predict_batch([img for _, img in chunk]), chunk):
                d.path, d.frame = str(path), number
                yield d


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    if size < 1:
        raise ConfigError(f"batch {size}: must be a whole number >= 1")
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


__all__: Sequence[str] = ("Detector", "Detections", "label_lines", "draw_detections")
