"""Everything the trainer builds before its first step: run folder, data, split, model, losses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effteacher.config import TrainConfig, from_dict, replace
from effteacher.data.records import ImageRecord
from effteacher.errors import CheckpointError, ConfigError, DatasetError


@dataclass
class TrainData:
    """Records of one run: labeled, unlabeled (hidden labels kept for reporting only), val."""

    names: list[str]
    labeled: list[ImageRecord]
    unlabeled: list[ImageRecord]
    val: list[ImageRecord]
    hidden_labels_known: bool  # every unlabeled image came from the split (its labels are hidden)


def find_resume(resume: str, project: str) -> Path:
    """--resume value -> last.pt. '' or 'last' picks the newest last.pt under ``project``."""
    if resume in ("", "last", "True", "true"):
        cands = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise CheckpointError(f"--resume: no last.pt found under {project}/*/weights/; pass a run folder or last.pt")
        return cands[-1]
    p = Path(resume)
    if p.is_dir():
        p = p / "weights" / "last.pt"
    if not p.is_file():
        raise CheckpointError(f"--resume: {p} not found; pass a run folder (runs/train/expN) or its weights/last.pt")
    return p


def resumed_config(ckpt: dict[str, Any], cli_cfg: TrainConfig, ckpt_path: Path) -> TrainConfig:
    """The run's own config from last.pt; only --epochs (to extend a run), --device and --workers may change.

    ``cli_cfg.epochs`` of 0 keeps the run's epoch count; a larger count extends a finished run.
    """
    if "args" not in ckpt or "train_state" not in ckpt:
        raise CheckpointError(f"{ckpt_path}: not a last.pt with training state; resume needs weights/last.pt")
    cfg = from_dict(ckpt["args"])
    changes: dict[str, Any] = {"resume": str(ckpt_path), "device": cli_cfg.device, "workers": cli_cfg.workers}
    if cli_cfg.epochs > 0 and cli_cfg.epochs != cfg.epochs:
        changes["epochs"] = cli_cfg.epochs
    return replace(cfg, **changes)


def load_train_data(cfg: TrainConfig, run_dir: Path, resuming: bool, is_main: bool) -> TrainData:
    """Scan the dataset, make (or reload on resume) the seeded split, and gather U.

    Only the main process prints scan progress and writes the split files.
    """
    from effteacher.data.dataset import scan_labeled, scan_unlabeled
    from effteacher.data.spec import load_spec
    from effteacher.data.split import load_split, make_split, write_split

    spec = load_spec(cfg.data)
    train_scan = scan_labeled(spec.train, spec.names, progress=is_main)
    val_scan = scan_labeled(spec.val, spec.names, progress=is_main)
    records = train_scan.records
    split_dir = run_dir / "split"
    if resuming and (split_dir / "split.json").exists():
        split = load_split(split_dir, records)
    else:
        split = make_split(records, cfg.labeled, cfg.seed, nc=len(spec.names))
        if is_main:
            write_split(split, records, split_dir, names=spec.names)
    labeled = [records[i] for i in split.labeled]
    unlabeled = [records[i] for i in split.unlabeled]
    extra: list[ImageRecord] = []
    if spec.unlabeled:
        extra = scan_unlabeled(spec.unlabeled, progress=is_main).records
    if not labeled:
        raise DatasetError(f"{cfg.data}: no usable labeled image after the split; raise --labeled")
    if not cfg.supervised and not unlabeled and not extra:
        raise DatasetError(
            f"{cfg.data}: no unlabeled images for semi-supervised training; add an 'unlabeled:' folder to the "
            "dataset YAML, use --labeled below 100%, or train with --supervised"
        )
    if not val_scan.records:
        raise DatasetError(f"{cfg.data}: no usable validation image; check the 'val:' entry")
    return TrainData(spec.names, labeled, unlabeled + extra, val_scan.records, hidden_labels_known=not extra)


def init_from_weights(model: torch.nn.Module, weights: str, names: list[str]) -> int:
    """Transfer learning from ``--weights`` (see :func:`effteacher.engine.pretrained.init_from_weights`)."""
    from effteacher.engine.pretrained import init_from_weights as init

    return init(model, weights, names)


def labeled_box_sizes(records: list[ImageRecord], imgsz: int) -> np.ndarray:
    """(n, 2) box widths/heights in pixels after resizing the long side to imgsz (for AutoAnchor)."""
    out = []
    for r in records:
        if r.n:
            s = imgsz / max(r.shape)
            out.append(r.boxes[:, 2:4] * np.array([r.shape[1] * s, r.shape[0] * s], dtype=np.float32))
    return np.concatenate(out, 0) if out else np.zeros((0, 2), np.float32)


def ddp_child_argv(args_yaml: Path) -> list[str]:
    """Arguments for the relaunched DDP processes: the same train command, from the saved config."""
    return ["train", "--cfg", str(args_yaml)]


def is_ddp_child() -> bool:
    return os.environ.get("EFFTEACHER_DDP_CHILD") == "1"


def check_model_name(name: str) -> None:
    from effteacher.models.build import VARIANTS

    if name not in VARIANTS:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(VARIANTS)}")
