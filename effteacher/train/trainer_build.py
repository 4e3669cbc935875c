"""How a Trainer builds its parts: model, EMA and losses; loaders and thresholds; optimizer and LR schedule."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from effteacher.data.loaders import LabeledDataset, UnlabeledDataset
from effteacher.data.sampling import InfiniteLoader, build_loader
from effteacher.losses.detection import DetectionLoss
from effteacher.models.anchors import check_anchors
from effteacher.models.build import build_model
from effteacher.models.head import decode
from effteacher.ssod.class_gate import ClassGate
from effteacher.ssod.domain import DomainDiscriminator
from effteacher.ssod.teacher import ModelEMA
from effteacher.ssod.thresholds import build_thresholds
from effteacher.train.optim import build_optimizer, warmup_iters
from effteacher.train.schedule import EpochPlan, ema_schedule, lr_fn, resolve_optimizer
from effteacher.train.setup import init_from_weights, labeled_box_sizes
from effteacher.train.train_state import run_optimizer
from effteacher.utils.console import warn
from effteacher.val.evaluator import Evaluator


class BuildMixin:
    """``_build_loaders``, ``_build_model`` and ``_build_optim`` of :class:`effteacher.train.trainer.Trainer`."""

    cfg: Any
    ctx: Any

    def _build_model(self) -> None:
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
        self.dense_gains = (self.loss_unsup.gain_obj, self.loss_unsup.gain_cls)
        if s.dense_topk > 0:  # objectness and class come from the teacher's dense maps; boxes stay sparse
            self.loss_unsup = DetectionLoss(self.model, cfg.loss, cfg.imgsz, gains=(s.unsup_box, 0.0, 0.0))
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
        self.class_gate = ClassGate(nc, cfg.ssod.cls_thres, cfg.ssod.cls_thres_mode)
        self.evaluator = Evaluator(self.data.val, self.data.names, cfg.imgsz, batch=max(bs, 8), workers=cfg.workers,
                                   device=self.device) if ctx.is_main else None

    def _build_optim(self) -> None:
        cfg = self.cfg
        params = nn.ModuleDict({"model": self.model})
        if self.disc is not None:
            params["disc"] = self.disc.module if hasattr(self.disc, "module") else self.disc
        name, lr0 = resolve_optimizer(cfg.optim, self.plan.planned)
        if self.resume_ckpt is not None:  # an extended run plans more iterations: keep the optimizer it used
            name, lr0 = run_optimizer(self.resume_ckpt["train_state"]) or (name, lr0)
        self.optim_cfg = dataclasses.replace(cfg.optim, optimizer=name, lr0=lr0)
        self.optimizer = build_optimizer(params, self.optim_cfg, cfg.batch)
        self.start_epoch, self.best_fitness, self.best_epoch, self.iteration = 0, -1.0, -1, 0
        self._epoch_done = 0
        # The LR follows optimizer steps, not epochs: a burn-in epoch (one pass over L) is much shorter than
        # an SSOD epoch (one pass over U). Auto burn-in: constant LR until the hand-over, then it decays.
        self.scheduler = LambdaLR(self.optimizer, lr_lambda=lr_fn(lambda: self.plan.lr_span, self.optim_cfg))
        self.n_warmup = warmup_iters(self.optim_cfg, self.plan.nb_burn, cap=self.plan.warmup_cap())
