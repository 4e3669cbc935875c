"""Seeded, class-stratified labeled/unlabeled split of train; its manifest files and the `split` command."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from effteacher.config.commands import SplitOptions, with_overrides
from effteacher.data.dataset import scan_labeled
from effteacher.data.records import ImageRecord
from effteacher.data.spec import load_spec
from effteacher.errors import DatasetError
from effteacher.utils.console import console
from effteacher.utils.files import atomic_write_text, run_folder

SPLIT_FORMAT = 1


@dataclass
class Split:
    """Indices into the records list; ``class_counts[c] = (labeled instances, total instances)``."""

    labeled: list[int]
    unlabeled: list[int]
    seed: int
    labeled_spec: str = ""
    n_images: int = 0
    class_counts: list[tuple[int, int]] = field(default_factory=list)
    class_images: list[tuple[int, int]] = field(default_factory=list)  # (labeled, total) images per class
    backgrounds: tuple[int, int] = (0, 0)  # (labeled, total) images without boxes
    dataset_hash: str = ""
    labeled_list: str = ""  # the file that listed the labeled images (--labeled FILE), absolute
    labeled_list_sha256: str = ""


def parse_labeled(labeled: str | int | float, n: int) -> int:
    """'10%' / '0.1' (fractions of n, rounded, at least 1) or '200' (a count) -> number of labeled images."""
    s = str(labeled).strip()
    try:
        if s.endswith("%"):
            frac = float(s[:-1]) / 100
        elif re.fullmatch(r"\d+", s):
            frac, count = None, int(s)
        else:
            frac = float(s)
    except ValueError:
        raise DatasetError(f"--labeled {labeled!r} is not understood; use a percentage '10%', a fraction '0.1', "
                           "a count '200' or an existing file listing the labeled images (labeled.txt)") from None
    if s.endswith("%") or not re.fullmatch(r"\d+", s):
        if not (0 < frac <= 1) or not np.isfinite(frac):
            raise DatasetError(f"--labeled {labeled!r} must be above 0% and at most 100% (0 < fraction <= 1)")
        return int(min(n, max(1, round(frac * n))))
    if count < 1:
        raise DatasetError("--labeled 0 leaves no labeled image; use at least 1 (or a percentage like '10%')")
    if count > n:
        raise DatasetError(f"--labeled {count} is more than the {n} usable train images; use at most {n}")
    return count


def dataset_hash(records: list[ImageRecord]) -> str:
    """sha256 of the sorted image paths (relative to their common folder) and their labels."""
    if not records:
        return hashlib.sha256(b"").hexdigest()
    paths = [r.path for r in records]
    base = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    h = hashlib.sha256()
    for i in sorted(range(len(records)), key=lambda i: paths[i]):
        r = records[i]
        h.update(os.path.relpath(r.path, base).replace(os.sep, "/").encode() + b"\0")
        h.update(np.asarray(r.cls, np.int64).tobytes())
        h.update(np.round(np.asarray(r.boxes, np.float64), 6).tobytes() + b"\n")
    return h.hexdigest()


def _presence(records: list[ImageRecord], nc: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, classes) bool presence matrix and int instance counts."""
    counts = np.zeros((len(records), nc), np.int64)
    for i, r in enumerate(records):
        if r.n:
            counts[i] = np.bincount(r.cls, minlength=nc)[:nc]
    return counts > 0, counts


