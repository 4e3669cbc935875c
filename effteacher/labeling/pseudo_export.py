"""`effteacher pseudo`: the teacher's labels for unlabeled images, split reliable / uncertain as in training, for review.

Writes under ``runs/pseudo/expN/``: ``labels/<stem>.txt`` (YOLO, reliable boxes), ``review.csv`` (images most
worth a look first) and the ``--format`` files for labeling tools (labeling/tool_formats.py; by default
``pseudo_labels.json``: COCO, reliable and uncertain boxes with scores).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.markup import escape

from effteacher.config.commands import PseudoOptions, with_overrides
from effteacher.config import SSODConfig
from effteacher.data.sources import find_sources
from effteacher.data.spec import img2label_path, load_spec, resolve_images
from effteacher.errors import ConfigError, DatasetError, EffTeacherError
from effteacher.labeling.scores import image_uncertainty
from effteacher.labeling.teacher_pass import CLS, OBJ, PROBS, SCORE, PassConfig, load_model, teacher_pass
from effteacher.labeling.tool_formats import parse_formats, write_formats
from effteacher.utils import dist
from effteacher.utils.console import info
from effteacher.utils.files import atomic_write_text, run_folder, unique_name

RELIABLE, UNCERTAIN, BELOW = 2, 1, 0
STATUS_NAME = {RELIABLE: "reliable", UNCERTAIN: "uncertain"}
REVIEW_COLUMNS = ["rank", "image", "label_file", "n_reliable", "n_uncertain", "uncertainty", "entropy", "margin",
                  "objectness", "min_reliable_score", "max_uncertain_score"]


@dataclass(frozen=True)
class PseudoRule:
    """Per-class thresholds: score >= tau2 reliable, tau1 < score < tau2 uncertain (docs/method.md section 3).

    score: "joint" (objectness x class probability) or "obj" (objectness alone), as the training's
    ``ssod.score``; source: where the thresholds came from, for the user.
    """

    tau1: np.ndarray
    tau2: np.ndarray
    score: str = "joint"
    source: str = ""


def rule_from_checkpoint(ckpt: dict[str, Any], conf: float | None = None) -> PseudoRule:
    """The thresholds training used: the per-class Epoch Adaptor / GMM values stored with the teacher
    (``pseudo_thresholds``), else the run's fixed ``ssod.tau1/tau2``, else the defaults.

    conf: the reliable threshold for every class instead of tau2 (tau1 is lowered to it if above).
    """
    nc = int(ckpt["model"]["nc"])
    ssod = dict((ckpt.get("args") or {}).get("ssod") or {})
    base = SSODConfig()
    score = str(ssod.get("score", base.score))
    stored = ckpt.get("pseudo_thresholds")
    if stored is not None:
        tau1 = np.asarray(stored["tau1"], np.float64).reshape(-1)
        tau2 = np.asarray(stored["tau2"], np.float64).reshape(-1)
        source = f"per-class {stored.get('kind', '')} thresholds stored with the teacher".replace("  ", " ")
    else:
        tau1 = np.full(nc, float(ssod.get("tau1", base.tau1)))
        tau2 = np.full(nc, float(ssod.get("tau2", base.tau2)))
        source = "the run's fixed ssod.tau1/tau2" if ssod else "the default ssod.tau1/tau2"
    if len(tau1) != nc or len(tau2) != nc:
        raise ConfigError(f"checkpoint thresholds are for {len(tau1)} classes but the model has {nc}")
    if conf is not None:
        if not 0 < conf <= 1:
            raise ConfigError(f"--conf {conf} must be in (0, 1]")
        tau2 = np.full(nc, float(conf))
        tau1 = np.minimum(tau1, tau2)
        source = f"--conf {conf:g} (uncertain above the training tau1)"
    return PseudoRule(tau1=tau1, tau2=tau2, score=score, source=source)


def box_status(dets: np.ndarray, rule: PseudoRule) -> np.ndarray:
    """(n, >= 7) detections ``x1 y1 x2 y2 score cls obj ...`` -> (n,) RELIABLE / UNCERTAIN / BELOW by class thresholds."""
    if len(dets) == 0:
        return np.zeros(0, np.int64)
    s = dets[:, OBJ] if rule.score == "obj" else dets[:, SCORE]
    c = dets[:, CLS].astype(np.int64)
    t1, t2 = rule.tau1[c], rule.tau2[c]
    return np.where(s >= t2, RELIABLE, np.where(s > t1, UNCERTAIN, BELOW)).astype(np.int64)


def yolo_lines(dets: np.ndarray, shape: tuple[int, int]) -> list[str]:
    """``cls cx cy w h`` lines (normalised by the original (h, w)) for detections (n, >= 6) in pixels."""
    h, w = shape
    out = []
    for x1, y1, x2, y2, _, c in dets[:, :6].tolist():
        bw, bh = (x2 - x1) / w, (y2 - y1) / h
        if bw <= 0 or bh <= 0:
            continue
        out.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {bw:.6f} {bh:.6f}")
    return out


def coco_document(images: list[dict[str, Any]], annotations: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """A COCO detection file: category ids are class index + 1 (names kept), annotations carry ``score`` and
    ``attributes.pseudo`` (reliable / uncertain), which CVAT keeps as an attribute when the label defines it."""
    return {
        "info": {"description": "effteacher pseudo labels (reliable and uncertain) for review"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": str(n), "supercategory": ""} for c, n in enumerate(names)],
    }


def resolve_source(source: str) -> list[Path]:
    """SOURCE: a dataset YAML (its ``unlabeled`` images), or an image file, folder, glob or .txt list."""
    s = str(source)
    if s.lower().endswith((".yaml", ".yml")) or s in ("sample", "sample-large", "demo"):
        spec = load_spec(s)
        if not spec.unlabeled:
            raise DatasetError(f"{spec.yaml_path}: no 'unlabeled' entry; add unlabeled: [folder/] to the YAML or pass "
                               "a folder, glob or .txt list of images")
        files = resolve_images(spec.unlabeled)
        if not files:
            raise DatasetError(f"{spec.yaml_path}: the 'unlabeled' sources hold no image")
        return files
    return find_sources(s)


def check_no_overwrite(images: Sequence[Path], targets: Sequence[Path]) -> None:
    """Refuse --save-to-dataset when any label file already exists, or two images would share one (nothing is written)."""
    first: dict[Path, Path] = {}
    for img, t in zip(images, targets):
        if t in first:
            raise EffTeacherError(f"{first[t]} and {img} would both be labeled in {t}: rename one, or run without "
                                  "--save-to-dataset")
        first[t] = img
    existing = [p for p in targets if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise EffTeacherError(
            f"{existing[0]} already exists{more}: --save-to-dataset never overwrites a label file. Move the existing "
            "labels away, or run without --save-to-dataset (labels then go to runs/pseudo/expN/labels)")


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; an existing file (even one created since the check) is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x") as f:
            f.write(text)
    except FileExistsError:
        raise EffTeacherError(f"{path} appeared while writing: --save-to-dataset never overwrites a label file; "
                              "the labels written before it are listed in review.csv") from None


def run_pseudo(source: str, weights: str | Path, *, options: PseudoOptions | None = None,
               **overrides: Any) -> Path:
    """`effteacher pseudo`: label SOURCE with the model at ``weights``; returns the output folder."""
    o = with_overrides(PseudoOptions, options, overrides)
    formats = parse_formats(o.format)
    files = resolve_source(source)
    if o.save_to_dataset:
        check_no_overwrite(files, [img2label_path(f) for f in files])
    model, ckpt = load_model(weights, dist.select_device(o.device, None))
    rule = rule_from_checkpoint(ckpt, o.conf)
    names = [str(n) for n in ckpt["model"]["names"]]
    ssod = dict((ckpt.get("args") or {}).get("ssod") or {})
    floor = float(min(0.05, rule.tau1.min()))  # the training teacher's NMS floor
    cfg = PassConfig(imgsz=int(o.imgsz or ckpt["model"]["imgsz"]), conf=floor,
                     iou=float(o.iou if o.iou is not None else ssod.get("nms_iou", 0.65)),
                     agnostic=bool(ssod.get("agnostic_nms", False)), max_det=o.max_det, flip=o.flip, batch=o.batch,
                     workers=o.workers)
    with run_folder(o.project, o.name, o.exist_ok) as out:
        (out / "labels").mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        rows: list[dict[str, Any]] = []
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        for pred in teacher_pass(model, [str(f) for f in files], cfg):
            status = box_status(pred.dets, rule)
            keep = status > BELOW
            d, st = pred.dets[keep], status[keep]
            rel = d[st == RELIABLE]
            out_name = unique_name(Path(pred.path).name, used)
            text = "".join(line + "\n" for line in yolo_lines(rel, pred.shape))
            label_file = out / "labels" / f"{Path(out_name).stem}.txt"
            atomic_write_text(label_file, text)
            if o.save_to_dataset:
                label_file = img2label_path(pred.path)
                _write_new(label_file, text)
            img_id = len(images) + 1
            h, w = pred.shape
            images.append({"id": img_id, "file_name": out_name, "width": int(w), "height": int(h), "path": pred.path})
            for det, s in zip(d.tolist(), st.tolist()):
                x1, y1, x2, y2 = det[:4]
                anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(det[5]) + 1,
                             "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                             "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0, "segmentation": [],
                             "score": round(det[SCORE], 5), "attributes": {"pseudo": STATUS_NAME[s]}})
            u = image_uncertainty(d[:, PROBS:], d[:, OBJ])
            unc = d[st == UNCERTAIN]
            rows.append({"image": pred.path, "label_file": str(label_file), "n_reliable": int((st == RELIABLE).sum()),
                         "n_uncertain": int((st == UNCERTAIN).sum()), **{k: round(v, 5) for k, v in u.items()},
                         "min_reliable_score": round(float(rel[:, SCORE].min()), 5) if len(rel) else "",
                         "max_uncertain_score": round(float(unc[:, SCORE].max()), 5) if len(unc) else ""})
        if not rows:
            raise DatasetError(f"none of the {len(files)} images of '{source}' could be read")
        rows.sort(key=lambda r: (-r["uncertainty"], -r["n_uncertain"], r["image"]))
        with open(out / "review.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=REVIEW_COLUMNS)
            wr.writeheader()
            for i, r in enumerate(rows, 1):
                wr.writerow({"rank": i, **{k: r[k] for k in REVIEW_COLUMNS if k != "rank"}})
        tool_files = write_formats(out, formats, coco_document(images, anns, names), names, f"effteacher {weights}")
        n_rel, n_unc = sum(r["n_reliable"] for r in rows), sum(r["n_uncertain"] for r in rows)
        also = " and ".join(f for f in ("coco", "labelstudio") if f in formats) or "no --format file"
        info(escape(f"{len(rows)} images: {n_rel} reliable boxes (in labels/*.txt), {n_unc} uncertain (only in "
                    f"the {also} output); thresholds: {rule.source}, tau2 mean {rule.tau2.mean():.3f}, "
                    f"tau1 mean {rule.tau1.mean():.3f}{', flip ensemble' if o.flip else ''}"))
        where = f"; labels also written beside the images ({len(rows)} new files)" if o.save_to_dataset else ""
        listing = ", ".join(["labels/", *tool_files, "review.csv: look at the first rows first"])
        info(escape(f"Results saved to {out} ({listing}){where}"))
        return out
