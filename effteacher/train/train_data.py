"""A run's data: the dataset scan, the seeded labeled/unlabeled split (made or reloaded) and the validation set.

Under DDP rank 0 scans first and chooses the split; every rank must see the same train set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effteacher.config import TrainConfig
from effteacher.data.dataset import scan_labeled, scan_unlabeled
from effteacher.data.records import ImageRecord
from effteacher.data.spec import load_spec
from effteacher.data.split import build_split, dataset_hash, load_split, write_split
from effteacher.errors import DatasetError
from effteacher.utils import dist
from effteacher.utils.dist import DistContext


@dataclass
class TrainData:
    """Records of one run: labeled, unlabeled (hidden labels kept for reporting only), val."""

    names: list[str]
    labeled: list[ImageRecord]
    unlabeled: list[ImageRecord]
    val: list[ImageRecord]
    hidden_labels_known: bool  # every unlabeled image came from the split (its labels are hidden)


def load_train_data(cfg: TrainConfig, run_dir: Path, resuming: bool, ctx: DistContext) -> TrainData:
    """Scan the dataset, make (or reload on resume) the seeded split, and gather U.

    Rank 0 scans first (it prints progress and writes the label cache the others then reuse),
    every rank must see the same train set (DatasetError otherwise), and rank 0 chooses the split
    (the same seeded split a single process makes), writes it and sends it to the others.
    """
    is_main = ctx.is_main
    with dist.torch_distributed_zero_first(ctx):  # rank 0 also generates a bundled sample dataset first
        spec = load_spec(cfg.data)
        train_scan = scan_labeled(spec.train, spec.names, progress=is_main)
        val_scan = scan_labeled(spec.val, spec.names, progress=is_main)
        extra: list[ImageRecord] = []
        if spec.unlabeled:
            extra = scan_unlabeled(spec.unlabeled, progress=is_main).records
    records = train_scan.records
    if ctx.distributed:
        _check_same_data(dist.gather_objects(dataset_hash(records), ctx), cfg.data)
    split_dir = run_dir / "split"

    def choose_split() -> Any:
        if resuming and (split_dir / "split.json").exists():
            return load_split(split_dir, records)
        made = build_split(records, cfg.labeled, cfg.seed, nc=len(spec.names), root=spec.root)
        write_split(made, records, split_dir, names=spec.names)
        return made

    split = dist.run_on_main(choose_split, ctx)
    labeled = [records[i] for i in split.labeled]
    unlabeled = [records[i] for i in split.unlabeled]
    if not labeled:
        raise DatasetError(f"{cfg.data}: no usable labeled image after the split; raise --labeled")
    if not cfg.supervised and not unlabeled and not extra:
        raise DatasetError(
            f"{cfg.data}: no unlabeled images for semi-supervised training; add an 'unlabeled:' folder to the "
            "dataset YAML, use --labeled below 100%, or train with --supervised"
        )
    if not val_scan.records:
        raise DatasetError(f"{cfg.data}: no usable validation image; check the 'val:' entry")
    # pseudo-label precision is reported against the hidden labels of U only when U has some: a train folder
    # whose unlabeled images have no label files at all (a --labeled list layout) has none to compare with
    known = not extra and any(r.n for r in unlabeled)
    return TrainData(spec.names, labeled, unlabeled + extra, val_scan.records, hidden_labels_known=known)


def labeled_box_sizes(records: list[ImageRecord], imgsz: int) -> np.ndarray:
    """(n, 2) box widths/heights in pixels after resizing the long side to imgsz (for AutoAnchor)."""
    out = []
    for r in records:
        if r.n:
            s = imgsz / max(r.shape)
            out.append(r.boxes[:, 2:4] * np.array([r.shape[1] * s, r.shape[0] * s], dtype=np.float32))
    return np.concatenate(out, 0) if out else np.zeros((0, 2), np.float32)


def _check_same_data(hashes: list[str], data: str) -> None:
    """Raise DatasetError unless every rank's train-set hash equals rank 0's."""
    other = [r for r, h in enumerate(hashes) if h != hashes[0]]
    if other:
        raise DatasetError(
            f"{data}: rank(s) {', '.join(map(str, other))} see a different train set than rank 0 (hash "
            f"{hashes[other[0]][:12]} != {hashes[0][:12]}); every node needs the same dataset (same files and "
            "labels) at the path the dataset YAML names"
        )
