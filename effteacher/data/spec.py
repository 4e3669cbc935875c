"""The dataset YAML: parse it into a DatasetSpec, resolve image sources, map images to label files."""

from __future__ import annotations

import difflib
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effteacher.data.sample import BUILTIN, ensure_sample
from effteacher.errors import DatasetError
from effteacher.utils.files import default_cache_dir
from effteacher.utils.yaml_io import read_yaml

IMG_FORMATS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ALLOWED_KEYS = ("path", "train", "val", "test", "unlabeled", "names", "nc", "generate", "download", "defaults")
SPLIT_KEYS = ("train", "val", "test", "unlabeled")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset YAML. Sources are absolute: dirs, .txt lists, image files or a COCO .json."""

    yaml_path: Path | None
    root: Path
    train: list[Path]
    val: list[Path]
    test: list[Path]
    unlabeled: list[Path]
    names: list[str]

    @property
    def nc(self) -> int:
        return len(self.names)


def img2label_path(path: str | Path) -> Path:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt`` (the LAST ``/images/`` is replaced)."""
    s = str(path)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    i = s.rfind(sa)
    if i >= 0:
        s = s[:i] + sb + s[i + len(sa):]
    return Path(os.path.splitext(s)[0] + ".txt")


def is_image(path: str | Path) -> bool:
    return str(path).lower().endswith(IMG_FORMATS)


def is_coco_json(path: str | Path) -> bool:
    return str(path).lower().endswith(".json")


def _images_in_dir(d: Path) -> list[Path]:
    return [Path(r) / f for r, _, files in os.walk(d) for f in files if is_image(f)]


def read_list(txt: Path) -> list[Path]:
    """Lines of an image list; relative lines resolve against the list's folder."""
    try:
        lines = txt.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{txt}: cannot read image list ({e}); make it a UTF-8 text file, one path a line") from e
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else txt.parent / p)
    return out


def resolve_images(sources: list[Path]) -> list[Path]:
    """Image files of dirs (recursive), .txt lists, globs, files or COCO .json sources: absolute, sorted, unique."""
    found: list[Path] = []
    for src in sources:
        src = Path(src).expanduser()
        if not src.exists() and any(c in str(src) for c in "*?["):
            found += [Path(p) for p in glob.glob(str(src), recursive=True) if is_image(p)]
        elif src.is_dir():
            found += _images_in_dir(src)
        elif src.suffix.lower() == ".txt" and src.is_file():
            for p in read_list(src):
                found += _images_in_dir(p) if p.is_dir() else [p] if is_image(p) else []
        elif is_coco_json(src) and src.is_file():
            found += [p for p, _ in coco_images(src)]
        elif src.is_file():
            if is_image(src):
                found.append(src)
        else:
            raise DatasetError(f"image source '{src}' does not exist; fix the path in the dataset YAML")
    return sorted({Path(os.path.abspath(p)) for p in found})


def _coco_image_path(json_path: Path, file_name: str) -> Path:
    """COCO ``file_name``: tried against the json's folder, its ``images/`` sibling and ``../images/``."""
    base = json_path.parent
    cands = [base / file_name, base / "images" / file_name, base.parent / "images" / file_name]
    for c in cands:
        if c.exists():
            return c
    return cands[0]


def _load_coco(json_path: Path) -> dict[str, Any]:
    try:
        d = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{json_path}: not a readable COCO JSON ({e}); check the file") from e
    if not isinstance(d, dict) or "images" not in d or "categories" not in d:
        raise DatasetError(f"{json_path}: not a COCO annotation file (needs 'images' and 'categories')")
    return d


