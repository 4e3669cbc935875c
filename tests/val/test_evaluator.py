"""Evaluator: a fake backend that returns the GT gives mAP 1.0, known values, a validation that finds nothing
(zeros, not a crash) and an overfit n model reaching mAP50 through the whole chain."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.config import LossConfig
from effteacher.data.loaders import LabeledDataset
from effteacher.data.records import ImageRecord
from effteacher.export.runtime import Backend
from effteacher.losses.detection import DetectionLoss
from effteacher.models.build import build_model
from effteacher.val.evaluator import Evaluator, ValResult

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


@pytest.mark.slow
def test_run_val_pt_and_onnx_agree(tmp_path: Path, capsys) -> None:
    """`effteacher val` path: dataset YAML -> scan -> any weights format -> runs/val/exp{N}."""
    from effteacher.export.api import export_metadata
    from effteacher.export.onnx import export_onnx
    from effteacher.models.build import build_model
    from effteacher.models.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
    from effteacher.models.head import DeployModel
    from effteacher.val.evaluator import run_val

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


TINY = ["--imgsz", "64", "--batch", "4", "--workers", "0"]


def _cli(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def blind_run(tiny_data, tmp_path_factory) -> Path:
    """A tiny supervised run whose every validation finds nothing (the detector's output is emptied)."""
    import effteacher.val.evaluator as evaluator

    root = tmp_path_factory.mktemp("blind")
    real = evaluator.detections_from_output
    evaluator.detections_from_output = lambda *a, **k: [d[:0] for d in real(*a, **k)]
    try:
        res = _cli(["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "2", *TINY,
                    "--project", str(root), "--name", "blind"])
    finally:
        evaluator.detections_from_output = real
    assert res.exit_code == 0, res.output
    return root / "blind"


@pytest.mark.slow
def test_training_whose_validations_find_nothing_records_zero(blind_run):
    with open(blind_run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        for k in ("metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95"):
            assert float(r[k]) == 0.0, k
    assert (blind_run / "weights" / "best.pt").is_file() and (blind_run / "PR_curve.png").is_file()
    assert (blind_run / "predictions.json").read_text() == "[]"


@pytest.mark.slow
def test_val_with_a_confidence_nothing_reaches_prints_zeros(blind_run, tiny_data, tmp_path):
    res = _cli(["val", "--weights", str(blind_run / "weights" / "best.pt"), "--data", str(tiny_data),
                "--conf", "0.999", "--workers", "0", "--project", str(tmp_path), "--name", "v"])
    assert res.exit_code == 0, res.output
    lines = [ln.split() for ln in res.output.splitlines()]
    table = [ln for ln in lines if ln and (ln[0] == "all" or ln[0].isdigit()) and len(ln) == 7]
    assert table and table[0][0] == "all"
    for row in table:
        assert [float(v) for v in row[3:]] == [0.0, 0.0, 0.0, 0.0], row
    assert (tmp_path / "v" / "predictions.json").read_text() == "[]"
    assert torch.load(blind_run / "weights" / "best.pt", weights_only=True)["format"] == "effteacher"


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


@pytest.mark.slow
def test_overfit_tiny_images_reaches_map50(tmp_path):
    """The whole chain is wired right: loader -> n model -> loss -> optimizer -> evaluator (pycocotools). An n model
    overfits 3 tiny images in a few dozen steps and the Evaluator on those same images then reaches mAP50 > 0.5
    (a wiring check only: the images are deliberately the training images)."""
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
