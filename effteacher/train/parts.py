"""The parts of one training run, built once: model, EMA, losses, optimizer, LR schedule, loaders, evaluator, plan."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ContextManager

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from effteacher.config import OptimConfig, TrainConfig
from effteacher.data.loaders import LabeledDataset
from effteacher.data.sampling import InfiniteLoader, build_loader
from effteacher.errors import EffTeacherError
from effteacher.losses.detection import DetectionLoss
from effteacher.models.anchors import check_anchors
from effteacher.models.build import build_model
from effteacher.models.head import decode
from effteacher.models.pretrained import init_from_weights
from effteacher.ssod.teacher import ModelEMA
from effteacher.train.optim import (
    apply_warmup,
    build_optimizer,
    run_optimizer,
    warmup_iters,
)
from effteacher.train.precision import autocast, cpu_autocast_dtype
from effteacher.train.schedule import EpochPlan, ema_schedule, lr_fn, resolve_optimizer
from effteacher.train.ssod_state import SSODState, build_ssod_state, build_unlabeled
from effteacher.train.train_data import TrainData, labeled_box_sizes
from effteacher.utils.console import warn
from effteacher.utils.dist import DistContext
from effteacher.val.evaluator import Evaluator


@dataclass
class RunProgress:
    """Where the run stands: iterations done, the first epoch of this process, the best validation so far."""

    iteration: int = 0
    start_epoch: int = 0
    best_fitness: float = -1.0
    best_epoch: int = -1


@dataclass
class TrainParts:
    """Everything a run trains with. ``ssod`` is None for a supervised run."""

    device: torch.device
    amp: bool  # CUDA fp16 autocast with the GradScaler
    autocast_dtype: torch.dtype | None  # the training forward's autocast dtype (fp16 with amp, CPU bf16); None = fp32
    channels_last: bool
    plan: EpochPlan
    model: nn.Module  # the student
    ema: ModelEMA  # validated each epoch; the teacher after the hand-over
    train_model: nn.Module  # the student, DDP-wrapped under DDP
    loss_sup: DetectionLoss
    optimizer: torch.optim.Optimizer
    optim_cfg: OptimConfig  # with 'auto' optimizer and lr0 resolved
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    n_warmup: int
    labeled_ds: LabeledDataset
    labeled_loader: DataLoader  # burn-in epochs
    labeled_stream: InfiniteLoader  # the labeled half of SSOD batches
    evaluator: Evaluator | None  # rank 0 only
    ssod: SSODState | None
    progress: RunProgress = field(default_factory=RunProgress)

    def to_input(self, imgs: torch.Tensor) -> torch.Tensor:
        x = imgs.to(self.device, non_blocking=True).float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> ContextManager[object]:
        """The training forward's precision context (fp32: none)."""
        return autocast(self.device, self.autocast_dtype)

    def backward_step(self, loss: torch.Tensor, epoch: int, i: int, nb: int) -> None:
        """Backward; optimizer step every ``accumulate`` batches (and at the epoch's end); EMA update."""
        if not torch.isfinite(loss):
            raise EffTeacherError(
                f"non-finite loss at epoch {epoch + 1}, batch {i + 1}; lower --lr0 (cfg optim.lr0) or turn off AMP"
            )
        p, opt = self.progress, self.optimizer
        p.iteration += 1
        if p.iteration <= self.n_warmup:
            apply_warmup(opt, p.iteration, self.n_warmup, self.scheduler.lr_lambdas[0](self.scheduler.last_epoch),
                         self.optim_cfg)
        self.scaler.scale(loss).backward()
        if p.iteration % self.plan.accumulate == 0 or i == nb - 1:
            self.scaler.unscale_(opt)
            g = opt.param_groups
            torch.nn.utils.clip_grad_norm_(g[0]["params"] + g[1]["params"] + g[2]["params"], max_norm=10.0)
            self.scaler.step(opt)
            self.scaler.update()
            opt.zero_grad(set_to_none=True)
            self.ema.update(self.model)
            self.scheduler.step()  # per optimizer step

    def state_dict(self) -> dict[str, Any]:
        """The training state of these parts (train_state entries of last.pt)."""
        return {"student": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "iteration": self.progress.iteration,
                "labeled_stream": self.labeled_stream.state_dict()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st["student"])
        self.ema.load_state_dict(st["ema"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.progress.iteration = st["iteration"]
        self.labeled_stream.load_state_dict(st["labeled_stream"])
        self.scheduler.base_lrs = [self.optim_cfg.lr0] * len(self.scheduler.base_lrs)


def build_parts(cfg: TrainConfig, ctx: DistContext, data: TrainData, device: torch.device,
                resume_ckpt: dict[str, Any] | None) -> TrainParts:
    """Build a run's parts. The order (loaders, model, EMA, losses, discriminator, optimizer) fixes the
    random-number draws, so a run with the same seed repeats exactly."""
    ssod_run = not cfg.supervised
    bs = max(cfg.batch // ctx.world_size, 1)
    labeled_ds = LabeledDataset(data.labeled, cfg.imgsz, cfg.aug, augment=True, cache=cfg.cache, seed=cfg.seed)
    labeled_loader = build_loader(labeled_ds, bs, cfg.workers, True, cfg.seed, ctx.rank, ctx.world_size)
    # The SSOD phase's labeled stream drops the last partial batch (a 2-image labeled half next to
    # 16 unlabeled images would weigh the labels down); its epochs are numbered apart from burn-in's.
    full = len(labeled_ds) >= bs * ctx.world_size
    stream = build_loader(labeled_ds, bs, cfg.workers, True, cfg.seed, ctx.rank, ctx.world_size, drop_last=full)
    unlabeled = build_unlabeled(cfg, ctx, data, bs) if ssod_run else None
    evaluator = Evaluator(data.val, data.names, cfg.imgsz, batch=max(bs, 8), workers=cfg.workers,
                          device=device) if ctx.is_main else None

    model = build_model(cfg.model, len(data.names))
    if cfg.weights and resume_ckpt is None:
        init_from_weights(model, cfg.weights, data.names)
    if resume_ckpt is None:
        check_anchors(model, labeled_box_sizes(data.labeled, cfg.imgsz), cfg.imgsz)
    model = model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    nb_ssod = len(unlabeled.loader) if unlabeled is not None else len(labeled_loader)
    plan = EpochPlan(cfg, ssod_run, len(labeled_loader), nb_ssod)
    ema = ModelEMA(model, *ema_schedule(plan.ema_window(), cfg.optim.ema_decay))
    loss_sup = DetectionLoss(model, cfg.loss, cfg.imgsz)
    ssod = build_ssod_state(cfg, data, model, unlabeled, device) if unlabeled is not None else None
    amp = check_amp(model, device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    autocast_dtype = torch.float16 if amp else cpu_autocast_dtype(cfg.precision, device)
    train_model: nn.Module = model
    if ctx.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if ssod is not None and ssod.disc is not None:
            ssod.disc = nn.parallel.DistributedDataParallel(ssod.disc, device_ids=ids)

    params = nn.ModuleDict({"model": model})
    if ssod is not None and (disc := ssod.disc_module()) is not None:
        params["disc"] = disc
    name, lr0 = resolve_optimizer(cfg.optim, plan.planned)
    if resume_ckpt is not None:  # an extended run plans more iterations: keep the optimizer it used
        name, lr0 = run_optimizer(resume_ckpt["train_state"]) or (name, lr0)
    optim_cfg = dataclasses.replace(cfg.optim, optimizer=name, lr0=lr0)
    optimizer = build_optimizer(params, optim_cfg, cfg.batch)
    # The LR follows optimizer steps, not epochs: a burn-in epoch (one pass over L) is much shorter than
    # an SSOD epoch (one pass over U). Auto burn-in: constant LR until the hand-over, then it decays.
    scheduler = LambdaLR(optimizer, lr_lambda=lr_fn(lambda: plan.lr_span, optim_cfg))
    n_warmup = warmup_iters(optim_cfg, plan.nb_burn, cap=plan.warmup_cap())
    return TrainParts(device, amp, autocast_dtype, cfg.channels_last, plan, model, ema, train_model, loss_sup, optimizer, optim_cfg, scheduler, scaler,
                      n_warmup, labeled_ds, labeled_loader, InfiniteLoader(stream, epoch=10_000), evaluator, ssod)


def check_amp(model: nn.Module, device: torch.device, wanted: bool) -> bool:
    """AMP on CUDA unless --no-amp; falls back to fp32 if autocast outputs disagree with fp32."""
    if not wanted or device.type != "cuda":
        return False
    m = model.eval()
    x = torch.rand(2, 3, 128, 128, device=device)
    with torch.no_grad():
        a = decode(m(x), m.anchors, m.stride)
        with torch.autocast("cuda"):
            b = decode(m(x), m.anchors, m.stride).float()
    m.train()
    ok = bool(torch.allclose(a[..., :4], b[..., :4], rtol=0.05, atol=0.5))
    if not ok:
        warn("AMP self-check failed (fp16 outputs differ from fp32); training in fp32")
    return ok