def make_split(records: list[ImageRecord], labeled: str, seed: int, nc: int | None = None) -> Split:
    """Sample ``labeled`` of the records as labeled: seeded, without replacement, class-stratified.

    Greedy stratification on instances, with background images as one more pseudo-class. First every
    class with instances gets one labeled image (rarest class first). Then, at each pick m, the class
    furthest behind its expected progress ``(m+1)/n * instances`` chooses, among its next 64 unchosen
    images in a seeded random order, the one that brings all classes closest to that progress
    (squared error relative to each class's share): no bias towards crowded or sparse images. All
    randomness comes from ``np.random.default_rng(seed)``: same seed and records, same split.
    """
    n = len(records)
    if n == 0:
        raise DatasetError("no usable train image to split")
    k = parse_labeled(labeled, n)
    nc = nc if nc is not None else int(max((int(r.cls.max()) for r in records if r.n), default=-1)) + 1
    _, counts = _presence(records, nc)
    ext = np.concatenate([counts, (counts.sum(1) == 0)[:, None]], 1).astype(np.float64)  # + background column
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # random priority of images
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    chosen = np.zeros(n, bool)
    total = ext.sum(0)
    share = np.maximum(total * k / n, 1e-9)
    have = np.zeros(nc + 1, np.float64)
    lists = [np.flatnonzero(ext[:, c] > 0)[np.argsort(rank[ext[:, c] > 0])] for c in range(nc + 1)]
    cursor = np.zeros(nc + 1, np.int64)
    exhausted = total == 0
    tiebreak = rng.random(nc + 1) * 1e-9

    def take(c: int, target: np.ndarray) -> bool:
        """Choose, among the next 64 unchosen images of class c, the one closest to ``target``."""
        lst = lists[c]
        while cursor[c] < len(lst) and chosen[lst[cursor[c]]]:
            cursor[c] += 1
        window = lst[cursor[c]:cursor[c] + 256]
        cands = window[~chosen[window]][:64]
        if len(cands) == 0:
            exhausted[c] = True
            return False
        err = (((have + ext[cands] - target) ** 2) / share).sum(1)
        i = int(cands[np.argmin(err)])  # argmin: first (random-order) of the best
        chosen[i] = True
        have[:] += ext[i]
        return True

    m = 0
    for c in np.argsort(total[:nc] + tiebreak[:nc], kind="stable"):  # rarest class first: one image each
        if m < k and total[c] > 0 and have[c] == 0 and take(int(c), have + share / max(k, 1)):
            m += 1
    while m < k and not exhausted.all():
        target = total * (m + 1) / n
        lag = np.where(exhausted, -np.inf, (target - have) / share) + tiebreak
        m += int(take(int(np.argmax(lag)), target))
    if m < k:
        rest = order[~chosen[order]][: k - m]
        chosen[rest] = True
    return _split_of(records, chosen, seed, str(labeled), nc)


def _split_of(records: list[ImageRecord], chosen: np.ndarray, seed: int, spec: str, nc: int) -> Split:
    """A Split (with its class and background counts) from a bool mask of the labeled records."""
    present, counts = _presence(records, nc)
    lab = np.flatnonzero(chosen)
    background = counts.sum(1) == 0
    return Split(
        labeled=lab.tolist(), unlabeled=np.flatnonzero(~chosen).tolist(), seed=int(seed), labeled_spec=spec,
        n_images=len(records), class_counts=[(int(a), int(b)) for a, b in zip(counts[lab].sum(0), counts.sum(0))],
        class_images=[(int(a), int(b)) for a, b in zip(present[lab].sum(0), present.sum(0))],
        backgrounds=(int(background[lab].sum()), int(background.sum())), dataset_hash=dataset_hash(records),
    )


def is_list_spec(labeled: str | int | float) -> bool:
    """True when ``--labeled`` names a file of image paths rather than '10%', '0.1' or '200'."""
    s = str(labeled).strip()
    if re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?%?", s, re.I):
        return False
    return s.lower().endswith(".txt") or Path(s).expanduser().is_file()


