"""The training loop: supervised burn-in, then mean-teacher SSOD; checkpoints, logs, resume."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effteacher.config import TrainConfig, replace, save_yaml, to_dict
from effteacher.engine.setup import (
    check_model_name,
    ddp_child_argv,
    find_resume,
    init_from_weights,
    is_ddp_child,
    labeled_box_sizes,
    load_train_data,
    resumed_config,
)
from effteacher.errors import EffTeacherError

CSV_COLUMNS = [
    "epoch", "time", "train/iterations", "train/box_loss", "train/obj_loss", "train/cls_loss",
    "unsup/box_loss", "unsup/obj_loss", "unsup/cls_loss", "unsup/da_loss",
    "pseudo/reliable", "pseudo/uncertain", "pseudo/tau1", "pseudo/tau2", "pseudo/precision", "pseudo/recall",
    "pseudo/precision_agnostic",
    "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95", "lr",
]


def train(cfg: TrainConfig, nproc: int = 1) -> Path:
    """Train per ``cfg``; returns the run folder. Several GPUs (or --nproc on CPU) relaunch under DDP."""
    from effteacher.engine import dist
    from effteacher.utils.files import increment_path

    check_model_name(cfg.model)
    world = len(dist.parse_devices(cfg.device)) if cfg.device != "cpu" else nproc
    if world > 1 and not is_ddp_child():
        dist.select_device(cfg.device, cfg.batch, nproc=world)  # validate before spawning
        if cfg.resume is None:
            run_dir = increment_path(cfg.project, cfg.name, cfg.exist_ok)
            cfg = replace(cfg, name=run_dir.name, exist_ok=True)
        else:
            run_dir = find_resume(cfg.resume, cfg.project).parent.parent
        launch_cfg = run_dir / "ddp_args.yaml"
        save_yaml(cfg, launch_cfg)
        rc = dist.relaunch_ddp(ddp_child_argv(launch_cfg), world)
        if rc != 0:
            raise EffTeacherError(f"distributed training failed (exit code {rc}); see the log above")
        return run_dir
    trainer = Trainer(cfg, dist.DistContext.from_env(cfg.device))
    return trainer.fit()


class Trainer:
    """Owns the models, optimizer and loaders of one run; ``fit`` is the whole loop."""

    def __init__(self, cfg: TrainConfig, ctx: Any) -> None:
        self.cfg = cfg
        self.ctx = ctx

    # ----------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from effteacher.engine import dist
        from effteacher.engine.checkpoint import load_checkpoint
        from effteacher.utils.files import increment_path

        cfg, ctx = self.cfg, self.ctx
        self.device = dist.select_device(cfg.device if ctx.world_size == 1 else self._rank_device(), None)
        if ctx.world_size > 1:
            dist.init_distributed(ctx)
        self.resume_ckpt = None
        if cfg.resume is not None:
            path = find_resume(cfg.resume, cfg.project)
            self.resume_ckpt = load_checkpoint(path)
            cfg = self.cfg = resumed_config(self.resume_ckpt, cfg, path)
            self.run_dir = path.parent.parent
        else:
            self.run_dir = increment_path(cfg.project, cfg.name, cfg.exist_ok, mkdir=ctx.is_main)
        self.wdir = self.run_dir / "weights"
        if ctx.is_main:
            self.wdir.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, self.run_dir / "args.yaml")
        dist.seed_everything(cfg.seed, ctx.rank)
        self.data = load_train_data(cfg, self.run_dir, self.resume_ckpt is not None, ctx.is_main)
        self.ssod = not cfg.supervised
        self._build_loaders()
        self._build_model()
        self._build_optim()
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)

    def _rank_device(self) -> str:
        if self.cfg.device == "cpu":
            return "cpu"
        from effteacher.engine import dist

        return str(dist.parse_devices(self.cfg.device)[self.ctx.local_rank])

    def _build_model(self) -> None:
        from effteacher.losses.detection import DetectionLoss
        from effteacher.models.anchors import check_anchors
        from effteacher.models.build import build_model
        from effteacher.ssod.domain import DomainDiscriminator
        from effteacher.engine.schedule import EpochPlan, ema_schedule
        from effteacher.ssod.teacher import ModelEMA

        cfg, nc = self.cfg, len(self.data.names)
        model = build_model(cfg.model, nc)
        if cfg.weights and self.resume_ckpt is None:
            init_from_weights(model, cfg.weights, self.data.names)
        if self.resume_ckpt is None:
            check_anchors(model, labeled_box_sizes(self.data.labeled, cfg.imgsz), cfg.imgsz)
        self.model = model.to(self.device)
        nb_ssod = len(self.unlabeled_loader) if self.unlabeled_loader is not None else len(self.labeled_loader)
        self.plan = EpochPlan(cfg, self.ssod, len(self.labeled_loader), nb_ssod)
        self.ema = ModelEMA(self.model, *ema_schedule(self.plan.ema_window(), cfg.optim.ema_decay))
        s = cfg.ssod
        self.loss_sup = DetectionLoss(self.model, cfg.loss, cfg.imgsz)
        self.loss_unsup = DetectionLoss(self.model, cfg.loss, cfg.imgsz, gains=(s.unsup_box, s.unsup_obj, s.unsup_cls))
        self.disc = None
        if self.ssod and s.domain_adapt:
            self.disc = DomainDiscriminator(self.model.feature_channels).to(self.device)
        self.amp = self._check_amp()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.train_model: nn.Module = self.model
        if self.ctx.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            if self.disc is not None:
                self.disc = nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)

    def _check_amp(self) -> bool:
        """AMP on CUDA unless --no-amp; falls back to fp32 if autocast outputs disagree with fp32."""
        if not self.cfg.amp or self.device.type != "cuda":
            return False
        from effteacher.models.head import decode
        from effteacher.utils.console import warn

        m = self.model.eval()
        x = torch.rand(2, 3, 128, 128, device=self.device)
        with torch.no_grad():
            a = decode(m(x), m.anchors, m.stride)
            with torch.autocast("cuda"):
                b = decode(m(x), m.anchors, m.stride).float()
        m.train()
        ok = bool(torch.allclose(a[..., :4], b[..., :4], rtol=0.05, atol=0.5))
        if not ok:
            warn("AMP self-check failed (fp16 outputs differ from fp32); training in fp32")
        return ok

    def _build_loaders(self) -> None:
        from effteacher.data.loaders import InfiniteLoader, LabeledDataset, UnlabeledDataset, build_loader
        from effteacher.engine.evaluator import Evaluator
        from effteacher.ssod.thresholds import build_thresholds

        cfg, ctx = self.cfg, self.ctx
        bs = max(cfg.batch // ctx.world_size, 1)
        self.labeled_ds = LabeledDataset(self.data.labeled, cfg.imgsz, cfg.aug, augment=True, cache=cfg.cache, seed=cfg.seed)
        self.labeled_loader = build_loader(self.labeled_ds, bs, cfg.workers, True, cfg.seed, ctx.rank, ctx.world_size)
        # The SSOD phase's labeled stream drops the last partial batch (a 2-image labeled half next to
        # 16 unlabeled images would weigh the labels down); its epochs are numbered apart from burn-in's.
        full = len(self.labeled_ds) >= bs * ctx.world_size
        stream = build_loader(self.labeled_ds, bs, cfg.workers, True, cfg.seed, ctx.rank, ctx.world_size, drop_last=full)
        self.labeled_stream = InfiniteLoader(stream, epoch=10_000)
        self.unlabeled_loader = None
        if self.ssod:
            self.unlabeled_ds = UnlabeledDataset(self.data.unlabeled, cfg.imgsz, cfg.aug, seed=cfg.seed + 1)
            ubs = max(bs * cfg.ssod.unlabeled_ratio, 1)
            self.unlabeled_loader = build_loader(self.unlabeled_ds, ubs, cfg.workers, True, cfg.seed + 1, ctx.rank, ctx.world_size)
        nc = len(self.data.names)
        # ground-truth boxes per labeled image: what a dense unlabeled batch would hold (density_norm)
        self.labeled_density = max(sum(r.n for r in self.data.labeled) / max(len(self.data.labeled), 1), 1e-6)
        n_c = np.bincount(np.concatenate([r.cls for r in self.data.labeled] + [np.zeros(0, np.int64)]), minlength=nc)
        self.thresholds = build_thresholds(
            cfg.ssod.thresholds, nc=nc, tau1=cfg.ssod.tau1, tau2=cfg.ssod.tau2, n_c=torch.as_tensor(n_c),
            n_labeled=len(self.data.labeled), n_unlabeled=len(self.data.unlabeled), alpha=cfg.ssod.ea_alpha,
        )
        self.evaluator = Evaluator(self.data.val, self.data.names, cfg.imgsz, batch=max(bs, 8), workers=cfg.workers,
                                   device=self.device) if ctx.is_main else None

    def _build_optim(self) -> None:
        import dataclasses

        from torch.optim.lr_scheduler import LambdaLR

        from effteacher.engine.optim import build_optimizer, warmup_iters
        from effteacher.engine.schedule import lr_fn, resolve_optimizer

        cfg = self.cfg
        params = nn.ModuleDict({"model": self.model})
        if self.disc is not None:
            params["disc"] = self.disc.module if hasattr(self.disc, "module") else self.disc
        name, lr0 = resolve_optimizer(cfg.optim, self.plan.planned)
        self.optim_cfg = dataclasses.replace(cfg.optim, optimizer=name, lr0=lr0)
        self.optimizer = build_optimizer(params, self.optim_cfg, cfg.batch)
        self.start_epoch, self.best_fitness, self.best_epoch, self.iteration = 0, -1.0, -1, 0
        self._epoch_done = 0
        # The LR follows optimizer steps, not epochs: a burn-in epoch (one pass over L) is much shorter than
        # an SSOD epoch (one pass over U). Auto burn-in: constant LR until the hand-over, then it decays.
        self.scheduler = LambdaLR(self.optimizer, lr_lambda=lr_fn(lambda: self.plan.lr_span, self.optim_cfg))
        self.n_warmup = warmup_iters(self.optim_cfg, self.plan.nb_burn, cap=self.plan.warmup_cap())

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> Path:
        from effteacher.engine.logger import CSVLogger
        from effteacher.utils.console import info

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
        from effteacher.engine.logger import TrainProgress

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
        from effteacher.engine.logger import TrainProgress

        assert self.unlabeled_loader is not None
        _set_loader_epoch(self.unlabeled_loader, epoch)
        nb = len(self.unlabeled_loader)
        prog = TrainProgress(epoch, self.plan.end or 0, nb, enabled=self.ctx.is_main)
        sums: dict[str, float] = {}
        for i, unl in enumerate(self.unlabeled_loader):
            lab = next(self.labeled_stream)
            loss, items = self._ssod_step(lab, unl, plot=i < 3 and self.ctx.is_main and epoch == self.plan.burn, index=i)
            self._backward_step(loss, epoch, i, nb)
            self._accumulate(sums, items)
            prog.update({k: v / (i + 1) for k, v in sums.items()}, lab[1].shape[0], lab[0].shape[-1])
        prog.close()
        return {k: v / max(nb, 1) for k, v in sums.items()}

    def _ssod_step(self, lab: tuple, unl: tuple, plot: bool, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Teacher pseudo labels on the weak view (no grad) -> student losses on labeled + strong."""
        from effteacher.engine.ssod_step import observed_scores, pseudo_quality, student_losses, teacher_predict
        from effteacher.ssod.pseudo import assign_pseudo_labels

        s = self.cfg.ssod
        imgs_l, targets_l = lab[0], lab[1].to(self.device)
        weak, strong, M, _, hidden = unl
        x_l, x_w, x_s = self._to_input(imgs_l), self._to_input(weak), self._to_input(strong)
        # Scores are collected from a low fixed floor so the Epoch Adaptor sees the full distribution.
        floor = min(0.05, float(self.thresholds.tau1.min()))
        dets = teacher_predict(self.ema.module, x_w, s, floor, self.amp)
        tau1, tau2 = self.thresholds.tau1.to(self.device), self.thresholds.tau2.to(self.device)
        targets_u, stats = assign_pseudo_labels(dets, M.to(self.device), tuple(x_s.shape[-2:]), tau1, tau2,
                                                s.obj_box_thres, soft_cls=s.soft_cls, score_mode=s.score,
                                                cls_thres=s.cls_thres)
        self.thresholds.observe(*observed_scores(dets, s))
        out = student_losses(self.train_model, x_l, targets_l, x_s, targets_u, self.loss_sup, self.loss_unsup,
                             self.disc, s, self.labeled_density, self.amp, 1.0)
        items: dict[str, Any] = {**out.items, "reliable": stats["n_reliable"], "uncertain": stats["n_uncertain"]}
        if self.data.hidden_labels_known:
            items.update(pseudo_quality(dets, hidden, x_w.shape[-2:], tau2, s))
        if plot:
            self._plot_pseudo(weak, strong, dets, targets_u, index)
        return out.loss, items

    def _backward_step(self, loss: torch.Tensor, epoch: int, i: int, nb: int) -> None:
        """Backward; optimizer step every ``accumulate`` batches (and at the epoch's end); EMA update."""
        from effteacher.engine.optim import apply_warmup

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
        from effteacher.ssod.teacher import hand_over
        from effteacher.utils.console import info

        from effteacher.engine.schedule import teacher_decay

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
        from effteacher.engine import dist

        used = {"tau1": float(self.thresholds.tau1.mean()), "tau2": float(self.thresholds.tau2.mean())}
        gather = (lambda t: dist.all_gather_tensor(t, self.ctx)) if self.ctx.world_size > 1 else None
        self.thresholds.end_epoch(all_gather=gather)
        return used

    def _end_epoch(self, epoch: int, means: dict[str, float], seconds: float, csv: Any, ssod_epoch: bool) -> bool:
        """Validate the EMA/teacher, decide an auto burn-in, log, save last.pt and best.pt; True stops the run."""
        from effteacher.engine.logger import print_threshold_table
        from effteacher.engine.schedule import burn_in_done, val_every_auto

        cfg = self.cfg
        plan = self.plan
        auto = plan.burn is None
        every = val_every_auto(cfg.sched, plan.nb_burn) if auto else cfg.val_every
        last = epoch + 1 >= plan.last_epoch()
        result = None
        if ssod_epoch or (epoch + 1) % every == 0 or last or epoch + 1 == plan.burn:
            result = self.evaluator.run(self.ema.module, save_dir=None, plots=False)
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
        row = {
            "epoch": epoch + 1, "time": round(seconds, 2), "train/iterations": self.iteration,
            "train/box_loss": means.get("box", 0.0), "train/obj_loss": means.get("obj", 0.0),
            "train/cls_loss": means.get("cls", 0.0), "unsup/box_loss": means.get("ubox", 0.0),
            "unsup/obj_loss": means.get("uobj", 0.0), "unsup/cls_loss": means.get("ucls", 0.0),
            "unsup/da_loss": means.get("da", 0.0), "pseudo/reliable": means.get("reliable", 0.0),
            "pseudo/uncertain": means.get("uncertain", 0.0), "pseudo/tau1": means.get("tau1", 0.0),
            "pseudo/tau2": means.get("tau2", 0.0), "pseudo/precision": means.get("precision", 0.0),
            "pseudo/recall": means.get("recall", 0.0), "pseudo/precision_agnostic": means.get("precision_agnostic", 0.0),
            **{k: metrics.get(k, 0.0) for k in CSV_COLUMNS if k.startswith("metrics/")},
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        csv.log(row)
        if ssod_epoch:
            print_threshold_table(self.thresholds.tau1, self.thresholds.tau2, self.data.names)
            self._warn_pseudo(means)
        self._save(epoch, metrics, fitness == self.best_fitness and result is not None)
        patience_out = not auto and epoch - self.best_epoch >= cfg.patience
        return stop or patience_out

    def _decided(self, burn: int, reason: str) -> None:
        """The auto burn-in ends after ``burn`` epochs: fix the plan and say why."""
        from effteacher.utils.console import info

        self.plan.reason = reason
        self.plan.set_burn(burn)
        if self.ctx.is_main:
            what = "hand-over to SSOD" if self.ssod else "supervised training done"
            info(f"{what} after epoch {burn} ({self.iteration} iterations): {reason}")

    def _sync_decisions(self, stop: bool) -> bool:
        """Share rank 0's stop flag and burn-in decision with every DDP rank."""
        if self.ctx.world_size == 1:
            return stop
        from effteacher.engine import dist

        stop, burn = dist.broadcast_object((stop, self.plan.burn), self.ctx)
        if burn is not None and self.plan.end is None:
            self.plan.set_burn(burn)
        return bool(stop)

    def _warn_pseudo(self, means: dict[str, float]) -> None:
        from effteacher.utils.console import warn

        per_img_l = sum(r.n for r in self.data.labeled) / max(len(self.data.labeled), 1)
        rel = means.get("reliable", 0.0) + means.get("uncertain", 0.0)
        if rel == 0.0:
            warn("no pseudo labels this epoch: the teacher is not confident yet; train longer (--burn-in) "
                 "or lower the thresholds (--thresholds fixed with cfg ssod.tau1/tau2)")
        elif rel > 5 * max(per_img_l, 1.0):
            warn(f"{rel:.1f} pseudo boxes per image vs {per_img_l:.1f} labeled: thresholds look too low; "
                 "raise cfg ssod.tau1/tau2 or use --thresholds adaptor")

    # ------------------------------------------------------------------------- checkpoints
    def _which(self) -> str:
        done = self.plan.burn is not None and self._epoch_done >= self.plan.burn
        return "teacher" if self.ssod and done else "ema"

    def _save(self, epoch: int, metrics: dict[str, float], is_best: bool) -> None:
        from effteacher.engine.checkpoint import make_checkpoint, save_checkpoint

        self._epoch_done = epoch + 1
        names, cfg = self.data.names, self.cfg
        deploy = make_checkpoint(self.ema.module, names, cfg.imgsz, self._which(), epoch + 1, metrics, to_dict(cfg))
        state = {
            "student": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "thresholds": self.thresholds.state_dict(),
            "disc": (self.disc.module if hasattr(self.disc, "module") else self.disc).state_dict() if self.disc is not None else None,
            "epoch": epoch + 1, "best_fitness": self.best_fitness, "best_epoch": self.best_epoch,
            "iteration": self.iteration, "rng": _rng_state(), "labeled_stream": self.labeled_stream.state_dict(),
            "burn_epochs": self.plan.burn, "plateau": [self.plan.plateau.best, self.plan.plateau.best_step],
            "handover_reason": self.plan.reason,
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
        if self.disc is not None and st.get("disc") is not None:
            (self.disc.module if hasattr(self.disc, "module") else self.disc).load_state_dict(st["disc"])
        self.start_epoch, self.best_fitness, self.best_epoch = st["epoch"], st["best_fitness"], st["best_epoch"]
        self.iteration = st["iteration"]
        self.labeled_stream.load_state_dict(st["labeled_stream"])
        self._epoch_done = st["epoch"]
        self.scheduler.base_lrs = [self.optim_cfg.lr0] * len(self.scheduler.base_lrs)
        self.plan.plateau.best, self.plan.plateau.best_step = st.get("plateau", [-1.0, 0])
        self.plan.reason = st.get("handover_reason", "")
        if st.get("burn_epochs") is not None:  # the EMA's own state holds its (teacher) decay
            self.plan.set_burn(int(st["burn_epochs"]))
        _set_rng_state(st["rng"])
        if self.ctx.is_main:
            from effteacher.utils.console import info

            of = f" of {self.plan.end}" if self.plan.end else " (burn-in until validation plateaus)"
            info(f"resuming {self.run_dir} from epoch {self.start_epoch + 1}{of}")

    # ------------------------------------------------------------------------- small helpers
    def _to_input(self, imgs: torch.Tensor) -> torch.Tensor:
        return imgs.to(self.device, non_blocking=True).float().div_(255.0)

    @staticmethod
    def _accumulate(sums: dict[str, float], items: dict[str, Any]) -> None:
        for k, v in items.items():
            sums[k] = sums.get(k, 0.0) + float(v)

    def _plot_labels(self) -> None:
        from effteacher.utils.plots import plot_labels

        recs = self.data.labeled
        cls = np.concatenate([r.cls for r in recs] + [np.zeros(0, np.int64)])
        boxes = np.concatenate([r.boxes for r in recs] + [np.zeros((0, 4), np.float32)])
        plot_labels(cls, boxes, self.data.names, self.run_dir / "labels.jpg")

    def _plot_batch(self, imgs: torch.Tensor, targets: torch.Tensor, paths: Any, i: int) -> None:
        from effteacher.utils.plots import plot_images

        plot_images(imgs, targets.cpu(), paths, self.data.names, self.run_dir / f"train_batch{i}.jpg")

    def _plot_pseudo(self, weak: torch.Tensor, strong: torch.Tensor, dets: list, targets_u: torch.Tensor, i: int) -> None:
        from effteacher.utils.plots import plot_pseudo_batch

        plot_pseudo_batch(weak, strong, [d.cpu() for d in dets], targets_u.cpu(), self.data.names,
                          self.run_dir / f"pseudo_batch{i}.jpg", float(self.thresholds.tau2.mean()))

    def _finish(self) -> None:
        """Final validation of best.pt with plots, and results.png."""
        from effteacher.engine.checkpoint import load_checkpoint, model_from_checkpoint
        from effteacher.utils.plots import plot_results

        plot_results(self.run_dir / "results.csv")
        best = self.wdir / "best.pt"
        if best.exists():
            model = model_from_checkpoint(load_checkpoint(best), self.device)
            self.evaluator.run(model, save_dir=self.run_dir, plots=True)

    def _cleanup(self) -> None:
        if self.ctx.world_size > 1:
            from effteacher.engine import dist

            dist.cleanup()


def _set_loader_epoch(loader: Any, epoch: int) -> None:
    """Per-epoch shuffling (DistributedSampler) and per-epoch augmentation seeds (datasets)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor(np.random.get_state()[1].astype(np.int64)),
        "python": torch.tensor([random.getrandbits(31) for _ in range(4)]),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.seed(int(state["numpy"][0]) % (2**32))
    random.seed(int(state["python"].sum()))

