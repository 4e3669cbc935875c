"""OpenVINO export: parity with PyTorch (fp32 and fp16 weights), `val`/`predict` on the exported folder, and
the one-line error when the openvino package is missing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.data.spec import load_spec
from effteacher.errors import CheckpointError
from effteacher.export.api import run_export
from effteacher.export.runtime import load_backend
from effteacher.models.build import build_model
from effteacher.models.checkpoint import make_checkpoint, model_from_checkpoint, save_checkpoint
from effteacher.models.head import DeployModel
from effteacher.predict.command import run_predict
from effteacher.val.evaluator import run_val

# find_spec, not importorskip: importing openvino while pytest collects (its capture active) broke sys.stderr
# for later tests that print through the yolov5/ultralytics loggers
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")]

IMGSZ = 64


@pytest.fixture(scope="module")
def weights(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init n checkpoint (imgsz 64) for the tiny dataset's classes."""
    names = load_spec(str(tiny_data)).names
    torch.manual_seed(0)
    ckpt = make_checkpoint(build_model("n", nc=len(names)), names, IMGSZ, "teacher", 0, {}, {})
    ckpt["versions"] = {k: str(v) for k, v in ckpt["versions"].items()}
    return save_checkpoint(tmp_path_factory.mktemp("ov") / "best.pt", ckpt)


@pytest.mark.parametrize("half", [False, True])
def test_export_folder_and_parity(weights: Path, half: bool, capsys: pytest.CaptureFixture) -> None:
    folder = run_export(weights, format="openvino", half=half, dynamic=half)
    assert folder == weights.parent / "best_openvino_model"
    assert sorted(p.name for p in folder.iterdir()) == ["best.bin", "best.xml", "metadata.yaml"]
    meta = yaml.safe_load((folder / "metadata.yaml").read_text())
    assert meta["imgsz"] == [IMGSZ, IMGSZ] and meta["stride"] == 32 and meta["half"] == int(half)
    assert list(meta["names"]) == list(range(meta["nc"]))
    out = capsys.readouterr().out
    assert "parity: max |diff| boxes" in out and "OpenVINO vs PyTorch" in out

    backend = load_backend(folder)
    assert backend.format == "openvino" and backend.names == list(meta["names"].values())
    assert backend.fixed_shape == (None if half else (IMGSZ, IMGSZ))
    eager = DeployModel(model_from_checkpoint(torch.load(weights, weights_only=True))).eval()
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = eager(x)
    got = backend(x)  # batch 2 through a batch-1 static model: split and joined by Backend.__call__
    box_tol, score_tol = (0.32, 2e-2) if half else (1e-3, 1e-4)
    assert (got[..., :4] - ref[..., :4]).abs().max() <= box_tol
    assert (got[..., 4:] - ref[..., 4:]).abs().max() <= score_tol
    assert load_backend(folder / "best.xml").nc == backend.nc


def _predictions(folder: Path) -> list[dict]:
    return sorted(json.loads((folder / "predictions.json").read_text()),
                  key=lambda d: (d["image_id"], d["category_id"], -d["score"]))


def test_val_and_predict_on_the_folder_match_the_checkpoint(weights: Path, tiny_data: Path, tmp_path: Path) -> None:
    folder = run_export(weights, format="openvino")
    kw = {"data": str(tiny_data), "imgsz": IMGSZ, "batch": 4, "workers": 0, "project": str(tmp_path / "val")}
    pt, ov = run_val(weights, name="pt", **kw), run_val(folder, name="ov", **kw)
    assert ov.n_images == pt.n_images > 0
    for k in ("precision", "recall", "map50", "map"):
        assert abs(getattr(ov, k) - getattr(pt, k)) <= 1e-3, k
    a, b = _predictions(tmp_path / "val" / "pt"), _predictions(tmp_path / "val" / "ov")
    assert len(a) == len(b) > 0
    assert np.abs(np.array([d["score"] for d in a]) - np.array([d["score"] for d in b])).max() <= 1e-3

    images = Path(load_spec(str(tiny_data)).val[0])
    pkw = {"conf": 0.001, "imgsz": IMGSZ, "save_json": True, "save_images": False, "project": str(tmp_path / "pred")}
    p_pt, p_ov = run_predict(images, weights, name="pt", **pkw), run_predict(images, folder, name="ov", **pkw)
    a, b = _predictions(p_pt), _predictions(p_ov)
    assert len(a) == len(b) > 0
    assert np.abs(np.array([d["bbox"] for d in a]) - np.array([d["bbox"] for d in b])).max() <= 1e-2
    assert np.abs(np.array([d["score"] for d in a]) - np.array([d["score"] for d in b])).max() <= 1e-3


def test_missing_openvino_is_one_error_line(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = run_export(weights, format="openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    result = CliRunner().invoke(app, ["export", "--weights", str(weights), "--format", "openvino"])
    assert result.exit_code == 1 and (result.exception is None or isinstance(result.exception, SystemExit))
    text = result.output.strip()
    assert text.startswith("ERROR") and text.count("ERROR") == 1 and "Traceback" not in text
    assert "pip install openvino" in " ".join(text.split())
    with pytest.raises(CheckpointError, match="pip install openvino"):
        load_backend(folder)
    result = CliRunner().invoke(app, ["val", "--weights", str(folder)])
    assert result.exit_code == 1 and "pip install openvino" in " ".join(result.output.split())
