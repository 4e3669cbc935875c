"""The scan's label cache: one .npz per labels folder (no pickle), keyed by file sizes and mtimes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from effteacher.utils.files import atomic_write, default_cache_dir


@dataclass
class LabelEntry:
    """Scan outcome of one image: shape (h, w), labels, ok flag, duplicate count, problem messages."""

    shape: tuple[int, int]
    cls: np.ndarray
    boxes: np.ndarray
    ok: bool
    ndup: int = 0
    msgs: list[str] = field(default_factory=list)
    nbad: int = 0  # label rows skipped


def file_stamp(*paths: str | Path) -> str:
    parts = []
    for p in paths:
        try:
            st = os.stat(p)
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def cache_locations(first_label: Path, mode: str, cache_dir: Path | None) -> list[Path]:
    """Beside the labels folder first (unless a cache_dir is given), then the user cache dir."""
    folder = first_label.parent
    h = hashlib.sha1(f"{folder}|{mode}".encode()).hexdigest()[:16]
    fallback = (cache_dir or default_cache_dir() / "scans") / f"{folder.name}-{h}.npz"
    beside = folder.parent / f"{folder.name}.effteacher-{mode}.npz"
    return [fallback] if cache_dir is not None else [beside, fallback]


def load_cache(locs: list[Path], meta: str) -> dict[str, tuple[str, LabelEntry]]:
    """path -> (stamp, entry) from the first cache file with the same meta; {} when none."""
    for loc in locs:
        try:
            with np.load(loc, allow_pickle=False) as z:
                if str(z["meta"]) != meta:
                    continue
                paths, stamps, shapes, ok, ndup = z["paths"], z["stamps"], z["shapes"], z["ok"], z["ndup"]
                counts, cls, boxes, msgs, nbad = z["counts"], z["cls"], z["boxes"], z["msgs"], z["nbad"]
        except (OSError, KeyError, ValueError):
            continue
        ends = np.cumsum(counts)
        starts = ends - counts
        return {
            str(p): (str(s), LabelEntry((int(sh[0]), int(sh[1])), cls[a:b].copy(), boxes[a:b].copy(), bool(o), int(d),
                                    [m for m in str(ms).split("\n") if m], int(nb)))
            for p, s, sh, o, d, a, b, ms, nb in zip(paths, stamps, shapes, ok, ndup, starts, ends, msgs, nbad)
        }
    return {}


def save_cache(locs: list[Path], meta: str, paths: list[str], stamps: list[str], entries: list[LabelEntry]) -> Path | None:
    arrays = dict(
        meta=np.array(meta), paths=np.array(paths, dtype=str), stamps=np.array(stamps, dtype=str),
        shapes=np.array([e.shape for e in entries], np.int64).reshape(-1, 2),
        ok=np.array([e.ok for e in entries], bool), ndup=np.array([e.ndup for e in entries], np.int64),
        nbad=np.array([e.nbad for e in entries], np.int64),
        counts=np.array([len(e.cls) for e in entries], np.int64),
        cls=np.concatenate([e.cls for e in entries] + [np.zeros(0, np.int64)]),
        boxes=np.concatenate([e.boxes for e in entries] + [np.zeros((0, 4), np.float32)]),
        msgs=np.array(["\n".join(m.replace("\n", " ") for m in e.msgs) for e in entries], dtype=str),
    )

    def writer(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    for loc in locs:
        try:
            atomic_write(loc, writer)
            return loc
        except OSError:
            continue
    return None
