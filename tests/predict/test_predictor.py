"""Prediction and runtimes: labels round trip, sources, .pt / .onnx / .torchscript backends, a truncated JPEG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from effteacher.data.sources import find_sources
from effteacher.errors import CheckpointError, DatasetError
from effteacher.export.runtime import load_backend
from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
from effteacher.predict.command import run_predict
from effteacher.predict.predictor import Detector
from effteacher.utils.boxes import xywhn2xyxy

NAMES = ["cat", "dog"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from effteacher.models.build import build_model

    torch.manual_seed(0)
    model = build_model("n", nc=2).eval()
    path = tmp_path_factory.mktemp("w") / "best.pt"
    return save_checkpoint(path, make_checkpoint(model, NAMES, 64, "model", 1, {}, {}))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(0)
    for rel, hw in (("a.jpg", (64, 80)), ("sub/b.png", (72, 48)), ("sub/deep/c.jpg", (50, 50))):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 255, (*hw, 3), dtype=np.uint8))
    (root / "notes.md").write_text("not an image")
    return root


def test_predict_labels_round_trip(tmp_path: Path, weights: Path, images: Path, capsys) -> None:
    out = run_predict(str(images), str(weights), conf=0.001, iou=0.45, max_det=15, save_txt=True, save_json=True,
                      project=tmp_path / "runs", name="exp")
    assert out == tmp_path / "runs" / "exp"
    text = "".join(capsys.readouterr().out.split())  # rich wraps long lines: compare without whitespace
    assert "Speed:" in text and "msNMSperimageatshape(1,3,64,64)" in text and str(out) in text
    det = Detector(weights, conf=0.001, iou=0.45)
    det.max_det = 15
    files = sorted(images.rglob("*.*"))
    files = [f for f in files if f.suffix != ".md"]
    n_boxes = 0
    for f in files:
        assert (out / f.name).is_file()  # annotated image
        d = det(str(f))[0]
        assert d.shape == cv2.imread(str(f)).shape[:2]
        rows = np.loadtxt(out / "labels" / f"{f.stem}.txt", ndmin=2)
        assert rows.shape == (len(d), 6)
        h, w = d.shape
        np.testing.assert_array_equal(rows[:, 0].astype(int), d.classes)
        np.testing.assert_allclose(xywhn2xyxy(rows[:, 1:5], w, h), d.boxes, atol=1e-3)
        np.testing.assert_allclose(rows[:, 5], d.scores, atol=1e-5)
        assert np.all(d.boxes[:, [0, 2]] <= w) and np.all(d.boxes >= 0)
        n_boxes += len(d)
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == n_boxes > 0
    assert {"image_id", "category_id", "bbox", "score"} <= set(preds[0])


def test_detector_api_inputs(weights: Path, images: Path) -> None:
    det = Detector(weights, conf=0.001)
    img = cv2.imread(str(images / "a.jpg"))
    from_array = det(img)
    from_list = det([str(images / "a.jpg"), img])
    assert len(from_array) == 1 and len(from_list) == 2
    np.testing.assert_allclose(from_array[0].boxes, from_list[0].boxes)
    d = from_array[0]
    assert d.boxes.dtype == np.float32 and d.classes.dtype == np.int64 and d.names == NAMES
    assert len(d.labels) == len(d) and set(d.labels) <= set(NAMES)
    assert np.all(d.scores[:-1] >= d.scores[1:])  # sorted by score


def test_sources(images: Path, tmp_path: Path) -> None:
    assert len(find_sources(images)) == 3  # recursive, images only
    assert len(find_sources(str(images / "sub" / "*.png"))) == 1
    lst = tmp_path / "list.txt"
    lst.write_text(f"{images / 'a.jpg'}\nsub/b.png\n")
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "b.png"), np.zeros((8, 8, 3), np.uint8))
    assert [p.name for p in find_sources(lst)] == ["a.jpg", "b.png"]
    with pytest.raises(DatasetError, match="does not exist"):
        find_sources(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no images found"):
        find_sources(str(tmp_path / "*.jpg"))


def test_bad_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_backend(tmp_path / "none.onnx")
    (tmp_path / "w.h5").write_text("x")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        load_backend(tmp_path / "w.h5")
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot load ONNX"):
        load_backend(tmp_path / "bad.onnx")


def _export(weights: Path, tmp_path: Path, fmt: str, **kw) -> Path:
    from effteacher.export.api import export_metadata
    from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint
    from effteacher.models.head import DeployModel

    ckpt = load_checkpoint(weights)
    model = DeployModel(model_from_checkpoint(ckpt)).eval()
    meta = export_metadata(ckpt, (64, 64), 32, kw.get("nms", False), 1, kw.get("dynamic", False))
    if fmt == "onnx":
        from effteacher.export.onnx import export_onnx

        return export_onnx(model, tmp_path / "m.onnx", (64, 64), metadata=meta, conf=0.001, **kw)
    from effteacher.export.torchscript import export_torchscript

    return export_torchscript(model, tmp_path / "m.torchscript", (64, 64), metadata=meta)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,kw", [("onnx", {}), ("onnx", {"dynamic": True}), ("torchscript", {})])
def test_exported_backends_match_pytorch(weights: Path, tmp_path: Path, fmt: str, kw: dict) -> None:
    path = _export(weights, tmp_path, fmt, **kw)
    ref, be = load_backend(weights), load_backend(path)
    assert be.names == NAMES and be.imgsz == (64, 64) and be.stride == 32 and not be.has_nms
    dynamic = kw.get("dynamic", False)
    assert (be.fixed_shape, be.fixed_batch) == ((None, None) if dynamic else ((64, 64), 1))
    x = torch.rand(3, 3, 64, 96 if dynamic else 64)
    torch.testing.assert_close(be(x), ref(x), atol=2e-3, rtol=1e-3)  # batch 3 through a batch-1 model too


@pytest.mark.slow
def test_onnx_nms_backend_predicts_like_pt(weights: Path, images: Path, tmp_path: Path) -> None:
    path = _export(weights, tmp_path, "onnx", nms=True, max_det=10, iou=0.45)
    be = load_backend(path)
    assert be.has_nms
    a = Detector(weights, conf=0.001, iou=0.45, max_det=10)(str(images / "a.jpg"))[0]
    b = Detector(path, conf=0.001, iou=0.45, max_det=10)(str(images / "a.jpg"))[0]
    assert len(b) > 0
    # a.jpg (64x80) letterboxes to 64x64 both for the static onnx and the pt minimum rectangle: same input
    np.testing.assert_allclose(b.boxes[0], a.boxes[0], atol=0.05)
    assert b.scores[0] == pytest.approx(a.scores[0], abs=1e-3)


def _img(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


# ------------------------------------------------------------------------------------ 6. messages
@pytest.mark.slow
def test_pt_backend_folds_batchnorm_and_predicts_like_the_trained_model(weights: Path) -> None:
    """A .pt loaded for inference runs with BatchNorm folded into the convolutions; its outputs are the checkpoint
    model's own (in memory, unfused, as validation during training runs it)."""
    from effteacher.export.runtime import as_backend
    from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint

    be = load_backend(weights)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in be.model.modules())
    model = model_from_checkpoint(load_checkpoint(weights), torch.device("cpu"))
    ref = as_backend(model, NAMES, 64)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a caller's model is not touched
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(be(x), ref(x), atol=1e-4, rtol=1e-4)


def test_predict_names_a_truncated_jpeg_and_goes_on(tmp_path):
    from effteacher.models.build import build_model
    from effteacher.models.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    w = save_checkpoint(tmp_path / "w.pt", make_checkpoint(build_model("n", nc=2).eval(), ["a", "b"], 64, "model", 1,
                                                           {}, {}))
    src = tmp_path / "src"
    good = _img(src / "good.jpg")
    data = good.read_bytes()
    (src / "trunc.jpg").write_bytes(data[: len(data) // 2])
    res = subprocess.run([sys.executable, "-m", "effteacher", "predict", str(src), "--weights", str(w), "--project",
                          str(tmp_path / "runs")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert f"{src / 'trunc.jpg'}: truncated JPEG" in res.stderr
    assert "Premature end of JPEG" not in res.stdout + res.stderr  # libjpeg never sees the broken file
    assert "good.jpg" in res.stdout and (tmp_path / "runs/exp/good.jpg").is_file()
    assert not (tmp_path / "runs/exp/trunc.jpg").exists()
