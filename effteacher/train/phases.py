"""The two kinds of training epoch, burn-in (supervised) and SSOD, behind one small interface, and the hand-over."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

from effteacher.config import TrainConfig
from effteacher.ssod.domain import da_ramp
from effteacher.ssod.pseudo import assign_pseudo_labels, mix_strong_views
from effteacher.ssod.teacher import hand_over
from effteacher.train.parts import TrainParts
from effteacher.train.schedule import teacher_decay
from effteacher.train.ssod_state import SSODState
from effteacher.train.ssod_step import (
    StudentInputs,
    dense_for,
    observe_teacher,
    pseudo_quality,
    student_losses,
    teacher_floor,
    teacher_predict,
)
from effteacher.train.train_data import TrainData
from effteacher.utils.console import info
from effteacher.utils.dist import DistContext
from effteacher.utils.plots import plot_images, plot_pseudo_batch
from effteacher.utils.progress import TrainProgress


@dataclass
class Step:
    """One batch's loss, what to log of it, and the labeled batch's size for the progress bar."""

    loss: torch.Tensor
    items: dict[str, Any]
    images: int
    imgsz: int


class Phase(Protocol):
    ssod: bool  # whether its epochs are SSOD epochs (thresholds, pseudo-label warnings)

    def loader(self) -> DataLoader: ...  # one epoch is one pass over it

    def step(self, batch: Any, epoch: int, i: int) -> Step: ...

    def end_epoch(self) -> dict[str, float]: ...  # extra means for results.csv


@dataclass
class RunInfo:
    """What a phase reads of the run besides its parts: the config, data, plot folder and the rank's role."""

    cfg: TrainConfig
    data: TrainData
    run_dir: Path
    ctx: DistContext


class SupervisedPhase:
    """A pass over the labeled loader: the whole of a supervised run, the burn-in of an SSOD run."""

    ssod = False

    def __init__(self, parts: TrainParts, run: RunInfo) -> None:
        self.parts, self.run = parts, run

    def loader(self) -> DataLoader:
        return self.parts.labeled_loader

    def step(self, batch: Any, epoch: int, i: int) -> Step:
        p = self.parts
        imgs, targets, paths, _ = batch
        x, targets = p.to_input(imgs), targets.to(p.device)
        with p.autocast():
            raw = p.train_model(x)
        loss, items = p.loss_sup([r.float() for r in raw], targets)  # the loss in fp32 (bf16 boxes are too coarse)
        if epoch == p.progress.start_epoch and i < 3 and self.run.ctx.is_main:
            plot_images(imgs, targets.cpu(), paths, self.run.data.names, self.run.run_dir / f"train_batch{i}.jpg")
        return Step(loss, {"box": items["box"], "obj": items["obj"], "cls": items["cls"]}, targets.shape[0], x.shape[-1])

    def end_epoch(self) -> dict[str, float]:
        return {}


class SSODPhase:
    """Mean-teacher SSOD: a pass over U, each unlabeled batch next to a labeled one from the endless stream."""

    ssod = True

    def __init__(self, parts: TrainParts, state: SSODState, run: RunInfo) -> None:
        self.parts, self.state, self.run = parts, state, run

    def loader(self) -> DataLoader:
        return self.state.unlabeled.loader

    def step(self, batch: Any, epoch: int, i: int) -> Step:
        """Teacher pseudo labels on the weak view (no grad) -> student losses on labeled + strong -> weighted sum."""
        p, st, s = self.parts, self.state, self.run.cfg.ssod
        imgs_l, targets_l = next(p.labeled_stream)[:2]
        weak, strong, M, _, hidden = batch
        x_l, x_w, x_s, M = p.to_input(imgs_l), p.to_input(weak), p.to_input(strong), M.to(p.device)
        teacher = p.ema.module
        dets, raw_t = teacher_predict(teacher, x_w, s, teacher_floor(st), p.autocast_dtype)
        tau1, tau2 = st.thresholds.tau1.to(p.device), st.thresholds.tau2.to(p.device)
        targets_u, stats = assign_pseudo_labels(dets, M, tuple(x_s.shape[-2:]), tau1, tau2, s.obj_box_thres,
                                                soft_cls=s.soft_cls, score_mode=s.score,
                                                cls_thres=st.class_gate.thres)
        if self.run.cfg.aug.unlabeled_mixup > 0:
            x_s, targets_u = mix_strong_views(x_s, targets_u, self.run.cfg.aug.unlabeled_mixup)
        observe_teacher(st, dets, s)
        dense = dense_for(raw_t, M, teacher, tuple(x_w.shape[-2:]), s, self.run.cfg.loss.balance, st.dense_gains)
        ssod_iter = (epoch - (p.plan.burn or 0)) * len(self.loader()) + i
        inputs = StudentInputs(x_l, targets_l.to(p.device), x_s, targets_u, da_ramp(ssod_iter, s.da_rampup), dense)
        out = student_losses(p.train_model, p.loss_sup, st, s, inputs, p.autocast_dtype)
        items: dict[str, Any] = {**out.items, "reliable": stats["n_reliable"], "uncertain": stats["n_uncertain"]}
        if self.run.data.hidden_labels_known:
            items.update(pseudo_quality(dets, hidden, x_w.shape[-2:], tau2, s))
        if i < 3 and self.run.ctx.is_main and epoch == p.plan.burn:
            if self.run.cfg.aug.unlabeled_mixup > 0:  # the picture shows what the student sees
                strong = (x_s.float() * 255).round().clamp(0, 255).to(torch.uint8).cpu()
            plot_pseudo_batch(weak, strong, [d.cpu() for d in dets], targets_u.cpu(), self.run.data.names,
                              self.run.run_dir / f"pseudo_batch{i}.jpg", float(st.thresholds.tau2.mean()))
        return Step(out.loss, items, targets_l.shape[0], imgs_l.shape[-1])

    def end_epoch(self) -> dict[str, float]:
        return self.state.end_epoch(self.run.ctx)


