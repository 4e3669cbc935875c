"""A Trainer's checkpoints: last.pt (full training state), best.pt, burn_in.pt, and exact resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from effteacher.config import to_dict
from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
from effteacher.utils.console import info


class StateMixin:
    """``_save`` and ``_restore`` of :class:`effteacher.train.trainer.Trainer`."""

    cfg: Any
    ctx: Any

    def _which(self) -> str:
        done = self.plan.burn is not None and self._epoch_done >= self.plan.burn
        return "teacher" if self.ssod and done else "ema"

    def _save(self, epoch: int, metrics: dict[str, float], is_best: bool, finished: bool = False) -> None:
        self._epoch_done = epoch + 1
        names, cfg = self.data.names, self.cfg
        th, which = self.thresholds, self._which()  # the teacher's tau1/tau2: read by `effteacher pseudo` and `rank`
        extra = {"pseudo_thresholds": {"kind": th.kind, "tau1": th.tau1, "tau2": th.tau2}} if which == "teacher" else None
        deploy = make_checkpoint(self.ema.module, names, cfg.imgsz, which, epoch + 1, metrics, to_dict(cfg), extra)
        state = {
            "student": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "thresholds": self.thresholds.state_dict(),
            "class_gate": self.class_gate.state_dict(),
            "disc": (self.disc.module if hasattr(self.disc, "module") else self.disc).state_dict() if self.disc is not None else None,
            "epoch": epoch + 1, "best_fitness": self.best_fitness, "best_epoch": self.best_epoch,
            "iteration": self.iteration, "rng": rng_state(), "labeled_stream": self.labeled_stream.state_dict(),
            "burn_epochs": self.plan.burn, "plateau": [self.plan.plateau.best, self.plan.plateau.best_step],
            "handover_reason": self.plan.reason, "finished": finished,
        }
        save_checkpoint(self.wdir / "last.pt", {**deploy, "train_state": state})
        if self.ssod and epoch + 1 == self.plan.burn:  # the burn-in state, to branch SSOD variants from
            save_checkpoint(self.wdir / "burn_in.pt", {**deploy, "train_state": state})
        if is_best:
            save_checkpoint(self.wdir / "best.pt", deploy)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        st = ckpt["train_state"]
        self.model.load_state_dict(st["student"])
        self.ema.load_state_dict(st["ema"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        if st.get("thresholds") is not None:
            self.thresholds.load_state_dict(st["thresholds"])
        if st.get("class_gate") is not None:  # absent in checkpoints from before ssod.cls_thres_mode
            self.class_gate.load_state_dict(st["class_gate"])
        if self.disc is not None and st.get("disc") is not None:
            (self.disc.module if hasattr(self.disc, "module") else self.disc).load_state_dict(st["disc"])
        self.start_epoch, self.best_fitness, self.best_epoch = st["epoch"], st["best_fitness"], st["best_epoch"]
        self.iteration = st["iteration"]
        self.labeled_stream.load_state_dict(st["labeled_stream"])
        self._epoch_done = st["epoch"]
        self.scheduler.base_lrs = [self.optim_cfg.lr0] * len(self.scheduler.base_lrs)
        self.plan.plateau.best, self.plan.plateau.best_step = st.get("plateau", [-1.0, 0])
        self.plan.reason = st.get("handover_reason", "")
        self.plan.resume(st.get("burn_epochs"))  # the EMA's own state holds its (teacher) decay
        set_rng_state(st["rng"])
        if self.ctx.is_main:
            of = f" of {self.plan.end}" if self.plan.end else " (burn-in until validation plateaus)"
            info(f"resuming {self.run_dir} from epoch {self.start_epoch + 1}{of}")


def run_optimizer(state: dict[str, Any]) -> tuple[str, float] | None:
    """(optimizer, lr0) a resumed run was trained with, read from its saved optimizer state; None if unknown.

    ``optim.optimizer: auto`` picks by the planned iterations, which grow when ``--epochs`` extends a run:
    the run keeps the optimizer (and LR) its saved state belongs to.
    """
    groups = state.get("optimizer", {}).get("param_groups") or [{}]
    g = groups[0]
    name = "adamw" if "betas" in g else "sgd" if "nesterov" in g else None
    lr0 = g.get("initial_lr")
    return None if name is None or lr0 is None else (name, float(lr0))


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
