"""CPU throughput (images/s) of ``Detector`` at batch 1 against batch 16: n model, random init, NMS included.

    OMP_NUM_THREADS=1 python -m benchmarks.predict_speed

Random 640x480 BGR images (letterboxed to imgsz x 3/4 imgsz, as photos are), the whole set per pass; the two batch
sizes run in turn each repeat so that CPU contention hits both alike. Reports the median and the range over repeats.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import record

SIZES = (320, 640)
BATCHES = (1, 16)
N_IMAGES = 32
REPEATS = {320: 5, 640: 3}
THREADS = 1  # one intra-op thread: on the shared 2-core machine more threads measure contention


def main() -> None:
    from effteacher.models.build import build_model
    from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
    from effteacher.predict.predictor import Detector

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(N_IMAGES)]
    speeds: dict[tuple[int, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_checkpoint(Path(tmp) / "n.pt", make_checkpoint(build_model("n", nc=80).eval(),
                                                                      [str(i) for i in range(80)], 640, "model", 0,
                                                                      {}, {}))
        for size in SIZES:
            det = Detector(weights, conf=0.25, iou=0.45, imgsz=size)
            for b in BATCHES:
                det(images[:b], batch=b)  # warm-up
            for _ in range(REPEATS[size]):
                for b in BATCHES:
                    t = time.perf_counter()
                    det(images, batch=b)
                    speeds.setdefault((size, b), []).append(N_IMAGES / (time.perf_counter() - t))

    def cell(size: int, b: int) -> str:
        v = speeds[size, b]
        return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"

    gain = {s: statistics.median(speeds[s, 16]) / statistics.median(speeds[s, 1]) for s in SIZES}
    line = ("predict_speed: n img/s batch 1 vs 16: " +
            ", ".join(f"@{s} {statistics.median(speeds[s, 1]):.1f} vs {statistics.median(speeds[s, 16]):.1f} "
                      f"({gain[s]:.2f}x)" for s in SIZES))
    details = "\n".join([
        f"CPU, {THREADS} intra-op thread, `Detector(weights, imgsz=S)(images, batch=B)` on {N_IMAGES} random "
        f"640x480 images per pass (preprocess, model, NMS at conf 0.25, box scaling), random-init n model with "
        f"nc=80, median (min-max) of {REPEATS} interleaved passes after a warm-up. The machine's CPU is shared with "
        "other jobs: expect noise of 10-30%.",
        "",
        "| imgsz | batch 1 img/s | batch 16 img/s | batch 16 / batch 1 |",
        "|---|---|---|---|",
        *[f"| {s} | {cell(s, 1)} | {cell(s, 16)} | {gain[s]:.2f}x |" for s in SIZES],
    ])
    record("predict_speed", line, details)


if __name__ == "__main__":
    main()