def coco_images(json_path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(image path, image entry) for every image of a COCO JSON."""
    d = _load_coco(json_path)
    return [(_coco_image_path(json_path, str(im["file_name"])), im) for im in d["images"]]


def coco_names(json_path: Path) -> list[str]:
    """Category names sorted by category id (the class order used for a COCO JSON without YAML names)."""
    return [str(c["name"]) for c in sorted(_load_coco(json_path)["categories"], key=lambda c: c["id"])]


def read_coco(json_path: Path, names: list[str]) -> list[tuple[Path, tuple[int, int], np.ndarray, list[str]]]:
    """COCO JSON -> per image (path, (h, w), rows (n,5) [cls, cx, cy, w, h] norm, row tags for messages).

    Categories map to ``names`` by name when every category name is in ``names``, otherwise by the
    order of their ids. Crowd annotations are skipped (as pycocotools-trained YOLO converters do).
    """
    d = _load_coco(json_path)
    cats = sorted(d["categories"], key=lambda c: c["id"])
    if all(str(c["name"]) in names for c in cats):
        cmap = {c["id"]: names.index(str(c["name"])) for c in cats}
    elif len(cats) <= len(names):
        cmap = {c["id"]: i for i, c in enumerate(cats)}
    else:
        raise DatasetError(f"{json_path}: {len(cats)} categories but names has {len(names)}; "
                           "list every category in the YAML's names")
    by_img: dict[Any, list[dict[str, Any]]] = {}
    for a in d.get("annotations", []):
        if not a.get("iscrowd", 0):
            by_img.setdefault(a["image_id"], []).append(a)
    out = []
    for im in d["images"]:
        h, w = int(im.get("height", 0)), int(im.get("width", 0))
        anns = by_img.get(im["id"], [])
        rows = np.zeros((len(anns), 5), dtype=np.float64)
        tags = []
        if anns:
            bb = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            rows[:, 0] = [cmap.get(a["category_id"], -1) for a in anns]
            rows[:, 1] = (bb[:, 0] + bb[:, 2] / 2) / max(w, 1)
            rows[:, 2] = (bb[:, 1] + bb[:, 3] / 2) / max(h, 1)
            rows[:, 3] = bb[:, 2] / max(w, 1)
            rows[:, 4] = bb[:, 3] / max(h, 1)
            tags = [f"annotation id {a.get('id')}" for a in anns]
        out.append((_coco_image_path(json_path, str(im["file_name"])), (h, w), rows, tags))
    return out


def _expand(p: str) -> str:
    """``$EFFTEACHER_CACHE`` (defaulting to the cache dir), other env vars and ``~``."""
    cache = str(default_cache_dir())
    p = p.replace("${EFFTEACHER_CACHE}", cache).replace("$EFFTEACHER_CACHE", cache)
    return os.path.expanduser(os.path.expandvars(p))


def _parse_names(d: dict[str, Any], yaml_path: Path | None) -> list[str] | None:
    names, nc = d.get("names"), d.get("nc")
    if names is None and nc is None:
        return None
    if names is None:
        if not isinstance(nc, int) or nc < 1:
            raise DatasetError(f"{yaml_path}: nc must be a positive integer, got {nc!r}")
        return [str(i) for i in range(nc)]
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{yaml_path}: names keys must be class indices 0..nc-1") from e
        if keys != list(range(len(keys))):
            raise DatasetError(f"{yaml_path}: names keys must be 0..{len(keys) - 1} without gaps, got {keys}")
        names = [str(names.get(k, names.get(str(k)))) for k in keys]
    elif isinstance(names, (list, tuple)):
        names = [str(n) for n in names]
    else:
        raise DatasetError(f"{yaml_path}: names must be a dict {{0: cat, ...}} or a list, got {type(names).__name__}")
    if not names:
        raise DatasetError(f"{yaml_path}: names is empty; list at least one class")
    if nc is not None and nc != len(names):
        raise DatasetError(f"{yaml_path}: nc {nc} != {len(names)} names; remove nc or fix names")
    return names


def _has_image(src: Path) -> bool:
    if src.is_dir():
        return any(is_image(f) for _, _, files in os.walk(src) for f in files)
    return bool(resolve_images([src]))


def load_spec(data: str | Path) -> DatasetSpec:
    """Parse a dataset YAML (or ``'sample'``, generated on first use) into absolute sources and names."""
    if str(data) in BUILTIN:
        data = ensure_sample(cfg=BUILTIN[str(data)])
    yaml_path = Path(data).expanduser()
    if not yaml_path.is_file():
        raise DatasetError(f"dataset YAML '{data}' not found; pass the path of a dataset YAML "
                           "(path/train/val/names), or 'demo' / 'sample' / 'sample-large' for a bundled generated "
                           "dataset")
    d = read_yaml(yaml_path, DatasetError, "dataset YAML")
    if not isinstance(d, dict):
        raise DatasetError(f"{yaml_path}: must be a mapping with keys path, train, val, names")
    for k in d:
        if k not in ALLOWED_KEYS:
            near = difflib.get_close_matches(str(k), ALLOWED_KEYS, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else f" Allowed keys: {', '.join(ALLOWED_KEYS)}."
            raise DatasetError(f"{yaml_path}: unknown key '{k}'.{hint}")
    yaml_path = yaml_path.resolve()
    root = Path(_expand(str(d.get("path") or ".")))
    root = root if root.is_absolute() else (yaml_path.parent / root)
    root = Path(os.path.abspath(root))
    if d.get("generate") is not None:
        if d["generate"] not in BUILTIN:
            raise DatasetError(f"{yaml_path}: generate: {d['generate']!r} is unknown; use one of "
                               f"{', '.join(BUILTIN)}")
        ensure_sample(root, BUILTIN[d["generate"]])
    if not root.is_dir():
        how = (" This YAML has a 'download' entry: effteacher never downloads; fetch the data yourself"
               if d.get("download") else " Create it or fix 'path'")
        raise DatasetError(f"{yaml_path}: dataset folder {root} does not exist.{how} (relative paths resolve "
                           "against the YAML's folder).")
    srcs: dict[str, list[Path]] = {}
    for key in SPLIT_KEYS:
        v = d.get(key)
        items = [] if v is None else v if isinstance(v, list) else [v]
        paths = []
        for it in items:
            p = Path(_expand(str(it)))
            p = Path(os.path.abspath(p if p.is_absolute() else root / p))
            if not p.exists() and not any(c in str(p) for c in "*?["):
                raise DatasetError(f"{yaml_path}: {key} source {p} does not exist; fix '{key}' "
                                   f"(relative to path {root})")
            paths.append(p)
        srcs[key] = paths
    if not srcs["train"]:
        raise DatasetError(f"{yaml_path}: no 'train' entry; add train: images/train "
                           "(a folder, .txt list or COCO .json)")
    if not srcs["val"]:
        raise DatasetError(f"{yaml_path}: no 'val' entry; add val: images/val (or reuse the train source)")
    names = _parse_names(d, yaml_path)
    if names is None:
        jsons = [p for p in srcs["train"] if is_coco_json(p)]
        if not jsons:
            raise DatasetError(f"{yaml_path}: no 'names' (or 'nc'); add names: {{0: cat, 1: dog}}")
        names = coco_names(jsons[0])
    if not any(_has_image(p) for p in srcs["train"]):
        raise DatasetError(f"{yaml_path}: train ({', '.join(map(str, srcs['train']))}) holds no image "
                           f"({', '.join(IMG_FORMATS)}); check 'path' and 'train'")
    return DatasetSpec(yaml_path=yaml_path, root=root, train=srcs["train"], val=srcs["val"], test=srcs["test"],
                       unlabeled=srcs["unlabeled"], names=names)
