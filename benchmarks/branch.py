"""Run an arm of a benchmark once (resumable), and branch SSOD variants from one saved burn-in state.

Every run saves ``weights/burn_in.pt`` (the full training state at the hand-over). ``branch`` copies a
run's folder up to that point, writes the variant's config overrides into the copied state's
``args`` and resumes it: variants then share the weights, optimizer, LR position, split and RNG of
the burn-in and differ only in their overrides (``ssod.lambda_u: 0`` is the no-pseudo-label control).
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any


def _done(run_dir: Path) -> dict[str, Any] | None:
    f = run_dir / "done.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _finish(run_dir: Path, t0: float, prior: float) -> dict[str, Any]:
    info = {"wall_s": round(prior + time.time() - t0, 1)}
    (run_dir / "done.json").write_text(json.dumps(info))
    return info


def _elapsed(run_dir: Path) -> float:
    f = run_dir / "elapsed.json"
    return float(json.loads(f.read_text())["wall_s"]) if f.is_file() else 0.0


def run_arm(project: Path, name: str, base: Any, **changes: Any) -> Path:
    """Train ``base`` with ``changes`` into project/name, or resume it if it was killed, or skip it if done."""
    from effteacher.config import replace
    from effteacher.train.trainer import train

    run_dir = project / name
    if _done(run_dir):
        print(f"{run_dir}: done, reused", flush=True)
        return run_dir
    prior, t0 = _elapsed(run_dir), time.time()
    if (run_dir / "weights/last.pt").is_file():
        print(f"{run_dir}: resuming", flush=True)
        cfg = replace(base, resume=str(run_dir), epochs=0, workers=base.workers)
    else:
        cfg = replace(base, project=str(project), name=name, exist_ok=True, **changes)
    _track(run_dir, t0, prior, lambda: train(cfg))
    return run_dir


def baselines(base: Any) -> dict[str, dict[str, Any]]:
    """Config overrides that turn an SSOD run's burn-in state (its supervised plateau) into its two baselines:
    ``sup``, what ``--supervised`` does from there (polishing), and ``ctrl``, the SSOD phase at lambda_u 0."""
    return {"sup": {"supervised": True, "sched.polish_factor": base.sched.polish_factor},
            "ctrl": {"ssod.lambda_u": 0.0}}


def branch(src: Path, dst: Path, overrides: dict[str, Any], base: Any, epochs: int | None = None) -> Path:
    """SSOD from ``src``'s burn-in state with config ``overrides`` (dotted keys) into ``dst``; resumable.

    ``epochs``: stop after this many epochs in all (burn-in included), e.g. a short ablation; None keeps
    the source run's plan.
    """
    import torch

    from effteacher.config import from_dict, replace, to_dict
    from effteacher.models.checkpoint import save_checkpoint
    from effteacher.train.trainer import train

    if _done(dst):
        print(f"{dst}: done, reused", flush=True)
        return dst
    prior, t0 = _elapsed(dst), time.time()
    if not (dst / "weights/last.pt").is_file():
        ck = torch.load(src / "weights/burn_in.pt", weights_only=True)
        burn = int(ck["train_state"]["epoch"])
        shutil.rmtree(dst, ignore_errors=True)
        (dst / "weights").mkdir(parents=True)
        shutil.copytree(src / "split", dst / "split")
        with open(src / "results.csv") as f:
            rows = list(csv.reader(f))
        with open(dst / "results.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows[: burn + 1])
        cfg = replace(from_dict(ck["args"]), project=str(dst.parent), name=dst.name, **overrides)
        if epochs is not None:
            cfg = replace(cfg, epochs=epochs)
        ck["args"] = to_dict(cfg)
        if "ssod.thresholds" in overrides:
            ck["train_state"]["thresholds"] = None  # another strategy: start from its initial thresholds
        save_checkpoint(dst / "weights/last.pt", ck)
        (dst / "overrides.json").write_text(json.dumps(overrides))
    cfg = replace(base, resume=str(dst), epochs=0)
    _track(dst, t0, prior, lambda: train(cfg))
    return dst


def _track(run_dir: Path, t0: float, prior: float, fn: Any) -> None:
    """Run ``fn`` and keep the run's wall time across kills: SIGTERM (``kill``, ``pkill``) exits through
    ``finally`` so elapsed.json is written, as it is for Ctrl-C."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _exit_on_term) if main else None
    try:
        fn()
    finally:
        if main:
            signal.signal(signal.SIGTERM, before)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "elapsed.json").write_text(json.dumps({"wall_s": prior + time.time() - t0}))
    _finish(run_dir, t0, prior)


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def rows(run_dir: Path) -> list[dict[str, float]]:
    """Validated rows of a run's results.csv as floats; empty (unmeasured) cells are left out of each row.

    A row is validated when its ``metrics/mAP50`` cell is not empty. Files written before unmeasured cells
    were left empty (no ``train/steps`` column) held 0 for epochs without validation: there a row counts
    only when its mAP50 is above 0.
    """
    out = []
    with open(run_dir / "results.csv") as f:
        reader = csv.DictReader(f)
        legacy = "train/steps" not in (reader.fieldnames or [])
        for r in reader:
            d = {k: float(v) for k, v in r.items() if v not in ("", None)}
            if "metrics/mAP50" in d and (d["metrics/mAP50"] > 0 or not legacy):
                out.append(d)
    return out


def wall_s(run_dir: Path) -> float:
    d = _done(run_dir)
    return float(d["wall_s"]) if d else _elapsed(run_dir)
