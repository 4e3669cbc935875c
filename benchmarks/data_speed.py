"""Benchmark: images/s of the labeled (mosaic) and unlabeled (weak + strong) loaders at 640 px, 2 workers."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import record
from effteacher.config import AugmentConfig
from effteacher.data.loaders import LabeledDataset, UnlabeledDataset
from effteacher.data.records import ImageRecord
from effteacher.data.sampling import InfiniteLoader, build_loader

N_IMAGES = 64
IMGSZ = 640
BATCH = 16
WORKERS = 2
N_BATCHES = 16  # 256 images per pipeline, after one warm-up batch


def make_images(folder: Path, n: int, seed: int = 0) -> list[ImageRecord]:
    """n JPEGs of 480-720 px with noisy backgrounds and 1-8 filled rectangles (labelled)."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(480, 721, 2))
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 0)
        k = int(rng.integers(1, 9))
        wh = rng.uniform(0.05, 0.4, (k, 2))
        c = rng.uniform(wh / 2, 1 - wh / 2)
        for (cx, cy), (bw, bh) in zip(c, wh):
            x1, y1 = int((cx - bw / 2) * w), int((cy - bh / 2) * h)
            x2, y2 = int((cx + bw / 2) * w), int((cy + bh / 2) * h)
            img[y1:y2, x1:x2] = rng.integers(0, 256, 3)
        path = folder / f"{i:03d}.jpg"
        cv2.imwrite(str(path), img)
        boxes = np.concatenate([c, wh], 1).astype(np.float32)
        recs.append(ImageRecord(str(path), (h, w), rng.integers(0, 10, k).astype(np.int64), boxes))
    return recs


def images_per_second(loader) -> float:
    it = InfiniteLoader(loader)
    next(it)  # warm-up: starts the workers
    t0 = time.perf_counter()
    n = 0
    for _ in range(N_BATCHES):
        n += next(it)[0].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recs = make_images(Path(tmp), N_IMAGES)
        aug = AugmentConfig()
        lab = images_per_second(
            build_loader(LabeledDataset(recs, IMGSZ, aug, augment=True), BATCH, WORKERS, True, seed=0)
        )
        unl = images_per_second(build_loader(UnlabeledDataset(recs, IMGSZ, aug), BATCH, WORKERS, True, seed=0))
    line = (
        f"data_speed: labeled mosaic {lab:.1f} img/s, unlabeled weak+strong {unl:.1f} img/s "
        f"({IMGSZ} px, {WORKERS} workers, batch {BATCH}, {N_BATCHES * BATCH} images each)"
    )
    details = (
        f"- {N_IMAGES} generated JPEGs of 480-720 px, default AugmentConfig (mosaic 1.0, HSV, flips; "
        "strong view: affine, HSV, colour jitter 0.8, blur 0.1, noise 0.1, cutout 0.5), no RAM cache.\n"
        "- The CPU is shared with other engineers' jobs, so numbers are a lower bound.\n"
        "- Run: `OMP_NUM_THREADS=2 python -m benchmarks.data_speed`"
    )
    record("data_speed", line, details)


if __name__ == "__main__":
    main()
