"""What only a semi-supervised run builds and carries: unlabeled data, unlabeled loss, thresholds, class gate, discriminator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from effteacher.config import TrainConfig
from effteacher.data.loaders import UnlabeledDataset
from effteacher.errors import ConfigError
from effteacher.data.sampling import build_loader
from effteacher.losses.detection import DetectionLoss
from effteacher.ssod.class_gate import ClassGate
from effteacher.ssod.domain import DomainDiscriminator
from effteacher.ssod.thresholds import ThresholdStrategy, build_thresholds
from effteacher.train.train_data import TrainData
from effteacher.utils import dist
from effteacher.utils.dist import DistContext

# train_state keys only an SSOD run fills; a supervised run writes None there (same checkpoint layout)
SSOD_STATE_KEYS = ("thresholds", "class_gate", "disc")


@dataclass
class UnlabeledData:
    """The unlabeled images and their loader (weak + strong views, mask, hidden labels)."""

    dataset: UnlabeledDataset
    loader: DataLoader


@dataclass
class SSODState:
    """The semi-supervised run's own parts, built once at setup; supervised runs have none.

    The teacher is the trainer's EMA (after the hand-over); ``disc`` is the DDP wrapper under DDP.
    """

    unlabeled: UnlabeledData
    loss_unsup: DetectionLoss
    dense_gains: tuple[float, float]  # the unlabeled obj/cls gains the dense targets use
    thresholds: ThresholdStrategy
    class_gate: ClassGate
    disc: nn.Module | None
    labeled_density: float  # ground-truth boxes per labeled image (density_norm)

    def disc_module(self) -> nn.Module | None:
        return getattr(self.disc, "module", self.disc)

    def end_epoch(self, ctx: DistContext) -> dict[str, float]:
        """Recompute per-class thresholds and the class gate from this epoch's teacher scores; returns the means used."""
        used = {"tau1": float(self.thresholds.tau1.mean()), "tau2": float(self.thresholds.tau2.mean())}
        gather = (lambda t: dist.all_gather_tensor(t, ctx)) if ctx.world_size > 1 else None
        self.thresholds.end_epoch(all_gather=gather)
        self.class_gate.end_epoch(all_gather=gather)
        return used

    def state_dict(self) -> dict[str, Any]:
        disc = self.disc_module()
        return {"thresholds": self.thresholds.state_dict(), "class_gate": self.class_gate.state_dict(),
                "disc": disc.state_dict() if disc is not None else None}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if st.get("thresholds") is not None:  # None in a supervised run's state
            self.thresholds.load_state_dict(st["thresholds"])
        if st.get("class_gate") is not None:  # absent in checkpoints from before ssod.cls_thres_mode
            self.class_gate.load_state_dict(st["class_gate"])
        disc = self.disc_module()
        if disc is not None and st.get("disc") is not None:
            disc.load_state_dict(st["disc"])


def build_unlabeled(cfg: TrainConfig, ctx: DistContext, data: TrainData, batch: int) -> UnlabeledData:
    """U's dataset and loader: ``unlabeled_ratio`` x the per-rank labeled batch, its own seed."""
    ds = UnlabeledDataset(data.unlabeled, cfg.imgsz, cfg.aug, seed=cfg.seed + 1)
    ubs = max(batch * cfg.ssod.unlabeled_ratio, 1)
    return UnlabeledData(ds, build_loader(ds, ubs, cfg.workers, True, cfg.seed + 1, ctx.rank, ctx.world_size))


def build_ssod_state(cfg: TrainConfig, data: TrainData, model: nn.Module, unlabeled: UnlabeledData,
                     device: torch.device) -> SSODState:
    """The SSOD parts around a built student (its anchors and strides shape the loss; its features the discriminator)."""
    s, nc = cfg.ssod, len(data.names)
    loss_unsup = DetectionLoss(model, cfg.loss, cfg.imgsz, gains=(s.unsup_box, s.unsup_obj, s.unsup_cls))
    dense_gains = (loss_unsup.gain_obj, loss_unsup.gain_cls)
    if s.dense_topk > 0 and cfg.aug.unlabeled_mixup > 0:
        raise ConfigError("ssod.dense_topk and aug.unlabeled_mixup cannot be combined: the teacher's dense maps "
                          "are of the unmixed views; set one of them to 0")
    if s.dense_topk > 0:  # objectness and class come from the teacher's dense maps; boxes stay sparse
        loss_unsup = DetectionLoss(model, cfg.loss, cfg.imgsz, gains=(s.unsup_box, 0.0, 0.0))
    disc = DomainDiscriminator(model.feature_channels).to(device) if s.domain_adapt else None
    labeled = data.labeled
    n_c = np.bincount(np.concatenate([r.cls for r in labeled] + [np.zeros(0, np.int64)]), minlength=nc)
    thresholds = build_thresholds(
        s.thresholds, nc=nc, tau1=s.tau1, tau2=s.tau2, n_c=torch.as_tensor(n_c),
        n_labeled=len(labeled), n_unlabeled=len(data.unlabeled), alpha=s.ea_alpha,
    )
    density = max(sum(r.n for r in labeled) / max(len(labeled), 1), 1e-6)
    return SSODState(unlabeled, loss_unsup, dense_gains, thresholds, ClassGate(nc, s.cls_thres, s.cls_thres_mode),
                     disc, density)
