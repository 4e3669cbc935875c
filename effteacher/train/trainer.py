"""The training loop: supervised burn-in, then mean-teacher SSOD; checkpoints, logs, resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effteacher.config import TrainConfig, replace, save_yaml
from effteacher.errors import EffTeacherError
from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint
from effteacher.options import check_train_config
from effteacher.ssod.domain import da_ramp
from effteacher.ssod.pseudo import assign_pseudo_labels
from effteacher.ssod.teacher import hand_over
from effteacher.train.optim import apply_warmup
from effteacher.train.results_csv import RESULTS_COLUMNS as CSV_COLUMNS
from effteacher.train.results_csv import CSVLogger, epoch_summary, results_row
from effteacher.train.schedule import burn_in_done, patience_out, teacher_decay, val_every_auto
from effteacher.train.setup import (
    ddp_child_argv,
    discard_if_failed,
    find_resume,
    finished_run,
    load_train_data,
    new_run_dir,
    preflight,
    resolve_run,
)
from effteacher.train.ssod_step import dense_for, observed_scores, pseudo_quality, student_losses, teacher_predict
from effteacher.train.train_state import StateMixin
from effteacher.train.trainer_build import BuildMixin
from effteacher.utils import dist
from effteacher.utils.console import info, warn
from effteacher.utils.files import RunLock
from effteacher.utils.plots import plot_images, plot_labels, plot_pseudo_batch, plot_results
from effteacher.utils.progress import TrainProgress, print_threshold_table


def train(cfg: TrainConfig, nproc: int = 1) -> Path:
    """Train per ``cfg``; returns the run folder. Several GPUs (or --nproc on CPU) relaunch under DDP."""
    cfg = check_train_config(cfg, nproc)  # options, then the data and weights: all before a run folder exists
    if not dist.launched_by_torchrun():  # a DDP/torchrun worker: its launcher checked, rank 0 resolves the run
        preflight(cfg)
        if (done := finished_run(cfg)) is not None:
            return done
    world = len(dist.parse_devices(cfg.device)) if cfg.device != "cpu" else nproc
    if world > 1 and not dist.launched_by_torchrun():
        dist.select_device(cfg.device, cfg.batch, nproc=world)  # validate before spawning
        created = None
        if cfg.resume is None:
            run_dir, new = new_run_dir(cfg.project, cfg.name, cfg.exist_ok)
            created = run_dir if new else None
            cfg = replace(cfg, name=run_dir.name, exist_ok=True)
        else:
            run_dir = find_resume(cfg.resume, cfg.project).parent.parent
        with discard_if_failed(lambda: created):
            RunLock(run_dir).acquire().release()  # refuse a folder another run holds (rank 0 then locks it)
            launch_cfg = run_dir / "ddp_args.yaml"
            save_yaml(cfg, launch_cfg)
            rc = dist.relaunch_ddp(ddp_child_argv(launch_cfg), world)
            if rc != 0:
                raise EffTeacherError(f"distributed training failed (exit code {rc}); see the log above")
        return run_dir
    trainer = Trainer(cfg, dist.DistContext.from_env(cfg.device))
    try:
        with discard_if_failed(lambda: trainer.created_dir):  # a failed start leaves no empty run folder
            return trainer.fit()
    finally:
        if trainer.run_lock is not None:
            trainer.run_lock.release()


class Trainer(BuildMixin, StateMixin):
    """Owns the models, optimizer and loaders of one run; ``fit`` is the whole loop."""

    def __init__(self, cfg: TrainConfig, ctx: Any) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.created_dir: Path | None = None  # the run folder, when this run created it
        self.run_lock: Any = None  # rank 0's lock on the run folder, held until the run ends

    # ----------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        ctx = self.ctx
        self.device = ctx.device if ctx.distributed else dist.select_device(self.cfg.device)
        if ctx.world_size > 1:
            dist.init_distributed(ctx)
        run = resolve_run(self.cfg, ctx)  # rank 0 picks the folder (or last.pt) for every rank
        self.run_lock = run.lock
        cfg = self.cfg = run.cfg
        self.run_dir, self.resume_ckpt, self.wdir = run.run_dir, run.resume_ckpt, run.run_dir / "weights"
        self.created_dir = self.run_dir if run.created and ctx.is_main else None
        dist.seed_everything(cfg.seed, ctx.rank)
        self.data = load_train_data(cfg, self.run_dir, self.resume_ckpt is not None, ctx)
        self.ssod = not cfg.supervised
        self._build_loaders()
        self._build_model()
        self._build_optim()
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> Path:
        self.setup()
        cfg, ctx = self.cfg, self.ctx
        csv = CSVLogger(self.run_dir / "results.csv", CSV_COLUMNS) if ctx.is_main else None
        if csv is not None:
            csv.truncate(self.start_epoch)  # drops rows past last.pt (and an old run's rows with --exist-ok)
        if ctx.is_main and self.start_epoch == 0:
            self._plot_labels()
        epoch = self.start_epoch
        while epoch < self.plan.last_epoch():
            t0 = time.time()
            ssod_epoch = self.ssod and not self.plan.in_burn_in(epoch)
            if ssod_epoch and epoch == self.plan.burn:
                self._hand_over()
            if cfg.aug.close_mosaic and self.plan.end and epoch >= self.plan.end - cfg.aug.close_mosaic:
                self.labeled_ds.set_mosaic(False)
            means = self._ssod_epoch(epoch) if ssod_epoch else self._supervised_epoch(epoch)
            if ssod_epoch:
                means.update(self._end_threshold_epoch())
            means = dist.mean_over_ranks(means, ctx)  # results.csv reports every rank's batches
            stop = False
            if ctx.is_main:
                stop = self._end_epoch(epoch, means, time.time() - t0, csv, ssod_epoch)
            if self._sync_decisions(stop):
                break
            epoch += 1
        if ctx.is_main:
            self._finish()
            info(f"Results saved to [bold]{self.run_dir}[/bold]; best weights: {self.wdir / 'best.pt'}")
        self._cleanup()
        return self.run_dir

    def _supervised_epoch(self, epoch: int) -> dict[str, float]:
        _set_loader_epoch(self.labeled_loader, epoch)
        nb = len(self.labeled_loader)
        prog = TrainProgress(epoch, self.plan.end or 0, nb, enabled=self.ctx.is_main)
        sums: dict[str, float] = {}
        for i, (imgs, targets, paths, _) in enumerate(self.labeled_loader):
            x, targets = self._to_input(imgs), targets.to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                raw = self.train_model(x)
                loss, items = self.loss_sup(raw, targets)
            self._backward_step(loss, epoch, i, nb)
            self._accumulate(sums, {"box": items["box"], "obj": items["obj"], "cls": items["cls"]})
            prog.update({k: v / (i + 1) for k, v in sums.items()}, targets.shape[0], x.shape[-1])
            if epoch == self.start_epoch and i < 3 and self.ctx.is_main:
                self._plot_batch(imgs, targets, paths, i)
        prog.close()
        return {k: v / max(nb, 1) for k, v in sums.items()}

    def _ssod_epoch(self, epoch: int) -> dict[str, float]:
        assert self.unlabeled_loader is not None
        _set_loader_epoch(self.unlabeled_loader, epoch)
        nb = len(self.unlabeled_loader)
        prog = TrainProgress(epoch, self.plan.end or 0, nb, enabled=self.ctx.is_main)
        sums: dict[str, float] = {}
        for i, unl in enumerate(self.unlabeled_loader):
            lab = next(self.labeled_stream)
            loss, items = self._ssod_step(lab, unl, plot=i < 3 and self.ctx.is_main and epoch == self.plan.burn, index=i,
                                          ssod_iter=(epoch - (self.plan.burn or 0)) * nb + i)
            self._backward_step(loss, epoch, i, nb)
            self._accumulate(sums, items)
            prog.update({k: v / (i + 1) for k, v in sums.items()}, lab[1].shape[0], lab[0].shape[-1])
        prog.close()
        return {k: v / max(nb, 1) for k, v in sums.items()}

    def _ssod_step(self, lab: tuple, unl: tuple, plot: bool, index: int,
                   ssod_iter: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Teacher pseudo labels on the weak view (no grad) -> student losses on labeled + strong."""
        s = self.cfg.ssod
        imgs_l, targets_l = lab[0], lab[1].to(self.device)
        weak, strong, M, _, hidden = unl
        x_l, x_w, x_s = self._to_input(imgs_l), self._to_input(weak), self._to_input(strong)
        # Scores are collected from a low fixed floor so the Epoch Adaptor sees the full distribution.
        floor = min(0.05, float(self.thresholds.tau1.min()))
        dets, raw_t = teacher_predict(self.ema.module, x_w, s, floor, self.amp)
        tau1, tau2 = self.thresholds.tau1.to(self.device), self.thresholds.tau2.to(self.device)
        targets_u, stats = assign_pseudo_labels(dets, M.to(self.device), tuple(x_s.shape[-2:]), tau1, tau2,
                                                s.obj_box_thres, soft_cls=s.soft_cls, score_mode=s.score,
                                                cls_thres=self.class_gate.thres)
        self.thresholds.observe(*observed_scores(dets, s))
        self.class_gate.observe(dets)
        dense = dense_for(raw_t, M.to(self.device), self.ema.module, tuple(x_w.shape[-2:]), s,
                          self.cfg.loss.balance, self.dense_gains)
        out = student_losses(self.train_model, x_l, targets_l, x_s, targets_u, self.loss_sup, self.loss_unsup,
                             self.disc, s, self.labeled_density, self.amp, da_ramp(ssod_iter, s.da_rampup), dense)
        items: dict[str, Any] = {**out.items, "reliable": stats["n_reliable"], "uncertain": stats["n_uncertain"]}
        if self.data.hidden_labels_known:
            items.update(pseudo_quality(dets, hidden, x_w.shape[-2:], tau2, s))
        if plot:
            self._plot_pseudo(weak, strong, dets, targets_u, index)
        return out.loss, items

    def _backward_step(self, loss: torch.Tensor, epoch: int, i: int, nb: int) -> None:
        """Backward; optimizer step every ``accumulate`` batches (and at the epoch's end); EMA update."""
        if not torch.isfinite(loss):
            raise EffTeacherError(
                f"non-finite loss at epoch {epoch + 1}, batch {i + 1}; lower --lr0 (cfg optim.lr0) or turn off AMP"
            )
        self.iteration += 1
        if self.iteration <= self.n_warmup:
            apply_warmup(self.optimizer, self.iteration, self.n_warmup, self.scheduler.lr_lambdas[0](self.scheduler.last_epoch),
                         self.optim_cfg)
        self.scaler.scale(loss).backward()
        if self.iteration % self.plan.accumulate == 0 or i == nb - 1:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"] + self.optimizer.param_groups[1]["params"]
                                           + self.optimizer.param_groups[2]["params"], max_norm=10.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.model)
            self.scheduler.step()  # per optimizer step

    def _hand_over(self) -> None:
        """End of burn-in: the student starts SSOD from the EMA weights; the EMA becomes the teacher."""
        p = self.plan
        assert p.burn is not None and p.end is not None
        hand_over(self.model, self.ema)
        decay = teacher_decay(self.cfg.ssod.teacher_decay, p.ssod_updates())
        self.ema.set_decay(decay, tau=0)
        if self.ctx.is_main:
            info(f"burn-in done after {p.burn} epochs ({p.iters_until(p.burn)} iterations): student <- EMA weights, "
                 f"teacher = EMA (decay {decay:.4f}); {p.end - p.burn} SSOD epochs follow")

    def _end_threshold_epoch(self) -> dict[str, float]:
        """Recompute per-class thresholds from this epoch's teacher scores; returns the means used."""
        used = {"tau1": float(self.thresholds.tau1.mean()), "tau2": float(self.thresholds.tau2.mean())}
        gather = (lambda t: dist.all_gather_tensor(t, self.ctx)) if self.ctx.world_size > 1 else None
        self.thresholds.end_epoch(all_gather=gather)
        self.class_gate.end_epoch(all_gather=gather)
        return used

    def _end_epoch(self, epoch: int, means: dict[str, float], seconds: float, csv: Any, ssod_epoch: bool) -> bool:
        """Validate the EMA/teacher, decide an auto burn-in, log, save last.pt and best.pt; True stops the run."""
        cfg = self.cfg
        plan = self.plan
        auto = plan.burn is None
        every = val_every_auto(cfg.sched, plan.nb_burn) if auto else cfg.val_every
        last = epoch + 1 >= plan.last_epoch()
        result = None
        if ssod_epoch or (epoch + 1) % every == 0 or last or epoch + 1 == plan.burn:
            result = self.evaluator.run(self.ema.module, save_dir=None, plots=False, verbose=cfg.verbose)
        metrics = result.as_dict() if result is not None else {}
        fitness = result.fitness() if result is not None else -1.0
        if fitness > self.best_fitness:
            self.best_fitness, self.best_epoch = fitness, epoch
        stop = False
        if auto and result is not None:
            plan.plateau.update(fitness, self.iteration)
            reason = burn_in_done(plan.plateau, self.iteration, cfg.sched, last_epoch=last)
            if reason:
                self._decided(epoch + 1, reason)
                stop = not self.ssod
        row = results_row(epoch + 1, seconds, self.iteration, self.scheduler.last_epoch, means, metrics,
                          self.optimizer.param_groups[0]["lr"], domain_adapt=self.disc is not None)
        csv.log(row)
        for line in epoch_summary(row):
            info(line)
        handover = plan.burn if self.ssod else None
        early = not auto and patience_out(epoch, self.best_epoch, cfg.patience, handover)
        if early and self.ctx.is_main:
            info(f"stopping early: no better validation in the last {cfg.patience} epochs (--patience; best at "
                 f"epoch {self.best_epoch + 1})")
        finished = stop or early or epoch + 1 >= plan.last_epoch()
        if ssod_epoch:
            if cfg.verbose or finished:
                print_threshold_table(self.thresholds.tau1, self.thresholds.tau2, self.data.names)
            self._warn_pseudo(means)
        self._save(epoch, metrics, fitness == self.best_fitness and result is not None, finished)
        return stop or early

    def _decided(self, burn: int, reason: str) -> None:
        """The auto burn-in ends after ``burn`` epochs: fix the plan and say why."""
        self.plan.reason = reason
        self.plan.set_burn(burn)
        if self.ctx.is_main:
            what = "hand-over to SSOD" if self.ssod else "supervised training done"
            info(f"{what} after epoch {burn} ({self.iteration} iterations): {reason}")

    def _sync_decisions(self, stop: bool) -> bool:
        """Share rank 0's stop flag and burn-in decision with every DDP rank."""
        if self.ctx.world_size == 1:
            return stop

        stop, burn = dist.broadcast_object((stop, self.plan.burn), self.ctx)
        if burn is not None and self.plan.end is None:
            self.plan.set_burn(burn)
        return bool(stop)

    def _warn_pseudo(self, means: dict[str, float]) -> None:
        per_img_l = sum(r.n for r in self.data.labeled) / max(len(self.data.labeled), 1)
        rel = means.get("reliable", 0.0) + means.get("uncertain", 0.0)
        if rel == 0.0:
            warn("no pseudo labels this epoch: the teacher is not confident yet; train longer (--burn-in) "
                 "or lower the thresholds (--thresholds fixed with cfg ssod.tau1/tau2)")
        elif rel > 5 * max(per_img_l, 1.0):
            warn(f"{rel:.1f} pseudo boxes per image vs {per_img_l:.1f} labeled: thresholds look too low; "
                 "raise cfg ssod.tau1/tau2 or use --thresholds adaptor")

    # ------------------------------------------------------------------------- small helpers
    def _to_input(self, imgs: torch.Tensor) -> torch.Tensor:
        return imgs.to(self.device, non_blocking=True).float().div_(255.0)

    @staticmethod
    def _accumulate(sums: dict[str, float], items: dict[str, Any]) -> None:
        for k, v in items.items():
            sums[k] = sums.get(k, 0.0) + float(v)

    def _plot_labels(self) -> None:
        recs = self.data.labeled
        cls = np.concatenate([r.cls for r in recs] + [np.zeros(0, np.int64)])
        boxes = np.concatenate([r.boxes for r in recs] + [np.zeros((0, 4), np.float32)])
        plot_labels(cls, boxes, self.data.names, self.run_dir / "labels.jpg")

    def _plot_batch(self, imgs: torch.Tensor, targets: torch.Tensor, paths: Any, i: int) -> None:
        plot_images(imgs, targets.cpu(), paths, self.data.names, self.run_dir / f"train_batch{i}.jpg")

    def _plot_pseudo(self, weak: torch.Tensor, strong: torch.Tensor, dets: list, targets_u: torch.Tensor, i: int) -> None:
        plot_pseudo_batch(weak, strong, [d.cpu() for d in dets], targets_u.cpu(), self.data.names,
                          self.run_dir / f"pseudo_batch{i}.jpg", float(self.thresholds.tau2.mean()))

    def _finish(self) -> None:
        """Final validation of best.pt with plots, and results.png."""
        plot_results(self.run_dir / "results.csv")
        best = self.wdir / "best.pt"
        if best.exists():
            model = model_from_checkpoint(load_checkpoint(best), self.device)
            self.evaluator.run(model, save_dir=self.run_dir, plots=True)

    def _cleanup(self) -> None:
        if self.ctx.world_size > 1:
            # leave together: a rank that tears down its gloo group while rank 0 is still in _finish aborts
            dist.barrier(self.ctx)
            dist.cleanup()


def _set_loader_epoch(loader: Any, epoch: int) -> None:
    """Per-epoch shuffling (DistributedSampler) and per-epoch augmentation seeds (datasets)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
