"""A run's checkpoints: last.pt (full training state), best.pt, burn_in.pt, and exact resume from last.pt."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effteacher.config import TrainConfig, to_dict
from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
from effteacher.train.parts import TrainParts
from effteacher.train.ssod_state import SSOD_STATE_KEYS


LAST_EVERY_S = 30.0  # last.pt after an epoch without validation: at most this often (demo epochs last 0.4 s)


class Checkpointer:
    """Collects each part's state into weights/*.pt and gives it back on resume.

    last.pt is written after every validated epoch, the hand-over and the last epoch, and otherwise when
    ``LAST_EVERY_S`` seconds have passed since the previous one: a killed run loses at most that much work,
    and runs with sub-second epochs do not spend a third of their time writing checkpoints.
    """

    def __init__(self, wdir: Path, cfg: TrainConfig, names: list[str], parts: TrainParts) -> None:
        self.wdir, self.cfg, self.names, self.parts = wdir, cfg, names, parts
        self.last_saved = time.monotonic()

    def which(self, epochs_done: int) -> str:
        """What the EMA is after ``epochs_done`` epochs: the teacher once an SSOD run has handed over."""
        burn = self.parts.plan.burn
        return "teacher" if self.parts.ssod is not None and burn is not None and epochs_done >= burn else "ema"

    def train_state(self, epoch: int, finished: bool) -> dict[str, Any]:
        """last.pt's ``train_state`` after ``epoch``; a supervised run writes None for the SSOD-only entries."""
        p, plan = self.parts, self.parts.plan
        ssod = p.ssod.state_dict() if p.ssod is not None else dict.fromkeys(SSOD_STATE_KEYS)
        return {
            **p.state_dict(), **ssod,
            "epoch": epoch + 1, "best_fitness": p.progress.best_fitness, "best_epoch": p.progress.best_epoch,
            "rng": rng_state(), "burn_epochs": plan.burn, "plateau": [plan.plateau.best, plan.plateau.best_step],
            "handover_reason": plan.reason, "finished": finished,
        }

    def save(self, epoch: int, metrics: dict[str, float], is_best: bool, finished: bool = False,
             validated: bool = True) -> None:
        p, cfg = self.parts, self.cfg
        handover = p.ssod is not None and epoch + 1 == p.plan.burn
        if not (validated or finished or handover or time.monotonic() - self.last_saved >= LAST_EVERY_S):
            return
        self.last_saved = time.monotonic()
        which = self.which(epoch + 1)
        extra = None
        if which == "teacher" and p.ssod is not None:  # the teacher's tau1/tau2: read by `effteacher pseudo` and `rank`
            th = p.ssod.thresholds
            extra = {"pseudo_thresholds": {"kind": th.kind, "tau1": th.tau1, "tau2": th.tau2}}
        deploy = make_checkpoint(p.ema.module, self.names, cfg.imgsz, which, epoch + 1, metrics, to_dict(cfg), extra)
        state = self.train_state(epoch, finished)
        save_checkpoint(self.wdir / "last.pt", {**deploy, "train_state": state})
        if handover:  # the burn-in state, to branch SSOD variants from
            save_checkpoint(self.wdir / "burn_in.pt", {**deploy, "train_state": state})
        if is_best:
            save_checkpoint(self.wdir / "best.pt", deploy)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue exactly where last.pt stopped (weights, optimizer, loaders' positions, plan, random state)."""
        st, p = ckpt["train_state"], self.parts
        p.load_state_dict(st)
        if p.ssod is not None:
            p.ssod.load_state_dict(st)
        p.progress.start_epoch, p.progress.best_fitness, p.progress.best_epoch = (
            st["epoch"], st["best_fitness"], st["best_epoch"])
        plan = p.plan
        plan.plateau.best, plan.plateau.best_step = st.get("plateau", [-1.0, 0])
        plan.reason = st.get("handover_reason", "")
        plan.resume(st.get("burn_epochs"))  # the EMA's own state holds its (teacher) decay
        set_rng_state(st["rng"])


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor(np.random.get_state()[1].astype(np.int64)),
        "python": torch.tensor([random.getrandbits(31) for _ in range(4)]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.seed(int(state["numpy"][0]) % (2**32))
    random.seed(int(state["python"].sum()))
