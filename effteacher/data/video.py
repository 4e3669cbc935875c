"""Frames of video files, webcams and network streams (OpenCV VideoCapture), as YOLOv5's detect.py reads them.

A reader yields ``(frame_number, BGR image)`` with 1-based frame numbers of the source, every ``vid_stride``-th
frame. An unreadable frame of a file is skipped with a warning; a live stream that stops delivering frames ends
with a warning. Readers release their capture when iteration ends, fails or is interrupted.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from effteacher.errors import DatasetError
from effteacher.utils.console import warn

STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://")
DEFAULT_FPS = 30.0  # what a capture that reports no frame rate (many webcams and streams) is written at
MAX_BAD_FRAMES = 5  # consecutive unreadable frames of a file before the rest of it is given up


def is_stream(source: str) -> bool:
    """A webcam index (``0``) or an rtsp/rtmp/http(s) URL."""
    s = str(source).strip()
    return s.isdigit() or s.lower().startswith(STREAM_SCHEMES)


def stream_name(source: str) -> str:
    """A file stem for a stream's outputs: ``webcam0``, or the URL without its scheme in safe characters."""
    s = str(source).strip()
    if s.isdigit():
        return f"webcam{s}"
    return re.sub(r"[^\w.-]+", "_", s.split("://", 1)[-1]).strip("_.")[-80:] or "stream"


def open_capture(target: str | int) -> cv2.VideoCapture:
    """cv2.VideoCapture of a file, URL or camera index (one place, so tests can stand in a local file)."""
    return cv2.VideoCapture(target)


class VideoReader:
    """Frames of one video file. ``fps``, ``size`` (w, h) and ``frames`` (count, 0 if unknown) are the source's;
    ``out_fps`` is the frame rate that keeps the source's duration when only every ``vid_stride``-th frame is kept.
    DatasetError if the file cannot be opened."""

    live = False

    def __init__(self, path: str | Path, vid_stride: int = 1) -> None:
        self.path = str(path)
        self.name = Path(self.path).stem
        self.vid_stride = max(int(vid_stride), 1)
        self.cap = open_capture(self._target())
        if not self.cap.isOpened():
            self.cap.release()
            raise DatasetError(self._open_error())
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frames = int(n) if math.isfinite(n) and n > 0 else 0

    def _target(self) -> str | int:
        return self.path

    def _open_error(self) -> str:
        return f"{self.path}: cannot open video (corrupt file or codec OpenCV cannot read); re-encode it, e.g. " \
               "ffmpeg -i IN -c:v libx264 OUT.mp4"

    @property
    def out_fps(self) -> float:
        return self.fps / self.vid_stride

    @property
    def total(self) -> int:
        """Frames this reader will yield (0 = unknown)."""
        return math.ceil(self.frames / self.vid_stride) if self.frames else 0

    def _read(self, number: int) -> np.ndarray | None:
        ok, img = self.cap.read()
        return img if ok and img is not None and img.size else None

    def _skip(self) -> bool:
        return bool(self.cap.grab())

    def _ended(self, number: int, bad: int) -> bool:
        """After a failed read of frame ``number``: True when the file is over (past its count or too many bad
        frames in a row), else False (a warning, and the next frame is tried)."""
        if self.frames and number > self.frames:
            return True
        if bad >= MAX_BAD_FRAMES or not self.frames:
            warn(f"{self.path}: frames stop at {number - 1}" + (f" of {self.frames}" if self.frames else "") +
                 "; the rest of the video is skipped")
            return True
        warn(f"{self.path}: frame {number} cannot be decoded; skipped")
        return False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        number, bad = 0, 0
        try:
            while True:
                number += 1
                img = self._read(number)
                if img is None:
                    bad += 1
                    if self._ended(number, bad):
                        return
                    continue
                bad = 0
                yield number, img
                for _ in range(self.vid_stride - 1):  # grab without decoding: cheap skipping
                    number += 1
                    if not self._skip():
                        return
        finally:
            self.release()

    def release(self) -> None:
        self.cap.release()


class StreamReader(VideoReader):
    """Frames of a webcam (index) or a network stream, until it ends or stops delivering frames."""

    live = True

    def __init__(self, source: str, vid_stride: int = 1) -> None:
        self.source = str(source).strip()
        super().__init__(self.source, vid_stride)
        self.name = stream_name(self.source)
        self.frames = 0  # a live stream's count is meaningless (some report -1 or a huge number)

    def _target(self) -> str | int:
        return int(self.source) if self.source.isdigit() else self.source

    def _open_error(self) -> str:
        what = f"camera {self.source}" if self.source.isdigit() else f"stream {self.source}"
        return f"cannot open {what}; check the {'camera index' if self.source.isdigit() else 'URL'} and that it is " \
               "reachable from this machine"

    def _ended(self, number: int, bad: int) -> bool:
        got = f"after {number - 1} frames" if number > 1 else "before its first frame"
        warn(f"{self.source}: the stream ended or dropped {got}; stopping")
        return True
