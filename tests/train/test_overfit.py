"""The whole chain is wired right: loader -> n model -> loss -> optimizer -> evaluator (pycocotools).

An n model overfits 3 tiny images with a few dozen steps and `Evaluator` on those same images then
reaches mAP50 > 0.5. (A wiring check only: the images are deliberately the training images.)
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from effteacher.config import LossConfig
from effteacher.data.loaders import LabeledDataset
from effteacher.data.records import ImageRecord
from effteacher.val.evaluator import Evaluator
from effteacher.losses.detection import DetectionLoss
from effteacher.models.build import build_model


def _make_images(tmp_path) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    specs = [  # (x1, y1, x2, y2, cls, colour BGR) on 96x96 images
        [(10, 12, 42, 50, 0, (255, 255, 255))],
        [(50, 40, 90, 86, 1, (0, 0, 255)), (8, 8, 30, 30, 0, (255, 255, 255))],
        [(30, 20, 70, 60, 1, (0, 0, 255))],
    ]
    records = []
    for i, boxes in enumerate(specs):
        img = (rng.uniform(0, 60, (96, 96, 3))).astype(np.uint8)
        cls, xywh = [], []
        for x1, y1, x2, y2, c, col in boxes:
            img[y1:y2, x1:x2] = col
            cls.append(c)
            xywh.append([(x1 + x2) / 2 / 96, (y1 + y2) / 2 / 96, (x2 - x1) / 96, (y2 - y1) / 96])
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), img)
        records.append(ImageRecord(str(path), (96, 96), np.array(cls, np.int64), np.array(xywh, np.float32)))
    return records


def test_overfit_tiny_images_reaches_map50(tmp_path):
    torch.manual_seed(0)
    records = _make_images(tmp_path)
    ds = LabeledDataset(records, 96, None, augment=False)
    imgs, targets, _, _ = ds.collate_fn([ds[i] for i in range(len(ds))])
    x = imgs.float() / 255
    model = build_model("n", 2)
    loss_fn = DetectionLoss(model, LossConfig(), imgsz=96)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(150):
        loss, _ = loss_fn(model(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    result = Evaluator(records, ["white", "red"], imgsz=96, batch=4).run(model.eval(), verbose=False)
    assert result.map50 > 0.5, result
    assert 0.0 <= result.map <= result.map50 <= 1.0