def run_epoch(phase: Phase, parts: TrainParts, epoch: int, show: bool) -> dict[str, float]:
    """One epoch of ``phase``: its steps, backward and optimizer steps; returns the epoch's mean losses/counts."""
    loader = phase.loader()
    _set_loader_epoch(loader, epoch)
    nb = len(loader)
    prog = TrainProgress(epoch, parts.plan.end or 0, nb, enabled=show)
    sums: dict[str, float] = {}
    for i, batch in enumerate(loader):
        step = phase.step(batch, epoch, i)
        parts.backward_step(step.loss, epoch, i, nb)
        for k, v in step.items.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        prog.update({k: v / (i + 1) for k, v in sums.items()}, step.images, step.imgsz)
    prog.close()
    return {k: v / max(nb, 1) for k, v in sums.items()}


def hand_over_to_ssod(parts: TrainParts, run: RunInfo) -> SSODPhase:
    """End of burn-in: the student starts SSOD from the EMA weights; the EMA becomes the teacher."""
    plan, state = parts.plan, parts.ssod
    assert plan.burn is not None and plan.end is not None and state is not None
    hand_over(parts.model, parts.ema)
    decay = teacher_decay(run.cfg.ssod.teacher_decay, plan.ssod_updates())
    parts.ema.set_decay(decay, tau=0)
    if run.ctx.is_main:
        info(f"burn-in done after {plan.burn} epochs ({plan.iters_until(plan.burn)} iterations): student <- EMA "
             f"weights, teacher = EMA (decay {decay:.4f}); {plan.end - plan.burn} SSOD epochs follow")
    if run.cfg.ssod.threshold_pass and state.thresholds.kind != "fixed":
        threshold_pass(parts, state, run, plan.burn)
    return SSODPhase(parts, state, run)


def hand_over_to_polish(parts: TrainParts, run: RunInfo, restart: bool) -> None:
    """At a supervised run's plateau, before polishing: the SSOD hand-over without unlabeled images.

    The EMA then averages like the SSOD teacher (decay 0.99-0.999 by the polishing's optimizer steps, or
    ``ssod.teacher_decay``), as the lambda_u = 0 control does, unless the supervised EMA already averages
    longer: this only ever lengthens the window (``sched.polish_teacher_ema``). With ``restart``
    (``sched.polish_handover``) the student also continues from the EMA weights.
    """
    plan = parts.plan
    assert plan.burn is not None
    if restart:
        hand_over(parts.model, parts.ema)
    updates = int((plan.last_epoch() - plan.burn) * plan.nb_burn / plan.accumulate)
    decay = teacher_decay(run.cfg.ssod.teacher_decay, updates)
    kept = parts.ema.decay >= decay
    if not kept:
        parts.ema.set_decay(decay, tau=0)
    if run.ctx.is_main:
        what = (f"EMA decay kept at {parts.ema.decay:.4f} (the teacher rule's {decay:.4f} would average shorter)"
                if kept else f"EMA decay {decay:.4f}")
        start = "from the EMA weights" if restart else "from the student's weights"
        info(f"polishing {start}, {what} ({updates} optimizer steps to go)")


def threshold_pass(parts: TrainParts, state: SSODState, run: RunInfo, epoch: int) -> None:
    """First thresholds from the teacher's scores on the weak views the first SSOD epoch will see (no training).

    Without it the first SSOD epoch uses the start values ``ssod.tau1``/``ssod.tau2``, since the adaptor learns
    from the previous epoch's scores; resuming after the hand-over restores the thresholds from last.pt instead.
    """
    s, loader = run.cfg.ssod, state.unlabeled.loader
    _set_loader_epoch(loader, epoch)  # the same order and views as the first SSOD epoch
    floor = teacher_floor(state)
    for batch in loader:
        dets, _ = teacher_predict(parts.ema.module, parts.to_input(batch[0]), s, floor, parts.autocast_dtype)
        observe_teacher(state, dets, s)
    state.end_epoch(run.ctx)
    if run.ctx.is_main:
        th = state.thresholds
        info(f"first thresholds from one teacher pass over the unlabeled images: tau1 {float(th.tau1.mean()):.2f}, "
             f"tau2 {float(th.tau2.mean()):.2f} (class means)")


def _set_loader_epoch(loader: Any, epoch: int) -> None:
    """Per-epoch shuffling (DistributedSampler) and per-epoch augmentation seeds (datasets)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
