"""One SSOD iteration's pieces: teacher pseudo labels on the weak view, the student's losses, pseudo-label quality."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from effteacher.config import SSODConfig
from effteacher.models.head import decode
from effteacher.models.postprocess import non_max_suppression
from effteacher.ssod.dense import dense_loss, dense_targets
from effteacher.ssod.domain import domain_loss
from effteacher.ssod.metrics import pseudo_precision_recall
from effteacher.ssod.teacher import flip_ensemble_predict
from effteacher.train.precision import autocast
from effteacher.train.ssod_state import SSODState
from effteacher.utils.boxes import xywhn2xyxy


@torch.no_grad()
def teacher_predict(teacher: nn.Module, x_w: torch.Tensor, s: SSODConfig, floor: float,
                    dtype: torch.dtype | None) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Teacher detections on the weak view: per image (n, 7) ``x1 y1 x2 y2 score cls obj`` (+ nc probabilities
    with ``soft_cls``), NMS class-aware or class-agnostic (``s.agnostic_nms``), scores above ``floor``; and,
    with ``s.dense_topk``, the teacher's raw per-level logits (without the flip ensemble) for dense targets."""
    raw = None
    with autocast(x_w.device, dtype):  # the network in ``dtype``; boxes are decoded from fp32 outputs
        if s.dense_topk > 0 or not s.flip_teacher:
            raw = [r.float() for r in teacher(x_w)]
        if s.flip_teacher:
            pred = flip_ensemble_predict(teacher, x_w)
    if not s.flip_teacher:
        assert raw is not None
        pred = decode(raw, teacher.anchors, teacher.stride)
    dets = non_max_suppression(pred.float(), conf_thres=floor, iou_thres=s.nms_iou, agnostic=s.agnostic_nms,
                               return_obj=True, max_det=300, return_probs=s.soft_cls)
    return dets, (raw if s.dense_topk > 0 else None)


def dense_for(raw_t: list[torch.Tensor] | None, M: torch.Tensor, teacher: nn.Module, hw: tuple[int, int],
              s: SSODConfig, balance: tuple[float, ...], gains: tuple[float, float]) -> tuple[Any, ...] | None:
    """``student_losses``' dense argument from the teacher's raw maps (None without ``s.dense_topk``)."""
    if raw_t is None:
        return None

    t = dense_targets(raw_t, M, [float(v) for v in teacher.stride], hw, s.dense_topk)
    return (t, balance, gains[0], gains[1])


def observed_scores(dets: list[torch.Tensor], s: SSODConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, classes) the threshold strategy learns from: the score the assigner thresholds (joint or objectness),
    on the detections' device."""
    d = torch.cat(dets, 0).detach()
    return (d[:, 6] if s.score == "obj" else d[:, 4]), d[:, 5].long()


def teacher_floor(state: SSODState) -> float:
    """The teacher's NMS score floor: low and fixed, so the threshold strategy sees the full score distribution."""
    return min(0.05, float(state.thresholds.tau1.min()))


def observe_teacher(state: SSODState, dets: list[torch.Tensor], s: SSODConfig) -> None:
    """Feed one batch of teacher detections to what learns from them per epoch: thresholds and class gate."""
    state.thresholds.observe(*observed_scores(dets, s))
    state.class_gate.observe(dets)


def pseudo_quality(dets: list[torch.Tensor], hidden: torch.Tensor, hw: Any, tau2: torch.Tensor,
                   s: SSODConfig) -> dict[str, float]:
    """Counts of reliable pseudo boxes vs the hidden labels (reporting only): ``pseudo_tp`` matched boxes,
    ``pseudo_pred`` reliable boxes, ``pseudo_gt`` hidden boxes, ``pseudo_tp_agnostic`` matched ignoring the class.

    Summed (or averaged) over an epoch, their ratios are its precision and recall (``results_csv.results_row``);
    with no reliable box the precision is not measured rather than 0.
    """
    h, w = int(hw[0]), int(hw[1])
    img_idx = torch.cat([torch.full((d.shape[0],), i, device=d.device) for i, d in enumerate(dets)])
    d = torch.cat(dets, 0)
    score = d[:, 6] if s.score == "obj" else d[:, 4]
    keep = score >= tau2.to(d.device)[d[:, 5].long()]
    gt = hidden.to(d.device)
    gt_xyxy = xywhn2xyxy(gt[:, 2:6], w, h)
    args = (d[keep, :4], d[keep, 5].long(), img_idx[keep], gt_xyxy, gt[:, 1].long(), gt[:, 0].long())
    _, _, tp, n_pred, n_gt = pseudo_precision_recall(*args)
    tp_agn = pseudo_precision_recall(*args, ignore_class=True)[2]
    return {"pseudo_tp": tp, "pseudo_pred": n_pred, "pseudo_gt": n_gt, "pseudo_tp_agnostic": tp_agn}


@dataclass
class StudentInputs:
    """One SSOD iteration's student inputs: the labeled batch, the strong views with their pseudo labels, and
    what weighs the extra losses (the domain-loss ramp; the teacher's dense targets with ``s.dense_topk``)."""

    x_l: torch.Tensor
    targets_l: torch.Tensor
    x_s: torch.Tensor
    targets_u: torch.Tensor
    da_weight: float
    dense: tuple[Any, tuple[float, ...], float, float] | None = None  # (DenseTargets, balance, gain_obj, gain_cls)


@dataclass
class StudentLosses:
    """The losses of one SSOD iteration and what to log of them."""

    loss: torch.Tensor
    items: dict[str, Any]


def student_losses(model: nn.Module, loss_sup: Any, state: SSODState, s: SSODConfig, inp: StudentInputs,
                   dtype: torch.dtype | None) -> StudentLosses:
    """Labeled + strong views through the student in one batch: supervised loss, masked unlabeled loss
    (box/cls scaled by pseudo-box density with ``s.density_norm``), and the domain loss with a discriminator.

    With ``inp.dense`` the unlabeled objectness and class losses come from the teacher's dense maps
    (``state.loss_unsup`` then carries only the box loss)."""
    x_l, x_s, bl = inp.x_l, inp.x_s, inp.x_l.shape[0]
    with autocast(x_l.device, dtype):  # the network only: losses run in fp32
        raw, feats = model(torch.cat([x_l, x_s], 0), return_features=True)
    raw, feats = [r.float() for r in raw], [f.float() for f in feats]
    loss_l, items_l = loss_sup([r[:bl] for r in raw], inp.targets_l)
    expected = state.labeled_density * x_s.shape[0] if s.density_norm else None
    loss_u, items_u = state.loss_unsup([r[bl:] for r in raw], inp.targets_u, expected_targets=expected)
    if inp.dense is not None:
        dense = inp.dense
        dobj, dcls = dense_loss([r[bl:] for r in raw], dense[0], dense[1], dense[2], dense[3])
        loss_u = loss_u + (dobj + dcls) * x_s.shape[0]
        items_u = {**items_u, "obj": dobj.detach(), "cls": dcls.detach()}
    loss = loss_l + s.lambda_u * loss_u
    da = torch.zeros((), device=x_l.device)
    if state.disc is not None:
        da = domain_loss(state.disc, [f[:bl] for f in feats], [f[bl:] for f in feats]) * bl
        loss = loss + s.lambda_da * inp.da_weight * da
    items = {"box": items_l["box"], "obj": items_l["obj"], "cls": items_l["cls"], "ubox": items_u["box"],
             "uobj": items_u["obj"], "ucls": items_u["cls"], "da": da.detach() / bl}
    return StudentLosses(loss, items)
