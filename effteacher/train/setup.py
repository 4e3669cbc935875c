"""Everything the trainer builds before its first step: run folder, data, split, model, losses.

Under DDP (one node or several) global rank 0 makes every decision that names a file (the run
folder, which last.pt to resume, the split) and every rank receives the same answer.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from rich.markup import escape

from effteacher.config import TrainConfig, from_dict, replace, save_yaml
from effteacher.data.dataset import scan_labeled, scan_unlabeled
from effteacher.data.records import ImageRecord
from effteacher.data.spec import load_spec
from effteacher.data.split import build_split, dataset_hash, load_split, write_split
from effteacher.errors import CheckpointError, ConfigError, DatasetError
from effteacher.models.build import VARIANTS
from effteacher.models.checkpoint import load_checkpoint
from effteacher.models.pretrained import init_from_weights as init
from effteacher.utils import dist
from effteacher.utils.console import info
from effteacher.utils.dist import DistContext
from effteacher.utils.files import RunLock, increment_path, make_run_dir
from effteacher.utils.files import discard_if_failed as discard


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


def new_run_dir(project: str | Path, name: str, exist_ok: bool, mkdir: bool = True) -> tuple[Path, bool]:
    """The folder of a new run (runs/train/exp, exp2, ...) and whether this call created it.

    With ``exist_ok`` an existing folder is reused and reported as not created: it is never removed.
    """
    if mkdir:
        return make_run_dir(project, name, exist_ok)
    return increment_path(project, name, exist_ok, mkdir=False), False


def _holds_checkpoint(path: Path) -> bool:
    return (path / "weights" / "last.pt").exists()


@contextmanager
def discard_if_failed(created: Callable[[], Path | None]) -> Iterator[None]:
    """Remove the run folder this run created (``created()``, None when it made none) if the body fails
    before the folder holds a checkpoint (weights/last.pt): a failed start leaves no empty expN behind.

    Folders the run did not create (--exist-ok, --resume) and folders with a checkpoint are never touched.
    """
    with discard(created, keep=_holds_checkpoint):
        yield


def preflight(cfg: TrainConfig) -> None:
    """Checks that need no run folder, made before one is created: the model name, the dataset YAML and its
    folders, and the --weights file (a resume reads only its own last.pt)."""
    check_model_name(cfg.model)
    if cfg.resume is not None:
        return
    load_spec(cfg.data)
    if cfg.weights:
        load_checkpoint(cfg.weights)


def finished_run(cfg: TrainConfig) -> Path | None:
    """For ``--resume``: the run folder when that run is finished and ``--epochs`` does not extend it (it is
    reported, nothing is written); None when there is something to train.

    Raises ConfigError for ``--epochs N`` at or below the epochs the run has done (nothing is written).
    """
    if cfg.resume is None:
        return None
    path = find_resume(cfg.resume, cfg.project)
    ckpt = load_checkpoint(path)
    if "args" not in ckpt or "train_state" not in ckpt:
        raise CheckpointError(f"{path}: not a last.pt with training state; resume needs weights/last.pt")
    st = ckpt["train_state"]
    done = int(st["epoch"])
    planned = int(ckpt["args"].get("epochs", 0) or 0)
    finished = bool(st.get("finished", planned > 0 and done >= planned))
    run_dir = path.parent.parent
    more = done + max(done // 2, 1)
    if 0 < cfg.epochs <= done:
        rest = "" if finished or planned <= done else f", or leave --epochs out to finish its {planned} epochs"
        raise ConfigError(f"--epochs {cfg.epochs}: {run_dir} has already trained {done} epochs; to train longer "
                          f"pass a larger count, e.g. --resume {run_dir} --epochs {more}{rest}")
    burn = ckpt["args"].get("burn_in")
    fixed_burn = isinstance(burn, int) and not isinstance(burn, bool) and not ckpt["args"].get("supervised")
    if fixed_burn and 0 < cfg.epochs <= burn:
        raise ConfigError(f"--epochs {cfg.epochs}: {run_dir} has a burn-in of {burn} epochs, so no semi-supervised "
                          f"epoch would follow; pass --epochs above {burn}")
    if cfg.epochs == 0 and finished:
        info(escape(f"{run_dir} is finished ({done} epochs); nothing to resume and nothing was changed. Its model: "
                    f"{run_dir / 'weights' / 'best.pt'}. To train longer: effteacher train --resume {run_dir} "
                    f"--epochs {more}"))
        return run_dir
    return None


def resumed_config(ckpt: dict[str, Any], cli_cfg: TrainConfig, ckpt_path: Path) -> TrainConfig:
    """The run's own config from last.pt; only --epochs (to extend a run), --device, --workers and --verbose
    may change.

    ``cli_cfg.epochs`` of 0 keeps the run's epoch count; a larger count extends a finished run.
    """
    if "args" not in ckpt or "train_state" not in ckpt:
        raise CheckpointError(f"{ckpt_path}: not a last.pt with training state; resume needs weights/last.pt")
    cfg = from_dict(ckpt["args"])
    changes: dict[str, Any] = {"resume": str(ckpt_path), "device": cli_cfg.device, "workers": cli_cfg.workers,
                               "verbose": cli_cfg.verbose}
    if cli_cfg.epochs > 0 and cli_cfg.epochs != cfg.epochs:
        changes["epochs"] = cli_cfg.epochs
    return replace(cfg, **changes)


@dataclass
class RunFolder:
    """Where a run writes, agreed by every rank: its config (the resumed run's own on --resume),
    its folder, and the loaded last.pt when resuming (None for a new run)."""

    cfg: TrainConfig
    run_dir: Path
    resume_ckpt: dict[str, Any] | None = None
    created: bool = False  # this run made run_dir (a failed start may remove it: discard_if_failed)
    lock: Any = None  # rank 0's RunLock on run_dir (None on other ranks); the run releases it at its end


def resolve_run(cfg: TrainConfig, ctx: DistContext) -> RunFolder:
    """Pick the run folder (a new runs/train/expN, or the resumed run's) and load last.pt on every rank.

    Rank 0 decides and creates the folder, writes ``args.yaml``, and broadcasts the answer, so
    processes racing on ``increment_path`` can never end up in two folders. On resume every rank
    holds last.pt's state: each reads it from the path rank 0 chose when the file is visible on all
    nodes (a shared file system), otherwise rank 0 sends its copy. Errors (no last.pt, a bad batch
    size) are raised on every rank.
    """
    loaded: dict[str, Any] = {}

    def decide() -> tuple[str, TrainConfig, bool]:
        if cfg.resume is None:
            dist.check_batch(cfg.batch, ctx.world_size)  # before the folder is made
            path, created = new_run_dir(cfg.project, cfg.name, cfg.exist_ok)
            with discard_if_failed(lambda: path if created else None):
                loaded["lock"] = RunLock(path).acquire()  # a second run into the same folder is refused
            return str(path), cfg, created
        path = find_resume(cfg.resume, cfg.project)
        lock = loaded["lock"] = RunLock(path.parent.parent).acquire()
        try:
            loaded["ckpt"] = load_checkpoint(path)
            run_cfg = resumed_config(loaded["ckpt"], cfg, path)
            dist.check_batch(run_cfg.batch, ctx.world_size)  # the run's own batch, not the command line's
        except BaseException:
            lock.release()
            raise
        return str(path), run_cfg, False

    where, run_cfg, created = dist.run_on_main(decide, ctx)
    try:
        ckpt = None
        if cfg.resume is not None:
            path = Path(where)
            ckpt = loaded.get("ckpt")
            everywhere = all(dist.gather_objects(_readable(path), ctx))
            if not everywhere:  # nodes without a shared file system: rank 0's copy travels
                ckpt = dist.broadcast_object(ckpt, ctx)
            elif ckpt is None:
                ckpt = load_checkpoint(path)
            run_dir = path.parent.parent
        else:
            run_dir = Path(where)
        if ctx.is_main:
            (run_dir / "weights").mkdir(parents=True, exist_ok=True)
            save_yaml(run_cfg, run_dir / "args.yaml")
    except BaseException:
        if loaded.get("lock") is not None:
            loaded["lock"].release()
        raise
    return RunFolder(run_cfg, run_dir, ckpt, created, loaded.get("lock"))


def _readable(path: Path) -> bool:
    """Whether this process sees ``path`` (False on a node that does not share rank 0's disk)."""
    return path.is_file()


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


def init_from_weights(model: torch.nn.Module, weights: str, names: list[str]) -> int:
    """Transfer learning from ``--weights`` (see :func:`effteacher.models.pretrained.init_from_weights`)."""
    return init(model, weights, names)


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


def ddp_child_argv(args_yaml: Path) -> list[str]:
    """Arguments for the relaunched DDP processes: the same train command, from the saved config."""
    return ["train", "--cfg", str(args_yaml)]


def check_model_name(name: str) -> None:
    if name not in VARIANTS:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(VARIANTS)}")
