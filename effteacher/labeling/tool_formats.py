"""Files that labeling tools import, written by `effteacher pseudo --format`.

- ``coco``: ``pseudo_labels.json``, COCO detection with ``score`` and ``attributes.pseudo`` per box (CVAT "COCO 1.0",
  datumaro's ``coco_instances``).
- ``yolo``: ``obj.names``, ``obj.data`` and ``train.txt`` around ``labels/`` (CVAT "YOLO 1.1", datumaro's ``yolo``),
  and ``images.meta`` (image sizes, so the folder imports without the images beside it).
- ``labelstudio``: ``labelstudio_tasks.json``, Label Studio tasks with the boxes as *predictions* (pre-annotations
  that keep each box's score), and ``labelstudio_config.xml``, the labeling config they are written for.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from effteacher.errors import ConfigError
from effteacher.utils.files import atomic_write_text

FORMATS = ("coco", "yolo", "labelstudio")
COCO_FILE = "pseudo_labels.json"
LS_TASKS, LS_CONFIG = "labelstudio_tasks.json", "labelstudio_config.xml"
LS_FROM, LS_TO = "label", "image"  # the control and object tag names of the config
LS_URL = "/data/local-files/?d="  # Label Studio's local-files route; paths are relative to its document root


def parse_formats(text: str) -> tuple[str, ...]:
    """``--format`` text (``coco``, ``yolo``, ``labelstudio``, comma-separated, or ``all``) -> formats in order."""
    parts = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    if parts == ["all"]:
        return FORMATS
    bad = [p for p in parts if p not in FORMATS]
    if bad or not parts:
        raise ConfigError(f"--format {text!r}: use {', '.join(FORMATS)}, several separated by commas, or all")
    return tuple(f for f in FORMATS if f in parts)


def write_yolo_description(out: Path, images: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    """The YOLO 1.1 files around ``out/labels`` (one ``labels/<stem>.txt`` per image): obj.names, obj.data,
    train.txt (``labels/<file_name>``: the tool takes the folder as the subset's and the label file from the name)
    and images.meta (``<stem> <height> <width>``)."""
    atomic_write_text(out / "obj.names", "".join(f"{n}\n" for n in names))
    atomic_write_text(out / "obj.data", f"classes = {len(names)}\ntrain = train.txt\nnames = obj.names\n"
                                        "backup = backup/\n")
    atomic_write_text(out / "train.txt", "".join(f"labels/{im['file_name']}\n" for im in images))
    atomic_write_text(out / "images.meta", "".join(
        f"{shlex.quote(Path(im['file_name']).stem)} {im['height']} {im['width']}\n" for im in images))


def labelstudio_config(names: Sequence[str]) -> str:
    """A Label Studio labeling config: an image and one rectangle label per class."""
    labels = "".join(f"    <Label value={quoteattr(str(n))}/>\n" for n in names)
    return (f'<View>\n  <Image name="{LS_TO}" value="$image"/>\n  <RectangleLabels name="{LS_FROM}" toName="{LS_TO}">\n'
            f"{labels}  </RectangleLabels>\n</View>\n")


def labelstudio_tasks(coco: dict[str, Any], model_version: str) -> list[dict[str, Any]]:
    """One Label Studio task per image of a COCO document: ``data.image`` as a local-files URL of the image path,
    and one prediction whose results are its boxes (percent of the image, with ``score``); the prediction's score
    is the lowest box score (Label Studio sorts tasks by it)."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    tasks = []
    for im in coco["images"]:
        w, h = im["width"], im["height"]
        results = []
        for ann in by_image[im["id"]]:
            x, y, bw, bh = ann["bbox"]
            results.append({
                "id": f"{im['id']}_{ann['id']}", "type": "rectanglelabels", "from_name": LS_FROM, "to_name": LS_TO,
                "original_width": w, "original_height": h, "image_rotation": 0, "score": ann["score"],
                "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 100 * bw / w, "height": 100 * bh / h,
                          "rotation": 0, "rectanglelabels": [names[ann["category_id"]]]},
            })
        score = min((r["score"] for r in results), default=1.0)
        image = LS_URL + quote(str(im.get("path", im["file_name"])).lstrip("/"))
        tasks.append({"data": {LS_TO: image},
                      "predictions": [{"model_version": model_version, "score": score, "result": results}]})
    return tasks


def write_formats(out: Path, formats: Sequence[str], coco: dict[str, Any], names: Sequence[str],
                  model_version: str) -> list[str]:
    """Write the tool files of ``formats`` into ``out`` (``labels/`` already written); returns their names."""
    written = []
    if "coco" in formats:
        atomic_write_text(out / COCO_FILE, json.dumps(coco))
        written.append(COCO_FILE)
    if "yolo" in formats:
        write_yolo_description(out, coco["images"], names)
        written.append("obj.data/obj.names/train.txt")
    if "labelstudio" in formats:
        atomic_write_text(out / LS_TASKS, json.dumps(labelstudio_tasks(coco, model_version)))
        atomic_write_text(out / LS_CONFIG, labelstudio_config(names))
        written.append(f"{LS_TASKS} (+ {LS_CONFIG})")
    return written