def read_labeled_list(list_path: str | Path, records: list[ImageRecord], root: str | Path | None = None) -> list[int]:
    """Indices of ``records`` named by a list file: one image path a line, ``#`` comments and blank lines skipped.

    A relative line resolves against the list's folder first, then the dataset ``root``. Raises
    DatasetError naming the file and line for a path that does not exist, or that exists but is not a
    (usable) train image, and for a list without any image. Duplicates count once.
    """
    lp = Path(list_path).expanduser()
    if not lp.is_file():
        raise DatasetError(f"--labeled {list_path}: file not found; pass a text file with one image path per line")
    try:
        lines = lp.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{lp}: cannot read the labeled list ({e}); make it a UTF-8 text file, one path a line") from e
    index = {os.path.abspath(r.path): i for i, r in enumerate(records)}
    real = {os.path.realpath(r.path): i for i, r in enumerate(records)}
    bases = [lp.parent] + ([Path(root)] if root is not None else [])
    chosen: list[int] = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        cands = [p] if p.is_absolute() else [b / p for b in bases]
        found = (index.get(os.path.abspath(c), real.get(os.path.realpath(c))) for c in cands)
        hit = next((i for i in found if i is not None), None)
        if hit is None:
            where = " or ".join(str(c) for c in cands)
            if not any(c.exists() for c in cands):
                raise DatasetError(f"{lp}:{n}: {line} not found (looked for {where}); fix the path or remove the line")
            raise DatasetError(f"{lp}:{n}: {line} is not one of the dataset's usable train images; list images of "
                               "'train' (run `effteacher check` if it was skipped as corrupt)")
        chosen.append(hit)
    if not chosen:
        raise DatasetError(f"{lp}: lists no image; write one image path per line")
    return sorted(set(chosen))


def build_split(records: list[ImageRecord], labeled: str, seed: int, nc: int | None = None,
                root: str | Path | None = None) -> Split:
    """The run's split: the images a ``--labeled`` list file names, or a seeded stratified sample (``make_split``)."""
    if not is_list_spec(labeled):
        return make_split(records, labeled, seed, nc=nc)
    if not records:
        raise DatasetError("no usable train image to split")
    nc = nc if nc is not None else int(max((int(r.cls.max()) for r in records if r.n), default=-1)) + 1
    lp = Path(str(labeled).strip()).expanduser()
    idx = read_labeled_list(lp, records, root)
    chosen = np.zeros(len(records), bool)
    chosen[idx] = True
    split = _split_of(records, chosen, seed, str(lp.resolve()), nc)
    split.labeled_list = str(lp.resolve())
    split.labeled_list_sha256 = hashlib.sha256(lp.read_bytes()).hexdigest()
    return split


