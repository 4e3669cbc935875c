"""The training loop: supervised burn-in, then mean-teacher SSOD; checkpoints, logs, resume."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from effteacher.config import TrainConfig, replace, save_yaml
from effteacher.errors import EffTeacherError
from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint
from effteacher.options import check_train_config
from effteacher.train.checkpointer import Checkpointer
from effteacher.train.epoch_end import EpochEnd
from effteacher.train.parts import build_parts
from effteacher.train.phases import (
    Phase,
    RunInfo,
    SSODPhase,
    SupervisedPhase,
    hand_over_to_polish,
    hand_over_to_ssod,
    run_epoch,
)
from effteacher.train.results_csv import RESULTS_COLUMNS as CSV_COLUMNS
from effteacher.train.results_csv import CSVLogger
from effteacher.train.run_folder import (
    ddp_child_argv,
    discard_if_failed,
    find_resume,
    finished_run,
    new_run_dir,
    preflight,
    resolve_run,
)
from effteacher.train.summary import handover_step, report
from effteacher.train.tb_logger import TensorBoardLogger
from effteacher.train.train_data import TrainData, load_train_data
from effteacher.utils import dist
from effteacher.utils.console import info
from effteacher.utils.dist import DistContext
from effteacher.utils.files import RunLock
from effteacher.utils.plots import plot_labels, plot_results


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
        # a failed start leaves no empty run folder; the TensorBoard writer is closed first (end of run or failure)
        with discard_if_failed(lambda: trainer.created_dir), closing(trainer):
            return trainer.fit()
    finally:
        if trainer.run_lock is not None:
            trainer.run_lock.release()


class Trainer:
    """One run: its folder, data and parts; ``fit`` is the whole loop."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.created_dir: Path | None = None  # the run folder, when this run created it
        self.run_lock: Any = None  # rank 0's lock on the run folder, held until the run ends
        self.tb: TensorBoardLogger | None = None  # rank 0's TensorBoard writer, closed when the run ends

    def setup(self) -> None:
        """Device, run folder, data, parts; on resume, the state of last.pt."""
        ctx = self.ctx
        device = ctx.device if ctx.distributed else dist.select_device(self.cfg.device)
        if ctx.world_size > 1:
            dist.init_distributed(ctx)
        run = resolve_run(self.cfg, ctx)  # rank 0 picks the folder (or last.pt) for every rank
        self.run_lock = run.lock
        cfg = self.cfg = run.cfg
        self.run_dir, self.wdir = run.run_dir, run.run_dir / "weights"
        self.created_dir = self.run_dir if run.created and ctx.is_main else None
        dist.seed_everything(cfg.seed, ctx.rank)
        self.data = load_train_data(cfg, self.run_dir, run.resume_ckpt is not None, ctx)
        self.parts = build_parts(cfg, ctx, self.data, device, run.resume_ckpt)
        self.checkpointer = Checkpointer(self.wdir, cfg, self.data.names, self.parts)
        self.run_info = RunInfo(cfg, self.data, self.run_dir, ctx)
        self.burn_in: Phase = SupervisedPhase(self.parts, self.run_info)
        self.ssod_phase: Phase | None = None
        if run.resume_ckpt is not None:
            self.checkpointer.restore(run.resume_ckpt)
            if ctx.is_main:
                plan = self.parts.plan
                of = f" of {plan.end}" if plan.end else " (burn-in until validation plateaus)"
                info(f"resuming {self.run_dir} from epoch {self.parts.progress.start_epoch + 1}{of}")

    def fit(self) -> Path:
        self.setup()
        cfg, ctx, parts, plan = self.cfg, self.ctx, self.parts, self.parts.plan
        csv = CSVLogger(self.run_dir / "results.csv", CSV_COLUMNS) if ctx.is_main else None
        if csv is not None:
            csv.truncate(parts.progress.start_epoch)  # drops rows past last.pt (and an old run's rows with --exist-ok)
            if parts.progress.start_epoch == 0:
                plot_data_labels(self.data, self.run_dir / "labels.jpg")
        if csv is not None and cfg.tensorboard:
            self.tb = TensorBoardLogger(self.run_dir, parts.scheduler.last_epoch)  # appends after a resume
        end_epoch = EpochEnd(cfg, parts, self.data, csv, self.checkpointer, self.tb) if csv is not None else None
        epoch = parts.progress.start_epoch
        while epoch < plan.last_epoch():
            t0 = time.time()
            phase = self.phase_for(epoch)
            if cfg.aug.close_mosaic and plan.end and epoch >= plan.end - cfg.aug.close_mosaic:
                parts.labeled_ds.set_mosaic(False)
            means = run_epoch(phase, parts, epoch, show=ctx.is_main)
            means.update(phase.end_epoch())
            means = dist.mean_over_ranks(means, ctx)  # results.csv reports every rank's batches
            stop = end_epoch(epoch, means, time.time() - t0, phase.ssod) if end_epoch is not None else False
            if self._sync_decisions(stop):
                break
            epoch += 1
        if ctx.is_main:
            self._finish()
            info(f"Results saved to [bold]{self.run_dir}[/bold]; best weights: {self.wdir / 'best.pt'}")
        self._cleanup()
        return self.run_dir

    def phase_for(self, epoch: int) -> Phase:
        """Burn-in (supervised) epochs until the plan's hand-over, SSOD epochs after it; the swap hands over."""
        plan = self.parts.plan
        if self.parts.ssod is None or plan.in_burn_in(epoch):
            sched = self.cfg.sched
            if epoch == plan.burn and plan.polishing() and (sched.polish_handover or sched.polish_teacher_ema):
                # once: a resume past it restores the EMA's state
                hand_over_to_polish(self.parts, self.run_info, restart=sched.polish_handover)
            return self.burn_in
        if self.ssod_phase is None:
            if epoch == self.parts.plan.burn:
                self.ssod_phase = hand_over_to_ssod(self.parts, self.run_info)
                if self.ctx.is_main:
                    self._summary("hand-over")
            else:  # resumed after the hand-over: the EMA in last.pt already is the teacher
                self.ssod_phase = SSODPhase(self.parts, self.parts.ssod, self.run_info)
        return self.ssod_phase

    def _sync_decisions(self, stop: bool) -> bool:
        """Share rank 0's stop flag and burn-in decision with every DDP rank."""
        if self.ctx.world_size == 1:
            return stop
        plan = self.parts.plan
        stop, burn = dist.broadcast_object((stop, plan.burn), self.ctx)
        if burn is not None and plan.end is None:
            plan.set_burn(burn)
        return bool(stop)

    def _finish(self) -> None:
        """results.png, the final validation of best.pt with plots, and the run summary."""
        rows = CSVLogger(self.run_dir / "results.csv", CSV_COLUMNS).rows()
        plot_results(self.run_dir / "results.csv", handover_step(rows))
        best = self.wdir / "best.pt"
        if best.exists() and self.parts.evaluator is not None:
            model = model_from_checkpoint(load_checkpoint(best), self.parts.device)
            self.parts.evaluator.run(model, save_dir=self.run_dir, plots=True)
        self._summary("end", rows)

    def _summary(self, stage: str, rows: list[dict[str, Any]] | None = None) -> None:
        """The summary block and summary.json (rank 0): at the hand-over and at the end."""
        if rows is None:
            rows = CSVLogger(self.run_dir / "results.csv", CSV_COLUMNS).rows()
        if stage == "hand-over" and not rows:
            return  # --burn-in 0: no burn-in to sum up
        report(self.run_dir, rows, len(self.data.labeled), len(self.data.unlabeled), self.parts.ssod is not None,
               stage)

    def close(self) -> None:
        """Close the TensorBoard writer (before a failed start's run folder is removed)."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def _cleanup(self) -> None:
        if self.ctx.world_size > 1:
            # leave together: a rank that tears down its gloo group while rank 0 is still in _finish aborts
            dist.barrier(self.ctx)
            dist.cleanup()


def plot_data_labels(data: TrainData, path: Path) -> None:
    """labels.jpg: the labeled set's class counts and box positions/sizes."""
    recs = data.labeled
    cls = np.concatenate([r.cls for r in recs] + [np.zeros(0, np.int64)])
    boxes = np.concatenate([r.boxes for r in recs] + [np.zeros((0, 4), np.float32)])
    plot_labels(cls, boxes, data.names, path)
