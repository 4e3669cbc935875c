"""The files of `effteacher pseudo` read by the libraries that labeling tools import with: datumaro (what CVAT's
"COCO 1.0" and "YOLO 1.1" imports run on) and label-studio-converter; boxes, class names and scores must survive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.data.spec import load_spec
from effteacher.errors import ConfigError
from effteacher.labeling.pseudo_export import run_pseudo
from effteacher.labeling.tool_formats import parse_formats
from effteacher.models.build import build_model
from effteacher.models.checkpoint import make_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pseudo --format all` on the tiny val images with a random-init n model whose head biases (objectness 0.5,
    random class logits per anchor) give scores of about 0.38-0.48, so boxes come out on both sides of --conf 0.47."""
    root = tmp_path_factory.mktemp("pseudo_tools")
    names = load_spec(str(tiny_data)).names
    torch.manual_seed(0)
    model = build_model("n", nc=len(names))
    with torch.no_grad():
        for conv in model.head:
            b = conv.bias.view(model.na, -1)
            b[:, 4], b[:, 5:] = 0.0, torch.randn(model.na, len(names)) * 1.5
    ckpt = make_checkpoint(model, names, 64, "teacher", 0, {}, {})
    ckpt["versions"] = {k: str(v) for k, v in ckpt["versions"].items()}
    weights = save_checkpoint(root / "best.pt", ckpt)
    images = tiny_data.parent / "images" / "val"
    out = run_pseudo(str(images), weights, conf=0.47, format="all", max_det=100, workers=0, project=str(root / "runs"))
    coco = json.loads((out / "pseudo_labels.json").read_text())
    status = {a["attributes"]["pseudo"] for a in coco["annotations"]}
    assert status == {"reliable", "uncertain"}, status  # the fixture gives both kinds of box
    return out


def _coco(run: Path) -> dict:
    return json.loads((run / "pseudo_labels.json").read_text())


