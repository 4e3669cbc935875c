"""A run's folder: a new runs/train/expN or the resumed run's, its lock, and the checks made before it exists.

Under DDP (one node or several) global rank 0 makes every decision that names a file (the run
folder, which last.pt to resume) and every rank receives the same answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from effteacher.config import TrainConfig, from_dict, replace, save_yaml
from effteacher.data.spec import load_spec
from effteacher.errors import CheckpointError, ConfigError
from effteacher.models.build import VARIANTS
from effteacher.models.checkpoint import load_checkpoint
from effteacher.utils import dist
from effteacher.utils.console import info
from effteacher.utils.dist import DistContext
from effteacher.utils.files import RunLock, increment_path, make_run_dir
from effteacher.utils.files import discard_if_failed as discard


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


def ddp_child_argv(args_yaml: Path) -> list[str]:
    """Arguments for the relaunched DDP processes: the same train command, from the saved config."""
    return ["train", "--cfg", str(args_yaml)]


def check_model_name(name: str) -> None:
    if name not in VARIANTS:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(VARIANTS)}")
