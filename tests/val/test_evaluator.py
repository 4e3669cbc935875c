"""Evaluator on a tiny generated dataset: a fake backend that returns the GT gives mAP 1.0."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from effteacher.data.records import ImageRecord
from effteacher.val.evaluator import Evaluator, ValResult
from effteacher.export.runtime import Backend

PAD = 114
NAMES = ["a", "b"]


def _dataset(tmp_path: Path) -> list[ImageRecord]:
    """4 solid-colour images of different shapes; the colour identifies the image."""
    shapes = [(64, 96), (80, 64), (64, 64), (48, 100)]
    boxes = [
        [[0, 0.5, 0.5, 0.4, 0.5], [1, 0.2, 0.3, 0.2, 0.3]],
        [[1, 0.5, 0.6, 0.5, 0.4]],
        [[0, 0.3, 0.3, 0.4, 0.4], [0, 0.7, 0.7, 0.3, 0.3], [1, 0.5, 0.2, 0.6, 0.2]],
        [],
    ]
    records = []
    for i, (hw, b) in enumerate(zip(shapes, boxes)):
        path = tmp_path / "images" / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((*hw, 3), 20 + 40 * i, np.uint8))
        arr = np.asarray(b, dtype=np.float32).reshape(-1, 5)
        records.append(ImageRecord(str(path), hw, arr[:, 0].astype(np.int64), arr[:, 1:]))
    return records


class GTBackend(Backend):
    """Finds each image's letterboxed region (non-pad pixels) and its colour, and returns its GT boxes
    decoded like DeployModel: (B, A, 5+nc) cx cy w h in input pixels, obj 1, one-hot class."""

    format = "fake"

    def __init__(self, records: list[ImageRecord], drop: int = 0, **kw) -> None:
        super().__init__(NAMES, (64, 64), 32, torch.device("cpu"), **kw)
        self.records, self.drop, self.batches = records, drop, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(tuple(x.shape))
        out = torch.zeros(x.shape[0], 8, 5 + len(NAMES))
        for j, img in enumerate(x):
            v = (img[0] * 255).round()
            mask = v != PAD
            if not mask.any():  # a zero-padded batch slot
                continue
            ys, xs = torch.nonzero(mask, as_tuple=True)
            x0, y0, w, h = xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            i = int((v[ys[0], xs[0]] - 20) / 40 + 0.5)
            rec = self.records[i]
            b = torch.as_tensor(rec.boxes)[: max(rec.n - self.drop, 0)]
            n = b.shape[0]
            out[j, :n, 0] = x0 + b[:, 0] * w
            out[j, :n, 1] = y0 + b[:, 1] * h
            out[j, :n, 2] = b[:, 2] * w
            out[j, :n, 3] = b[:, 3] * h
            out[j, :n, 4] = 1.0
            out[j, torch.arange(n), 5 + torch.as_tensor(rec.cls[:n])] = 1.0
        return out


def test_gt_backend_gives_map_one(tmp_path: Path) -> None:
    records = _dataset(tmp_path)
    ev = Evaluator(records, NAMES, imgsz=128, batch=2)
    backend = GTBackend(records)
    res = ev.run(backend, save_dir=tmp_path / "val", plots=True)
    assert isinstance(res, ValResult)
    assert res.map50 == pytest.approx(1.0) and res.map == pytest.approx(1.0, abs=1e-3)
    assert res.precision == pytest.approx(1.0) and res.recall == pytest.approx(1.0)
    assert res.n_images == 4 and res.n_instances == 6
    assert res.fitness() == pytest.approx(0.1 * res.map50 + 0.9 * res.map)
    assert set(res.as_dict()) == {"metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95"}
    assert [r["cls"] for r in res.per_class] == [-1, 0, 1]
    assert res.per_class[1]["instances"] == 3 and res.per_class[1]["images"] == 2
    assert set(res.speed) == {"preprocess", "inference", "nms"}
    # rect batches: 2 images per batch, not always square
    assert all(s[0] <= 2 for s in backend.batches) and any(s[2] != s[3] for s in backend.batches)
    preds = json.loads((tmp_path / "val" / "predictions.json").read_text())
    assert len(preds) == 6 and {p["image_id"] for p in preds} == {0, 1, 2}
    # predictions are in original pixels: image 0 box 0 = (0.5, 0.5, 0.4, 0.5) of 96x64
    p0 = next(p for p in preds if p["image_id"] == 0 and p["category_id"] == 0)
    np.testing.assert_allclose(p0["bbox"], [28.8, 16, 38.4, 32], atol=0.6)
    assert (tmp_path / "val" / "PR_curve.png").is_file() and (tmp_path / "val" / "confusion_matrix.png").is_file()


def test_missing_detections_known_value(tmp_path: Path) -> None:
    # dropping the last GT box of every image: recall 3/6, precision 1; per class: a 2/3 found? no:
    # image0 keeps (a), image1 keeps nothing, image2 keeps (a, a) -> class a 3/3, class b 0/3
    records = _dataset(tmp_path)
    res = Evaluator(records, NAMES, imgsz=64, batch=4).run(GTBackend(records, drop=1), verbose=False)
    assert res.map50 == pytest.approx(0.5) and res.map == pytest.approx(0.5, abs=1e-3)
    rows = {r["cls"]: r for r in res.per_class}
    assert rows[0]["map50"] == pytest.approx(1.0) and rows[1]["map50"] == pytest.approx(0.0)
    assert rows[0]["r"] == pytest.approx(1.0) and rows[1]["r"] == pytest.approx(0.0)


def test_static_backend_is_fed_square_single_batches(tmp_path: Path) -> None:
    records = _dataset(tmp_path)
    backend = GTBackend(records, fixed_batch=1, fixed_shape=(64, 64))
    res = Evaluator(records, NAMES, imgsz=128, batch=3).run(backend, verbose=False)
    assert res.map50 == pytest.approx(1.0)
    assert set(backend.batches) == {(1, 3, 64, 64)} and len(backend.batches) == 4


def test_detector_module_and_mode_restored(tmp_path: Path) -> None:
    from effteacher.models.build import build_model

    records = _dataset(tmp_path)
    torch.manual_seed(0)
    model = build_model("n", nc=2).train()
    res = Evaluator(records, NAMES, imgsz=64, batch=2).run(model, save_dir=tmp_path / "m", verbose=False)
    assert model.training  # the trainer's model comes back in its mode
    assert 0.0 <= res.map <= res.map50 <= 1.0
    assert (tmp_path / "m" / "predictions.json").is_file()


def test_class_count_mismatch(tmp_path: Path) -> None:
    from effteacher.errors import DatasetError

    records = _dataset(tmp_path)
    backend = GTBackend(records)
    backend.names = ["only"]
    with pytest.raises(DatasetError, match="1 classes"):
        Evaluator(records, NAMES, imgsz=64, batch=2).run(backend)


def test_run_val_pt_and_onnx_agree(tmp_path: Path, capsys) -> None:
    """`effteacher val` path: dataset YAML -> scan -> any weights format -> runs/val/exp{N}."""
    from effteacher.models.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
    from effteacher.val.evaluator import run_val
    from effteacher.export.api import export_metadata
    from effteacher.export.onnx import export_onnx
    from effteacher.models.build import build_model
    from effteacher.models.head import DeployModel

    records = _dataset(tmp_path / "ds")
    for r in records:  # YOLO label files beside images/ -> labels/
        lbl = Path(r.path.replace("/images/", "/labels/")).with_suffix(".txt")
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text("".join(f"{c} {' '.join(map(str, b))}\n" for c, b in zip(r.cls.tolist(), r.boxes.tolist())))
    yaml = tmp_path / "ds" / "d.yaml"
    yaml.write_text("path: .\ntrain: images\nval: images\nnames: [a, b]\n")
    torch.manual_seed(0)
    pt = save_checkpoint(tmp_path / "best.pt", make_checkpoint(build_model("n", nc=2), NAMES, 64, "model", 0, {}, {}))
    ckpt = load_checkpoint(pt)
    onnx = export_onnx(DeployModel(model_from_checkpoint(ckpt)), tmp_path / "best.onnx", (64, 64), dynamic=True,
                       metadata=export_metadata(ckpt, (64, 64), 32, False, 1, True))
    kw = dict(data=str(yaml), batch=2, workers=0, project=tmp_path / "runs", name="exp")
    a = run_val(weights=str(pt), **kw)
    b = run_val(weights=str(onnx), **kw)
    assert (tmp_path / "runs" / "exp" / "predictions.json").is_file()
    assert (tmp_path / "runs" / "exp2" / "confusion_matrix.png").is_file()
    assert "exp2" in "".join(capsys.readouterr().out.split())
    assert a.n_images == b.n_images == 4 and a.n_instances == 6
    assert abs(a.map - b.map) < 0.005 and abs(a.map50 - b.map50) < 0.005
    pa = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    pb = json.loads((tmp_path / "runs" / "exp2" / "predictions.json").read_text())
    assert abs(len(pa) - len(pb)) <= max(2, len(pa) // 50)