def _ours_by_stem(coco: dict, reliable_only: bool = False) -> dict[str, list[tuple[str, list[float], float]]]:
    """stem -> sorted [(class name, [x, y, w, h], score)] from our COCO document."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    stems = {im["id"]: Path(im["file_name"]).stem for im in coco["images"]}
    out: dict[str, list] = {s: [] for s in stems.values()}
    for a in coco["annotations"]:
        if not reliable_only or a["attributes"]["pseudo"] == "reliable":
            out[stems[a["image_id"]]].append((names[a["category_id"]], a["bbox"], a["score"]))
    return {k: sorted(v, key=lambda t: (t[0], t[1])) for k, v in out.items()}


def _assert_same(ours: dict, theirs: dict, box_tol: float, scores: bool = True) -> None:
    assert sorted(ours) == sorted(theirs)
    for stem in ours:
        a, b = ours[stem], theirs[stem]
        assert [t[0] for t in a] == [t[0] for t in b], stem
        if a:
            assert np.abs(np.array([t[1] for t in a]) - np.array([t[1] for t in b])).max() <= box_tol, stem
        if scores:
            assert [t[2] for t in a] == pytest.approx([t[2] for t in b], abs=1e-6), stem


def _datumaro_boxes(dataset) -> dict[str, list[tuple[str, list[float], float | None]]]:
    from datumaro.components.annotation import AnnotationType

    labels = dataset.categories()[AnnotationType.label]
    out = {}
    for item in dataset:
        boxes = [(labels[a.label].name, [a.x, a.y, a.w, a.h], a.attributes.get("score"))
                 for a in item.annotations if a.type == AnnotationType.bbox]
        out[Path(item.id).name] = sorted(boxes, key=lambda t: (t[0], t[1]))
    return out


def test_datumaro_coco_import_keeps_boxes_names_scores_and_status(run: Path, tmp_path: Path) -> None:
    dm = pytest.importorskip("datumaro")
    # datumaro 1.x finds a COCO file by the layout of a COCO zip: annotations/instances_<subset>.json and images/
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    shutil.copy(run / "pseudo_labels.json", tmp_path / "annotations" / "instances_default.json")
    dataset = dm.Dataset.import_from(str(tmp_path), "coco_instances")
    coco = _coco(run)
    _assert_same(_ours_by_stem(coco), _datumaro_boxes(dataset), box_tol=1e-4)  # float32 there
    statuses = sorted(a.attributes["pseudo"] for item in dataset for a in item.annotations)
    assert statuses == sorted(a["attributes"]["pseudo"] for a in coco["annotations"])


def test_datumaro_yolo_import_of_the_run_folder(run: Path) -> None:
    dm = pytest.importorskip("datumaro")
    dataset = dm.Dataset.import_from(str(run), "yolo")  # obj.data + train.txt + labels/ + images.meta
    assert len(dataset) == len(_coco(run)["images"])
    # labels/*.txt hold the reliable boxes only, without scores; 6-decimal normalised values of a 96 px image
    _assert_same(_ours_by_stem(_coco(run), reliable_only=True), _datumaro_boxes(dataset), box_tol=0.02, scores=False)


def _ls_boxes(tasks: list[dict], key: str, stems: list[str]) -> dict[str, list[tuple[str, list[float], float]]]:
    """stem -> sorted [(label, [x, y, w, h] in pixels, score)] of Label Studio tasks (in image order)."""
    out = {}
    for stem, task in zip(stems, tasks):
        boxes = []
        for r in task[key][0]["result"]:
            v, w, h = r["value"], r["original_width"], r["original_height"]
            box = [v["x"] * w / 100, v["y"] * h / 100, v["width"] * w / 100, v["height"] * h / 100]
            boxes.append((v["rectanglelabels"][0], box, r.get("score")))
        out[stem] = sorted(boxes, key=lambda t: (t[0], t[1]))
    return out


def test_label_studio_converter_and_our_predictions_agree(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("label_studio_converter")
    from label_studio_converter.imports.coco import convert_coco_to_ls

    coco = _coco(run)
    stems = [Path(im["file_name"]).stem for im in coco["images"]]
    convert_coco_to_ls(str(run / "pseudo_labels.json"), str(tmp_path / "ls.json"), out_type="predictions")
    converted = json.loads((tmp_path / "ls.json").read_text())
    ours = json.loads((run / "labelstudio_tasks.json").read_text())
    assert len(converted) == len(ours) == len(stems)
    # the converter drops the scores; our predictions keep them and give the same boxes
    _assert_same(_ours_by_stem(coco), _ls_boxes(ours, "predictions", stems), box_tol=1e-6)
    _assert_same(_ls_boxes(converted, "predictions", stems), _ls_boxes(ours, "predictions", stems), box_tol=1e-6,
                 scores=False)
    assert all(r.get("score") is None for t in converted for r in t["predictions"][0]["result"])
    config = (run / "labelstudio_config.xml").read_text()
    assert all(f'<Label value="{c["name"]}"/>' in config for c in coco["categories"])
    result = ours[0]["predictions"][0]["result"]
    assert {(r["from_name"], r["to_name"]) for r in result} <= {("label", "image")}
    assert 'name="label" toName="image"' in config and ours[0]["data"]["image"].startswith("/data/local-files/?d=")


def test_label_studio_converter_reads_our_yolo_labels(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("label_studio_converter")
    from label_studio_converter.imports.yolo import convert_yolo_to_ls

    coco = _coco(run)
    (tmp_path / "images").mkdir()
    for im in coco["images"]:  # the converter's layout: images/, labels/ and classes.txt side by side
        (tmp_path / "images" / im["file_name"]).symlink_to(im["path"])
    shutil.copytree(run / "labels", tmp_path / "labels")
    shutil.copy(run / "obj.names", tmp_path / "classes.txt")
    convert_yolo_to_ls(str(tmp_path), str(tmp_path / "ls.json"), out_type="predictions")
    tasks = json.loads((tmp_path / "ls.json").read_text())
    stems = [Path(t["data"]["image"]).stem for t in tasks]
    theirs = _ls_boxes(tasks, "predictions", stems)
    ours = {s: v for s, v in _ours_by_stem(coco, reliable_only=True).items() if s in theirs}
    assert len(theirs) == len(coco["images"])
    _assert_same(ours, theirs, box_tol=0.02, scores=False)


def test_format_option() -> None:
    assert parse_formats("coco") == ("coco",)
    assert parse_formats("labelstudio, coco") == ("coco", "labelstudio")
    assert parse_formats("all") == ("coco", "yolo", "labelstudio")
    with pytest.raises(ConfigError, match="--format 'cvat'"):
        parse_formats("cvat")
    result = CliRunner().invoke(app, ["pseudo", "missing_folder", "--weights", "missing.pt", "--format", "xml"])
    text = result.output.strip()
    assert result.exit_code == 1 and text.startswith("ERROR") and "--format 'xml'" in " ".join(text.split())
