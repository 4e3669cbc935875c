"""Supervised/pseudo-label detection loss: CIoU box, IoU-targeted BCE objectness, BCE class, with per-target masks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from effteacher.config import LossConfig
from effteacher.losses.assign import assign_candidates, assign_targets
from effteacher.losses.iou import bbox_iou


def bce_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 0.0, alpha: float = 0.25) -> torch.Tensor:
    """Elementwise BCE-with-logits; with gamma > 0 the focal form alpha_t * (1 - p_t)^gamma * BCE.

    Works with soft targets in [0, 1] (p_t = p*y + (1-p)*(1-y)). Same shape in and out.
    """
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** gamma
    return loss


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(values * weights) / max(sum(weights), 1): zero (with a graph) when no weight is on."""
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def priority_objectness(
    shape: tuple[int, ...], flat_index: torch.Tensor, value: torch.Tensor, hard: torch.Tensor
) -> torch.Tensor:
    """Objectness target map where positives collide: hard beats soft, then the larger value wins.

    shape: target map shape (B, na, H, W); flat_index: (n,) int64 into the flattened map;
    value: (n,) targets in [0, 1]; hard: (n,) bool. Unhit cells are 0. Deterministic (scatter amax
    of ``value + 2*hard`` in float64).
    """
    numel = 1
    for s in shape:
        numel *= int(s)
    prio = value.detach().to(torch.float64) + 2.0 * hard.to(torch.float64)
    m = torch.zeros(numel, dtype=torch.float64, device=value.device)
    m = m.scatter_reduce(0, flat_index, prio, reduce="amax", include_self=False)
    m = torch.where(m >= 2.0, m - 2.0, m)
    return m.view(shape).to(torch.float32)


class DetectionLoss:
    """YOLOv5 loss over raw per-level logits, extended with soft objectness and per-target masks.

    gains: optional (box, obj, cls) base gains replacing ``cfg.box/obj/cls``; either way they are
    scaled like YOLOv5: obj x (imgsz/640)^2, cls x nc/80, all x 3/nl.
    """

    def __init__(
        self, model: Any, cfg: LossConfig, imgsz: int, gains: tuple[float, float, float] | None = None
    ) -> None:
        self.model = model  # anchors/stride are read at call time (AutoAnchor may refit them)
        self.cfg = cfg
        self.nc, self.nl, self.na = int(model.nc), int(model.nl), int(model.na)
        if len(cfg.balance) != self.nl:
            raise ValueError(f"loss.balance needs {self.nl} values, got {list(cfg.balance)}")
        box, obj, cls = gains if gains is not None else (cfg.box, cfg.obj, cfg.cls)
        s = 3.0 / self.nl
        self.gain_box = box * s
        self.gain_obj = obj * (imgsz / 640) ** 2 * s
        self.gain_cls = cls * self.nc / 80 * s
        self.ciou = cfg.iou_type == "ciou"
        self.sync_free: bool | None = None  # masked candidates (True) or positives (False); None: on CUDA only

    def __call__(
        self, raw: list[torch.Tensor], targets: torch.Tensor, expected_targets: float | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """raw: per level (B, na, H, W, 5+nc) logits; targets: (N, 6) or (N, 9), see docs/architecture.md.

        expected_targets: when given, the box and class losses (means over their targets) are
        scaled by ``min(1, sum(w_box) / expected_targets)`` and ``min(1, sum(w_cls) / expected_targets)``:
        sparse pseudo labels then weigh in proportion to how many there are. Objectness is dense
        (every cell) and is not scaled.
        Returns (loss * B, {"box", "obj", "cls"} gain-scaled, detached, not multiplied by B).
        """
        device = raw[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        if targets.ndim != 2 or targets.shape[1] not in (6, 9, 9 + self.nc):
            raise ValueError(f"targets must be (N, 6), (N, 9) or (N, 9 + nc), got {tuple(targets.shape)}")
        soft = targets[:, 9:] if targets.shape[1] == 9 + self.nc else None  # teacher class probabilities
        n_t = targets.shape[0]
        if targets.shape[1] >= 9:
            w_cls, w_box, obj_t = targets[:, 6], targets[:, 7], targets[:, 8]
        else:
            w_cls = w_box = targets.new_ones(n_t)
            obj_t = targets.new_full((n_t,), -1.0)
        anchors = self.model.anchors.to(device) / self.model.stride.to(device).view(-1, 1, 1)
        shapes = [(int(r.shape[2]), int(r.shape[3])) for r in raw]
        # on a GPU every candidate with a validity mask: sizes known on the host, so no sync (docs/architecture.md);
        # on a CPU the positives only (fewer rows, and a CPU has no queue to drain)
        sync_free = device.type == "cuda" if self.sync_free is None else self.sync_free
        assigned = (assign_candidates if sync_free else assign_targets)(targets, anchors, shapes, self.cfg.anchor_t)
        eps = self.cfg.label_smoothing
        cp, cn = 1.0 - 0.5 * eps, 0.5 * eps
        gamma, alpha = self.cfg.focal_gamma, self.cfg.focal_alpha
        zero = torch.zeros((), device=device)
        lbox, lobj, lcls = zero, zero, zero
        for i, (pi, lt) in enumerate(zip(raw, assigned)):
            pi = pi.float()
            tobj = torch.zeros(pi.shape[:4], device=device)
            if n_t:
                on = lt.valid.float()
                ps = pi[lt.b, lt.a, lt.gj, lt.gi]  # (n, 5+nc)
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * lt.anchors
                iou = bbox_iou(torch.cat((pxy, pwh), 1), lt.tbox, CIoU=self.ciou, GIoU=not self.ciou)
                lbox = lbox + _masked_mean(1.0 - iou, w_box[lt.rows] * on)
                o = obj_t[lt.rows]
                hard = (o < 0) & lt.valid
                value = torch.where(hard, iou.detach().clamp(0, 1), o.clamp(0, 1)) * on  # 0 never wins a cell
                _, na, ny, nx = tobj.shape
                flat = ((lt.b * na + lt.a) * ny + lt.gj) * nx + lt.gi
                tobj = priority_objectness(tuple(tobj.shape), flat, value, hard)
                if self.nc > 1:
                    if soft is not None:
                        t = soft[lt.rows].clamp(0, 1)
                    else:
                        t = torch.full_like(ps[:, 5:], cn)
                        t[torch.arange(ps.shape[0], device=device), targets[lt.rows, 1].long()] = cp
                    per = bce_focal(ps[:, 5:], t, gamma, alpha).mean(1)
                    lcls = lcls + _masked_mean(per, w_cls[lt.rows] * on)
            lobj = lobj + bce_focal(pi[..., 4], tobj, gamma, alpha).mean() * self.cfg.balance[i]
        lbox, lobj, lcls = lbox * self.gain_box, lobj * self.gain_obj, lcls * self.gain_cls
        if expected_targets is not None and expected_targets > 0:
            # tensor ops, not float(): no host sync on a GPU
            lbox = lbox * (w_box.sum() / expected_targets).clamp(max=1.0)
            lcls = lcls * (w_cls.sum() / expected_targets).clamp(max=1.0)
        bs = raw[0].shape[0]
        parts = {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}
        return (lbox + lobj + lcls) * bs, parts
