"""The `check` command: scan every split of a dataset and print a rich report of what is usable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Table

from effteacher.data.dataset import _scan
from effteacher.data.spec import img2label_path, is_coco_json, load_spec, resolve_images
from effteacher.errors import DatasetError
from effteacher.utils.console import console

MAX_MESSAGES = 100
IGNORED_LABEL_FILES = ("classes.txt",)  # written by labelling tools next to the labels, not a label file


def _image_of_label(label: Path) -> Path:
    """``.../labels/a/b.txt`` -> ``.../images/a/b`` (no extension): where the image of a label file would be."""
    s = str(label)
    sa, sb = f"{os.sep}labels{os.sep}", f"{os.sep}images{os.sep}"
    i = s.rfind(sa)
    if i >= 0:
        s = s[:i] + sb + s[i + len(sa):]
    return Path(os.path.splitext(s)[0])


def orphan_labels(sources: list[Path]) -> list[str]:
    """Label files without an image, one message each (sorted): the ``.txt`` files of the ``labels/`` folders
    of ``sources`` (every labeled split together, so splits sharing a folder do not flag each other) that
    no image of the sources maps to. COCO JSON sources have no label files; ``classes.txt`` is ignored.
    """
    plain = [Path(os.path.abspath(s)) for s in sources if not is_coco_json(s)]
    used = {img2label_path(p) for p in resolve_images(plain)}
    walks = {(p.parent, False) for p in used if p.parent.is_dir()}
    for src in plain:
        if src.is_dir():
            folder = img2label_path(src / "x.jpg").parent
            if folder != src and folder.is_dir():
                walks.add((folder, True))
    found = set()
    for folder, recursive in walks:
        found |= {f for f in (folder.rglob("*.txt") if recursive else folder.glob("*.txt")) if f.is_file()}
    out = []
    for f in sorted(found - used):
        if f.name not in IGNORED_LABEL_FILES:
            img = _image_of_label(f)
            out.append(f"{f}: label file without an image (no {img.name}.* image in {img.parent}); add the image "
                       "or delete the label file")
    return out


def run_check(data: str) -> dict[str, Any]:
    """Validate a dataset YAML: per split images/backgrounds/corrupt/bad rows/duplicates/instances, per class
    instances, the unlabeled count, label files without an image, and every problem message (first
    ``MAX_MESSAGES``).

    Returns ``{"splits": {name: ScanResult}, "instances": {split: (nc,) int array}, "orphans": [messages]}``
    when the dataset has no problem. Raises DatasetError after the report when train or val has no usable
    labeled image, or when any problem was found (so `effteacher check` exits 1 and CI can gate on it).
    """
    spec = load_spec(data)
    con = console()
    scans, inst = {}, {}
    for key in ("train", "val", "test"):
        srcs = getattr(spec, key)
        if srcs:
            scans[key] = _scan(srcs, spec.names, None, progress=True, quiet=True)
            recs = scans[key].records
            cls = np.concatenate([r.cls for r in recs] + [np.zeros(0, np.int64)])
            inst[key] = np.bincount(cls, minlength=spec.nc)[: spec.nc]
    if spec.unlabeled:
        scans["unlabeled"] = _scan(spec.unlabeled, None, None, progress=True, quiet=True)

    t = Table(title=f"Dataset {spec.yaml_path} (root {spec.root})")
    for col in ("Split", "Images", "Usable", "Backgrounds", "Corrupt", "Bad rows", "Duplicates", "Instances"):
        t.add_column(col, justify="left" if col == "Split" else "right")
    for key, r in scans.items():
        n_inst = str(int(inst[key].sum())) if key in inst else "-"
        bg = str(r.n_background) if key in inst else "-"
        t.add_row(key, str(r.n_found), str(len(r.records)), bg, str(r.n_corrupt), str(r.n_bad_rows),
                  str(r.n_duplicates), n_inst)
    con.print(t)

    c = Table(title="Instances per class")
    c.add_column("Class")
    for key in inst:
        c.add_column(key, justify="right")
    for i, nm in enumerate(spec.names):
        c.add_row(f"{i} {escape(nm)}", *[str(int(inst[k][i])) for k in inst])
    con.print(c)

    orphans = orphan_labels([s for key in ("train", "val", "test") for s in getattr(spec, key)])
    msgs = [m for r in scans.values() for m in r.messages] + orphans
    for m in msgs[:MAX_MESSAGES]:
        con.print(f"[yellow]WARNING[/yellow] {escape(m)}")
    if len(msgs) > MAX_MESSAGES:
        con.print(f"... and {len(msgs) - MAX_MESSAGES} more problems")
    unl = len(scans["unlabeled"].records) if "unlabeled" in scans else 0
    con.print(f"{len(msgs)} problems ({len(orphans)} label files without an image); {unl} extra unlabeled "
              f"images; train: {scans['train'].summary()}")
    for key in ("train", "val"):
        if key in inst and inst[key].sum() == 0:
            raise DatasetError(f"{spec.yaml_path}: {key} has no usable labeled image ({scans[key].summary()}); "
                               "see the problems above")
    if msgs:
        raise DatasetError(f"{spec.yaml_path}: {len(msgs)} problems (listed above). Training would skip the bad "
                           "images and label rows; fix them for a clean check (exit code 0)")
    return {"splits": scans, "instances": inst, "orphans": orphans}
