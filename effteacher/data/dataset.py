"""Scan images and YOLO/COCO labels into validated ImageRecords, with a pickle-free incremental cache."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from effteacher.data.label_cache import LabelEntry, cache_locations, file_stamp, load_cache, save_cache
from effteacher.data.records import ImageRecord
from effteacher.data.spec import img2label_path, is_coco_json, read_coco, resolve_images
from effteacher.errors import DatasetError
from effteacher.utils.boxes import xywh2xyxy, xyxy2xywh
from effteacher.utils.console import console, info, warn

CACHE_VERSION = "2"  # 2: bad label rows are skipped, the image kept (entries hold nbad)
COORD_TOL = 1e-3  # coordinates up to this far outside 0-1 are clipped, further is an error
MIN_IMAGE_SIZE = 10  # pixels, as YOLOv5
MAX_WARNINGS = 10  # printed by a scan; all of them are in ScanResult.messages


@dataclass
class ScanResult:
    """Usable records and what was wrong with the rest. ``messages``: one per problem, ``file:line: what``."""

    records: list[ImageRecord]
    n_found: int = 0
    n_background: int = 0
    n_corrupt: int = 0
    n_duplicates: int = 0
    n_bad_rows: int = 0  # label rows skipped (their image kept when it has a valid row)
    messages: list[str] = field(default_factory=list)
    n_cached: int = 0  # entries reused from the cache
    cache_path: Path | None = None  # where the cache was written (None: nowhere writable)

    def summary(self) -> str:
        return (f"{self.n_found} images, {self.n_background} backgrounds, {self.n_corrupt} corrupt, "
                f"{self.n_bad_rows} bad rows skipped, {self.n_duplicates} duplicates removed")


def _bad(msg: str, nbad: int = 0) -> LabelEntry:
    return LabelEntry((0, 0), np.zeros(0, np.int64), np.zeros((0, 4), np.float32), False, 0, [msg], nbad)


def image_shape(path: str | Path, min_size: int = MIN_IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) of an image after EXIF rotation, reading headers only (a JPEG without its end marker is decoded
    to find truncation); ValueError if corrupt, truncated or below ``min_size`` pixels."""
    try:
        with Image.open(path) as im:
            im.verify()  # structure/CRC check, no full decode
        with Image.open(path) as im:
            w, h = im.size
            fmt = im.format
            orient = im.getexif().get(0x0112, 1) if fmt in ("JPEG", "TIFF", "WEBP", "PNG") else 1
    except FileNotFoundError as e:
        raise ValueError("not found (the file does not exist)") from e
    except Exception as e:  # PIL raises many types for broken files
        raise ValueError(f"corrupt image ({type(e).__name__}: {e})") from e
    if orient in (5, 6, 7, 8):
        h, w = w, h
    if min(h, w) < min_size:
        raise ValueError(f"image size {w}x{h} < {min_size} px")
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(-2, os.SEEK_END)
            end = f.read()
        if end != b"\xff\xd9":  # missing end marker: decode fully, a truncated file fails here
            try:
                with Image.open(path) as im:
                    im.load()
            except Exception as e:
                raise ValueError(f"truncated JPEG ({e})") from e
    return h, w


def _parse_label_text(text: str, where: str) -> tuple[np.ndarray, list[str], list[str]]:
    """YOLO label text -> rows (n, 5) [cls, cx, cy, w, h], per-row tags ``file:line``, errors.

    Rows of ``cls x1 y1 x2 y2 ... `` (segments, >= 3 points) become their bounding box.
    """
    rows, tags, errors = [], [], []
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        tag = f"{where}:{i}"
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            errors.append(f"{tag}: non-numeric value in '{line.strip()}'")
            continue
        if len(vals) == 5:
            rows.append(vals)
        elif len(vals) >= 7 and len(vals) % 2 == 1:
            xy = np.array(vals[1:]).reshape(-1, 2)
            lo, hi = xy.min(0), xy.max(0)
            rows.append([vals[0], *((lo + hi) / 2), *(hi - lo)])
        else:
            errors.append(f"{tag}: {len(vals)} columns, expected 5 (cls cx cy w h)")
            continue
        tags.append(tag)
    return np.array(rows, dtype=np.float64).reshape(-1, 5), tags, errors


