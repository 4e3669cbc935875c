"""The in-memory form of a dataset image: path, original shape and its labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _empty_cls() -> np.ndarray:
    return np.zeros((0,), dtype=np.int64)


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


@dataclass
class ImageRecord:
    """One image. ``boxes`` are normalised (cx, cy, w, h) in the original image; ``cls`` int64."""

    path: str
    shape: tuple[int, int]  # (height, width) of the original image
    cls: np.ndarray = field(default_factory=_empty_cls)  # (n,)
    boxes: np.ndarray = field(default_factory=_empty_boxes)  # (n, 4)

    @property
    def n(self) -> int:
        return int(self.cls.shape[0])
