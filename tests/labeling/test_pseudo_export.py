"""`pseudo` on a teacher that detects: YOLO txt, COCO JSON, review.csv, --save-to-dataset, sources and errors;
the teacher checkpoint stores its thresholds."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from effteacher.cli import app


def _cli(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _text(res) -> str:
    """The command's output on one line (rich wraps long lines)."""
    return " ".join(res.output.split())


@pytest.mark.slow
def test_teacher_checkpoint_stores_its_thresholds(loop):
    for f in ("last.pt", "best.pt"):
        ck = torch.load(loop["run"] / "weights" / f, weights_only=True)
        if ck["which"] != "teacher":
            continue
        th = ck["pseudo_thresholds"]
        assert th["kind"] == "fixed" and len(th["tau1"]) == len(th["tau2"]) == 10
        assert torch.allclose(th["tau2"], torch.full((10,), 0.6))
    assert "pseudo_thresholds" in torch.load(loop["run"] / "weights" / "last.pt", weights_only=True)


def _review(out: Path) -> list[dict[str, str]]:
    with open(out / "review.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_pseudo_writes_yolo_coco_and_review(loop, tmp_path):
    from pycocotools.coco import COCO

    src = loop["ds"] / "images" / "val"
    res = _cli(["pseudo", str(src), "--weights", str(loop["hot"]), "--workers", "0", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "exp"
    assert "per-class fixed thresholds stored with the teacher" in _text(res)
    images = sorted(src.glob("*.jpg"))
    labels = sorted((out / "labels").glob("*.txt"))
    assert [p.stem for p in labels] == [p.stem for p in images]
    n_txt = 0
    for p in labels:
        rows = np.loadtxt(p, ndmin=2)
        assert rows.shape[1] == 5 and ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
        assert set(rows[:, 0].astype(int)) <= set(range(10))
        n_txt += len(rows)
    coco = COCO(str(out / "pseudo_labels.json"))
    assert len(coco.getImgIds()) == len(images)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [str(i) for i in range(10)]
    anns = coco.loadAnns(coco.getAnnIds())
    status = [a["attributes"]["pseudo"] for a in anns]
    assert n_txt == status.count("reliable") > 0 and status.count("uncertain") > 0
    assert all(0 < a["score"] <= 1 and a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in anns)
    # the reliable COCO boxes are the YOLO boxes
    img0 = coco.loadImgs(1)[0]
    rel = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[1])) if a["attributes"]["pseudo"] == "reliable"]
    txt = np.loadtxt(out / "labels" / f"{Path(img0['file_name']).stem}.txt", ndmin=2)
    xywh = np.array([[a["category_id"] - 1, a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1] + a["bbox"][3] / 2,
                      *a["bbox"][2:]] for a in rel]) / [1, img0["width"], img0["height"], img0["width"], img0["height"]]
    assert np.allclose(np.sort(txt, 0), np.sort(xywh, 0), atol=1e-3)
    review = _review(out)
    assert len(review) == len(images) and [int(r["rank"]) for r in review] == list(range(1, len(images) + 1))
    unc = [float(r["uncertainty"]) for r in review]
    assert unc == sorted(unc, reverse=True) and all(0 <= u <= 1 for u in unc)
    assert sum(int(r["n_reliable"]) for r in review) == n_txt
    assert sum(int(r["n_uncertain"]) for r in review) == status.count("uncertain")
    assert {r["image"] for r in review} == {str(p) for p in images}
    # nothing was written next to the user's images
    assert not (loop["ds"] / "labels" / "val" / "pseudo").exists()
    # --conf raises every class's reliable threshold: fewer reliable boxes
    res = _cli(["pseudo", str(src), "--weights", str(loop["hot"]), "--workers", "0", "--project", str(tmp_path),
                "--conf", "0.95", "--flip"])
    assert res.exit_code == 0, res.output
    assert sum(int(r["n_reliable"]) for r in _review(tmp_path / "exp2")) < n_txt


@pytest.mark.slow
def test_pseudo_save_to_dataset_round_trips_and_never_overwrites(loop, tmp_path):
    from effteacher.data.dataset import scan_labeled

    imgs = tmp_path / "new" / "images"
    imgs.mkdir(parents=True)
    for f in sorted((loop["ds"] / "images" / "val").glob("*.jpg"))[:3]:
        shutil.copy(f, imgs / f.name)
    args = ["pseudo", str(imgs), "--weights", str(loop["hot"]), "--workers", "0", "--project", str(tmp_path / "runs")]
    res = _cli([*args, "--save-to-dataset"])
    assert res.exit_code == 0, res.output
    beside = sorted((tmp_path / "new" / "labels").glob("*.txt"))
    assert len(beside) == 3
    for f in beside:
        assert f.read_text() == (tmp_path / "runs" / "exp" / "labels" / f.name).read_text()
    # the YOLO txt round-trips through the dataset loader
    scan = scan_labeled([imgs], [str(i) for i in range(10)], cache_dir=tmp_path / "cache", progress=False)
    assert len(scan.records) == 3 and not scan.messages
    for r in scan.records:
        rows = np.loadtxt(tmp_path / "new" / "labels" / f"{Path(r.path).stem}.txt", ndmin=2)
        assert r.cls.tolist() == rows[:, 0].astype(int).tolist()
        assert np.allclose(r.boxes, rows[:, 1:], atol=1e-5)
    # a second run refuses: it names the existing file, writes nothing beside the images, leaves them unchanged
    before = {f: f.read_text() for f in beside}
    beside[0].write_text("0 0.5 0.5 0.1 0.1\n")
    before[beside[0]] = beside[0].read_text()
    res = _cli([*args, "--save-to-dataset"])
    assert res.exit_code == 1 and "never overwrites" in _text(res) and beside[0].name in res.output
    assert "Traceback" not in res.output
    assert {f: f.read_text() for f in beside} == before
    assert not (tmp_path / "runs" / "exp2").exists()
    # two images that map to one label file are refused too
    shutil.rmtree(tmp_path / "new" / "labels")
    import cv2

    cv2.imwrite(str(imgs / "000000.png"), cv2.imread(str(imgs / "000000.jpg")))
    res = _cli([*args, "--save-to-dataset"])
    assert res.exit_code == 1 and "would both be labeled in" in _text(res)
    assert not (tmp_path / "new" / "labels").exists()


@pytest.mark.slow
def test_pseudo_sources_and_errors(loop, tmp_path):
    res = _cli(["pseudo", str(loop["yaml_u"]), "--weights", str(loop["hot"]), "--workers", "0",
                "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert {Path(r["image"]).name for r in _review(tmp_path / "exp")} == {f"u{i}.jpg" for i in range(4)}
    res = _cli(["pseudo", str(loop["yaml"]), "--weights", str(loop["hot"]), "--project", str(tmp_path)])
    assert res.exit_code == 1 and "no 'unlabeled' entry" in _text(res)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    res = _cli(["pseudo", str(loop["extra"]), "--weights", str(onnx), "--project", str(tmp_path)])
    assert res.exit_code == 1 and "need an effteacher .pt checkpoint" in _text(res)
