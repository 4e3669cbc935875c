"""`effteacher predict`: a Detector over images, video files, webcams and streams, as YOLOv5's detect.py.

Writes into runs/predict/exp{N}: annotated images and videos (.mp4 at the source's size and frame rate), YOLO label
files, crops and COCO JSON. Ctrl-C (the way a stream is stopped) ends the run with every file closed and playable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from effteacher.config.commands import PredictOptions, parse_classes, with_overrides
from effteacher.data.sources import find_sources, is_video
from effteacher.data.video import StreamReader, VideoReader, is_stream
from effteacher.errors import DatasetError
from effteacher.predict.annotate import draw_detections, label_lines, save_crops
from effteacher.predict.predictor import Detections, Detector, chunks, read_image
from effteacher.utils.console import console, info, warn
from effteacher.utils.files import run_folder, unique_name

Source = Path | VideoReader  # an image file, or an opened video file / stream


@dataclass
class _Outputs:
    """Everything one run writes, and its counts."""

    save_dir: Path
    o: PredictOptions
    used: set[str] = field(default_factory=set)
    records: list[dict[str, Any]] = field(default_factory=list)
    times: np.ndarray = field(default_factory=lambda: np.zeros(3))
    done: int = 0
    labels: int = 0
    crops: int = 0

    def write(self, img: np.ndarray, d: Detections, stem: str, image_name: str | None) -> None:
        """Label file, crops and JSON records of one image or frame (``stem`` names them); the annotated image
        too when ``image_name`` is given (a video frame goes to its writer instead)."""
        o = self.o
        self.times += (d.speed["preprocess"], d.speed["inference"], d.speed["nms"])
        self.done += 1
        if image_name and o.save_images:
            cv2.imwrite(str(self.save_dir / image_name), self.draw(img, d))
        if o.save_txt and len(d):
            (self.save_dir / "labels" / f"{stem}.txt").write_text("\n".join(label_lines(d, o.save_conf)) + "\n")
            self.labels += 1
        if o.save_crop:
            self.crops += save_crops(img, d, self.save_dir / "crops", stem)
        if o.save_json:
            wh = d.boxes[:, 2:] - d.boxes[:, :2]
            extra = {"frame": d.frame} if d.frame else {}
            self.records += [{"image_id": stem, "file_name": str(d.path), **extra, "category_id": int(c),
                              "name": d.names[int(c)], "bbox": [round(float(b[0]), 3), round(float(b[1]), 3),
                                                                round(float(s[0]), 3), round(float(s[1]), 3)],
                              "score": round(float(p), 5)} for b, s, c, p in zip(d.boxes, wh, d.classes, d.scores)]

    def draw(self, img: np.ndarray, d: Detections) -> np.ndarray:
        o = self.o
        return draw_detections(img, d, o.line_width, o.hide_labels, o.hide_conf)


def _summary(d: Detections) -> str:
    counts = np.bincount(d.classes, minlength=len(d.names)) if len(d) else np.zeros(0, np.int64)
    return ", ".join(f"{n} {d.names[c]}" for c, n in enumerate(counts.tolist()) if n) or "no detections"


def _open_sources(source: str, vid_stride: int) -> list[Source]:
    """The run's sources, checked before anything is written: a stream or a single video is opened now (a clear
    error for a camera, URL or file OpenCV cannot open); videos among many files are opened in turn."""
    if is_stream(source) and not Path(source).exists():
        return [StreamReader(source, vid_stride)]
    files = find_sources(source, videos=True)
    if len(files) == 1 and is_video(files[0]):
        return [VideoReader(files[0], vid_stride)]
    return list(files)


def _run_images(det: Detector, files: list[Path], out: _Outputs, index: int, total: int) -> None:
    """Consecutive image files, ``batch`` per model call; an unreadable one is skipped with a warning."""
    for chunk in chunks(list(enumerate(files, index + 1)), out.o.batch):
        read: list[tuple[int, Path, np.ndarray]] = []
        for number, f in chunk:
            try:
                read.append((number, f, read_image(f)[0]))
            except DatasetError as e:
                warn(str(e))
        for (number, f, img), d in zip(read, det.predict_batch([img for _, _, img in read])):
            d.path = str(f)
            name = unique_name(f.name, out.used)
            info(escape(f"image {number}/{total} {f}: {d.shape[0]}x{d.shape[1]} {_summary(d)}, "
                        f"{d.speed['inference']:.1f}ms"))
            out.write(img, d, Path(name).stem, name)


def _progress(reader: VideoReader) -> Progress | None:
    """A frames / fps bar on a terminal (None off one: logs get the summary line only)."""
    if not console().is_terminal:
        return None
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(bar_width=None), MofNCompleteColumn(),
                    TextColumn("{task.fields[fps]:.1f} frames/s"), TimeElapsedColumn(), console=console(),
                    transient=False)


def _run_video(det: Detector, reader: VideoReader, out: _Outputs, label: str) -> None:
    """Every frame of a video or stream: an annotated .mp4 at the source's size and frame rate, label files
    ``<stem>_<frame>.txt``, crops and records. The writer and capture are closed however this ends."""
    o = out.o
    video_name = unique_name(f"{reader.name}.mp4", out.used)
    stem = Path(video_name).stem
    writer: cv2.VideoWriter | None = None
    size = (0, 0)  # (w, h) of the written video: its first frame's; a stream that changes size is resized to it
    bar = _progress(reader)
    task = bar.add_task(f"{label} {reader.name}", total=reader.total or None, fps=0.0) if bar else None
    t0, n, boxes = time.perf_counter(), 0, 0
    try:
        if bar:
            bar.start()
        for chunk in chunks(reader, o.batch):
            for (number, img), d in zip(chunk, det.predict_batch([img for _, img in chunk])):
                d.path, d.frame = reader.path, number
                if o.save_images:
                    if writer is None:
                        size = (img.shape[1], img.shape[0])
                        writer = _writer(out.save_dir / video_name, reader.out_fps, size)
                    frame = out.draw(img, d)
                    writer.write(frame if frame.shape[1::-1] == size else cv2.resize(frame, size))
                out.write(img, d, f"{stem}_{number}", None)
                n, boxes = n + 1, boxes + len(d)
            if bar and task is not None:
                bar.update(task, completed=n, fps=n / max(time.perf_counter() - t0, 1e-9))
    finally:
        reader.release()
        if writer is not None:
            writer.release()
        if bar:
            bar.stop()
        fps = n / max(time.perf_counter() - t0, 1e-9)
        saved = f" -> {out.save_dir / video_name}" if writer is not None else ""
        info(escape(f"{label} {reader.path}: {n} frames {reader.size[1]}x{reader.size[0]}, {boxes} detections, "
                    f"{fps:.1f} frames/s{saved}"))


def _writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise DatasetError(f"{path}: OpenCV cannot write mp4v video here; pass --no-save-images or install an "
                           "OpenCV build with FFMPEG")
    return writer


def _sources_by_run(sources: list[Source]) -> Iterator[list[Path] | Source]:
    """Runs of consecutive image files (batched together), and each video on its own."""
    images: list[Path] = []
    for s in sources:
        if isinstance(s, Path) and not is_video(s):
            images.append(s)
            continue
        if images:
            yield images
            images = []
        yield s
    if images:
        yield images


def run_predict(source: str | Path, weights: str | Path, *, options: PredictOptions | None = None,
                **overrides: Any) -> Path:
    """`effteacher predict`: run weights on SOURCE; writes into runs/predict/exp{N} and returns that folder."""
    o = with_overrides(PredictOptions, options, overrides)
    classes = parse_classes(o.classes) if isinstance(o.classes, str) else o.classes
    sources = _open_sources(str(source).strip(), o.vid_stride)
    try:
        det = Detector(weights, device=o.device, conf=o.conf, iou=o.iou, imgsz=o.imgsz, max_det=o.max_det,
                       classes=classes)
    except BaseException:
        for s in sources:
            if isinstance(s, VideoReader):
                s.release()
        raise
    with run_folder(o.project, o.name, o.exist_ok) as save_dir:
        if o.save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)
        out = _Outputs(save_dir, o)
        _run_all(det, sources, out)
        if out.done == 0:
            raise DatasetError(f"none of the {len(sources)} images or videos in '{source}' could be read")
        if o.save_json:
            (save_dir / "predictions.json").write_text(json.dumps(out.records))
        sp = out.times / out.done
        h, w = det.imgsz
        info(f"Speed: {sp[0]:.1f}ms pre-process, {sp[1]:.1f}ms inference, {sp[2]:.1f}ms NMS per image "
             f"at shape ({o.batch}, 3, {h}, {w})")
        extra = f", {out.labels} label files in {save_dir / 'labels'}" if o.save_txt else ""
        extra += f", {out.crops} crops in {save_dir / 'crops'}" if o.save_crop else ""
        info(escape(f"Results saved to {save_dir}{extra}"))
        return save_dir


def _run_all(det: Detector, sources: list[Source], out: _Outputs) -> None:
    """Every source in order; Ctrl-C stops the run like the end of a stream (files closed, results kept)."""
    total, index = len(sources), 0
    try:
        for part in _sources_by_run(sources):
            if isinstance(part, list):
                _run_images(det, part, out, index, total)
                index += len(part)
                continue
            index += 1
            label = "stream" if isinstance(part, StreamReader) else f"video {index}/{total}"
            try:
                reader = part if isinstance(part, VideoReader) else VideoReader(part, out.o.vid_stride)
            except DatasetError as e:
                warn(str(e))
                continue
            _run_video(det, reader, out, label)
    except KeyboardInterrupt:
        warn("interrupted (Ctrl-C): stopped reading; every file written so far is complete")
    finally:
        for s in sources:
            if isinstance(s, VideoReader):
                s.release()