def write_split(split: Split, records: list[ImageRecord], out_dir: str | Path,
                names: list[str] | None = None) -> Path:
    """Write ``labeled.txt``, ``unlabeled.txt`` (absolute paths, sorted) and ``split.json``; byte-stable."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lab = sorted(records[i].path for i in split.labeled)
    unl = sorted(records[i].path for i in split.unlabeled)
    atomic_write_text(out / "labeled.txt", "".join(p + "\n" for p in lab))
    atomic_write_text(out / "unlabeled.txt", "".join(p + "\n" for p in unl))
    names = names or [str(c) for c in range(len(split.class_counts))]
    manifest = {
        "format": SPLIT_FORMAT,
        "seed": split.seed,
        "labeled": split.labeled_spec,
        "n_images": split.n_images,
        "n_labeled": len(split.labeled),
        "n_unlabeled": len(split.unlabeled),
        "dataset_hash": split.dataset_hash,
        **({"labeled_list": {"path": split.labeled_list, "sha256": split.labeled_list_sha256}}
           if split.labeled_list else {}),
        "backgrounds": {"labeled": split.backgrounds[0], "images": split.backgrounds[1]},
        "classes": [
            {"id": c, "name": names[c] if c < len(names) else str(c), "labeled_instances": li, "instances": ti,
             "labeled_images": split.class_images[c][0], "images": split.class_images[c][1]}
            for c, (li, ti) in enumerate(split.class_counts)
        ],
    }
    atomic_write_text(out / "split.json", json.dumps(manifest, indent=2) + "\n")
    return out


def load_split(out_dir: str | Path, records: list[ImageRecord]) -> Split:
    """Read a split written by ``write_split``; DatasetError if missing or the dataset has changed."""
    out = Path(out_dir)
    try:
        m = json.loads((out / "split.json").read_text())
        lab_paths = (out / "labeled.txt").read_text().splitlines()
    except (OSError, ValueError) as e:
        raise DatasetError(f"{out}: no readable split (split.json, labeled.txt): {e}; run `effteacher split` "
                           "or start a new run") from e
    h = dataset_hash(records)
    if m.get("dataset_hash") != h:
        raise DatasetError(f"{out / 'split.json'}: the dataset changed since this split was made (hash "
                           f"{str(m.get('dataset_hash'))[:12]} != {h[:12]}); restore it or make a new split")
    index = {r.path: i for i, r in enumerate(records)}
    if not all(p in index for p in lab_paths):  # dataset moved: match by path relative to its folder
        paths = [r.path for r in records]
        base = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
        rel = {os.path.relpath(p, base).replace(os.sep, "/"): i for i, p in enumerate(paths)}
        depth = max(k.count("/") + 1 for k in rel)
        lab = []
        for p in lab_paths:
            parts = Path(p).parts
            hit = next((rel[k] for j in range(depth, 0, -1) if (k := "/".join(parts[-j:])) in rel), None)
            if hit is None:
                raise DatasetError(f"{out / 'labeled.txt'}: {p} is not in the dataset; make a new split")
            lab.append(hit)
        lab = sorted(set(lab))
    else:
        lab = sorted(index[p] for p in lab_paths)
    labset = set(lab)
    present, counts = _presence(records, len(m.get("classes", [])))
    la = np.array(lab, np.int64)
    return Split(
        labeled=lab, unlabeled=[i for i in range(len(records)) if i not in labset], seed=int(m["seed"]),
        labeled_spec=str(m.get("labeled", "")), n_images=len(records),
        class_counts=[(int(a), int(b)) for a, b in zip(counts[la].sum(0), counts.sum(0))],
        class_images=[(int(a), int(b)) for a, b in zip(present[la].sum(0), present.sum(0))],
        backgrounds=(int((counts[la].sum(1) == 0).sum()), int((counts.sum(1) == 0).sum())), dataset_hash=h,
    )


def run_split(*, options: SplitOptions | None = None, **overrides: Any) -> Path:
    """The `split` command: scan train, split, write the manifest into an incremented run folder."""
    o = with_overrides(SplitOptions, options, overrides)
    spec = load_spec(o.data)
    scan = scan_labeled(spec.train, spec.names)
    split = build_split(scan.records, o.labeled, o.seed, nc=spec.nc, root=spec.root)
    with run_folder(o.project, o.name, o.exist_ok) as out:
        write_split(split, scan.records, out, spec.names)
    t = Table(title=f"Split of {spec.yaml_path}: --labeled {o.labeled} --seed {o.seed}")
    for col in ("Class", "Labeled images", "Images", "Labeled instances", "Instances"):
        t.add_column(col, justify="left" if col == "Class" else "right")
    for c, nm in enumerate(spec.names):
        (li, ti), (lm, tm) = split.class_counts[c], split.class_images[c]
        t.add_row(nm, str(lm), str(tm), str(li), str(ti))
    t.add_row("(background)", str(split.backgrounds[0]), str(split.backgrounds[1]), "-", "-")
    t.add_row("all", str(len(split.labeled)), str(split.n_images),
              str(sum(a for a, _ in split.class_counts)), str(sum(b for _, b in split.class_counts)), style="bold")
    console().print(t)
    console().print(f"{len(split.labeled)} labeled + {len(split.unlabeled)} unlabeled images; "
                    f"split written to [bold]{out}[/bold] (labeled.txt, unlabeled.txt, split.json)")
    return out