def validate_rows(rows: np.ndarray, tags: list[str], nc: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check label rows (n, 5) [cls, cx, cy, w, h] norm, vectorised.

    Returns (cls (n,) int64, boxes (n, 4) float32 clipped to the image, errors). Errors are per bad
    row: non-finite, class not an integer in [0, nc), coordinates beyond ``COORD_TOL`` outside 0-1,
    zero or negative size. Tiny excess and boxes sticking out of the image are clipped.
    """
    cls, boxes, _, errors = check_rows(rows, tags, nc)
    return cls, boxes, errors


def check_rows(rows: np.ndarray, tags: list[str], nc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``validate_rows`` plus the (n,) bool mask of the bad rows."""
    cls, xywh = rows[:, 0], rows[:, 1:]
    finite = np.isfinite(rows).all(1)
    checks = [
        (~finite, lambda i: "non-finite value"),
        (finite & (cls != np.round(cls)), lambda i: f"class {cls[i]:g} is not an integer"),
        (finite & (cls < 0), lambda i: f"negative class {cls[i]:g}"),
        (finite & (cls >= nc), lambda i: f"class {int(cls[i])} >= nc {nc}"),
        (finite & (xywh < -COORD_TOL).any(1), lambda i: "negative coordinates"),
        (finite & (xywh > 1 + COORD_TOL).any(1),
         lambda i: "non-normalized coordinates (> 1); labels must be cx cy w h divided by image width/height"),
        (finite & (xywh[:, 2:] <= 0).any(1), lambda i: "zero or negative box size"),
    ]
    bad = np.zeros(len(rows), bool)
    errors = []
    for mask, what in checks:
        new = np.flatnonzero(mask & ~bad)
        errors += [f"{tags[i]}: {what(i)}" for i in new]
        bad |= mask
    xyxy = np.clip(xywh2xyxy(np.clip(xywh, 0.0, 1.0)), 0.0, 1.0)
    cls = np.where(finite, cls, -1).astype(np.int64)
    return cls, xyxy2xywh(xyxy).astype(np.float32), bad, sorted(errors, key=_line_order)


def _line_order(msg: str) -> tuple[str, int]:
    head, _, rest = msg.partition(": ")
    f, _, ln = head.rpartition(":")
    return (f, int(ln)) if ln.isdigit() else (head, 0)


def _dedupe(cls: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop exact duplicate rows, keeping the first of each in file order."""
    if len(cls) < 2:
        return cls, boxes, 0
    rows = np.concatenate([cls[:, None].astype(np.float64), boxes.astype(np.float64)], 1)
    _, idx = np.unique(rows, axis=0, return_index=True)
    keep = np.sort(idx)
    return cls[keep], boxes[keep], len(cls) - len(keep)


def _finish(path: str, shape: tuple[int, int], rows: np.ndarray, tags: list[str], errors: list[str],
            nc: int, where: str) -> LabelEntry:
    """Validate parsed rows of one image into an entry.

    A bad row is skipped and reported (file:line), the image keeps its valid rows: one typo in a label file
    should not cost every good box of the image, which matters most when labels are few (YOLOv5 drops the
    whole image instead). An image whose every row is bad is skipped, never trained as a background.
    """
    cls, boxes, bad, verr = check_rows(rows, tags, nc)
    errors = sorted(errors + verr, key=_line_order)
    nbad = len(errors)
    if errors and not (~bad).any():
        msgs = [f"{e}; image {path} skipped (no valid row left), fix or delete the row" for e in errors]
        return LabelEntry((0, 0), np.zeros(0, np.int64), np.zeros((0, 4), np.float32), False, 0, msgs, nbad)
    cls, boxes = cls[~bad], boxes[~bad]
    msgs = [f"{e}; row skipped (the image's other boxes are kept), fix or delete the row" for e in errors]
    cls, boxes, ndup = _dedupe(cls, boxes)
    if ndup:
        msgs.append(f"{where}: {ndup} duplicate rows removed (file left unchanged; delete them to silence this)")
    return LabelEntry(shape, cls, boxes, True, ndup, msgs, nbad)


def _scan_yolo(img: str, nc: int | None) -> LabelEntry:
    """One image and (if ``nc`` is not None) its YOLO label file."""
    try:
        shape = image_shape(img)
    except (ValueError, OSError) as e:
        return _bad(f"{img}: {e}; image skipped, re-save or delete it")
    empty = LabelEntry(shape, np.zeros(0, np.int64), np.zeros((0, 4), np.float32), True)
    if nc is None:
        return empty
    lbl = img2label_path(img)
    try:
        text = lbl.read_text()
    except FileNotFoundError:
        return empty
    except (OSError, UnicodeDecodeError) as e:
        return _bad(f"{lbl}: unreadable label file ({e}); image {img} skipped, fix the file")
    rows, tags, errors = _parse_label_text(text, str(lbl))
    return _finish(img, shape, rows, tags, errors, nc, str(lbl))


def _scan_coco(img: str, coco: tuple[tuple[int, int], np.ndarray, list[str]], json_path: Path, nc: int) -> LabelEntry:
    """One image of a COCO JSON: the image is checked, its annotations validated like YOLO rows."""
    (jh, jw), rows, tags = coco
    if not os.path.exists(img):
        return _bad(f"{json_path}: image {img} not found (looked beside the json, in images/ and ../images/)")
    try:
        shape = image_shape(img)
    except (ValueError, OSError) as e:
        return _bad(f"{img}: {e}; image skipped, re-save or delete it")
    if (jh, jw) != shape:
        return _bad(f"{json_path}: {img} is {shape[1]}x{shape[0]} but the json says {jw}x{jh}; fix the json")
    tags = [f"{json_path}: {Path(img).name} {t}" for t in tags]
    return _finish(img, shape, rows, tags, [], nc, f"{json_path}: {Path(img).name}")


def _run(items: list[str], fn, desc: str, progress: bool) -> list[LabelEntry]:
    """Map ``fn`` over items in a thread pool, with a rich progress bar."""
    if not items:
        return []
    workers = min(8, (os.cpu_count() or 1) * 2, len(items))
    with ThreadPoolExecutor(workers) as ex:
        if not progress:
            return list(ex.map(fn, items))


        out = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console(stderr=True), transient=True) as bar:
            task = bar.add_task(desc, total=len(items))
            for e in ex.map(fn, items, chunksize=16):
                out.append(e)
                bar.advance(task)
        return out


def _scan(sources: list[Path], names: list[str] | None, cache_dir: Path | None, progress: bool,
          quiet: bool = False) -> ScanResult:
    nc = None if names is None else len(names)
    mode = "labeled" if names is not None else "unlabeled"
    sources = [Path(s) for s in sources]
    coco: dict[str, tuple[Path, tuple]] = {}
    plain = [s for s in sources if not is_coco_json(s)]
    for js in [s for s in sources if is_coco_json(s)]:
        for p, shape, rows, tags in read_coco(js, names or []):
            coco[os.path.abspath(p)] = (js, (shape, rows, tags))
    paths = sorted(set(str(p) for p in resolve_images(plain)) | set(coco))
    res = ScanResult(records=[], n_found=len(paths))
    if not paths:
        return res
    label_of = {p: (coco[p][0] if p in coco else img2label_path(p)) for p in paths} if nc is not None else {}
    stamps = [file_stamp(p, label_of[p]) if nc is not None else file_stamp(p) for p in paths]
    meta = json.dumps({"v": CACHE_VERSION, "mode": mode, "names": names, "tol": COORD_TOL})
    first = label_of[paths[0]] if nc is not None else Path(paths[0])
    locs = cache_locations(Path(first), mode, Path(cache_dir) if cache_dir else None)
    cached = load_cache(locs, meta)
    entries: list[LabelEntry | None] = [None] * len(paths)
    todo = []
    for i, (p, s) in enumerate(zip(paths, stamps)):
        hit = cached.get(p)
        if hit is not None and hit[0] == s:
            entries[i] = hit[1]
        else:
            todo.append(i)
    res.n_cached = len(paths) - len(todo)

    def one(i: int) -> LabelEntry:
        p = paths[i]
        if p in coco:
            js, c = coco[p]
            return _scan_coco(p, c, js, nc or 0)
        return _scan_yolo(p, nc)

    where = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
    for i, e in zip(todo, _run(todo, one, f"Scanning {where}", progress)):
        entries[i] = e
    done: list[LabelEntry] = [e for e in entries if e is not None]
    if todo or not cached:
        res.cache_path = save_cache(locs, meta, paths, stamps, done)
    else:
        res.cache_path = next((loc for loc in locs if loc.exists()), None)
    for p, e in zip(paths, done):
        res.messages += e.msgs
        res.n_duplicates += e.ndup
        res.n_bad_rows += e.nbad
        if not e.ok:
            res.n_corrupt += 1
            continue
        res.n_background += int(len(e.cls) == 0 and nc is not None)
        res.records.append(ImageRecord(path=p, shape=e.shape, cls=e.cls, boxes=e.boxes))
    if progress and not quiet:
        cache = f" (cache {res.cache_path}, {res.n_cached} reused)" if res.cache_path else ""
        info(f"Scanned {where}: {res.summary()}{cache}")
        for m in res.messages[:MAX_WARNINGS]:
            warn(m)
        if len(res.messages) > MAX_WARNINGS:
            warn(f"... and {len(res.messages) - MAX_WARNINGS} more problems; `effteacher check` lists them all")
    return res


def scan_labeled(sources: list[Path], names: list[str], cache_dir: Path | None = None,
                 progress: bool = True, quiet: bool = False) -> ScanResult:
    """Images of ``sources`` (dirs, .txt lists, image files, COCO .json) with validated labels.

    Bad images are skipped and reported in ``messages``; raises DatasetError when no image with at
    least one valid box remains. User files are never modified. With ``progress`` a bar, the summary
    and the first warnings are printed (``quiet``: the bar only).
    """
    res = _scan(list(sources), list(names), cache_dir, progress, quiet)
    if not any(r.n for r in res.records):
        src = ", ".join(map(str, sources))
        first = f" First problem: {res.messages[0]}" if res.messages else ""
        raise DatasetError(f"no usable labeled image in {src} ({res.summary()}). Labels are read from the "
                           f".txt beside each image with its last /images/ replaced by /labels/.{first}")
    return res


def scan_unlabeled(sources: list[Path], cache_dir: Path | None = None, progress: bool = True,
                   quiet: bool = False) -> ScanResult:
    """Images of ``sources`` without labels (records have empty cls/boxes); corrupt ones are skipped."""
    res = _scan(list(sources), None, cache_dir, progress, quiet)
    if sources and not res.records:
        raise DatasetError(f"no usable image in unlabeled sources {', '.join(map(str, sources))} ({res.summary()})")
    return res
