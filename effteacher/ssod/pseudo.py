"""Pseudo Label Assigner: teacher detections on the weak view -> masked student targets on the strong view."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from effteacher.data.augment import MIXUP_BETA
from effteacher.utils.boxes import clip_boxes, transform_boxes, xyxy2xywhn


def map_to_strong(boxes: Tensor, img: Tensor, M: Tensor) -> Tensor:
    """Map weak-view xyxy pixel boxes into their strong views.

    boxes: (N, 4) xyxy; img: (N,) long image index into M; M: (B, 3, 3) weak->strong matrices.
    Returns (N, 4) xyxy strong-view pixels, unclipped. Each box goes through its own image's matrix in one
    batched product: no per-image loop and no host sync on an accelerator.
    """
    return transform_boxes(boxes, M.to(boxes)[img.long()])


def assign_pseudo_labels(
    dets: list[Tensor],
    M: Tensor,
    strong_hw: tuple[int, int],
    tau1: Tensor,
    tau2: Tensor,
    obj_box_thres: float = 0.99,
    min_size: float = 2.0,
    min_visible: float = 0.5,
    soft_cls: bool = False,
    score_mode: str = "joint",
    cls_thres: float | Tensor = 0.0,
) -> tuple[Tensor, dict[str, Any]]:
    """Split the teacher's detections into reliable / uncertain student targets (docs/method.md section 3).

    dets: per image (n, 7) ``[x1, y1, x2, y2, score, cls, obj]`` in WEAK-view pixels (post-NMS).
    M: (B, 3, 3) weak->strong pixel transforms. strong_hw: (H, W) of the strong view.
    tau1, tau2: (nc,) per-class thresholds. A box is mapped through M, clipped to the strong image
    and dropped when a side is < ``min_size`` pixels or less than ``min_visible`` of its mapped
    area lies inside the image. Then, by its class's thresholds:

    - reliable, ``score >= tau2``: ``w_cls=1, w_box=1, obj_target=-1`` (hard, like ground truth);
    - uncertain, ``tau1 < score < tau2``: ``w_cls=0``, ``w_box = obj > obj_box_thres``,
      ``obj_target = obj`` (soft);
    - ``score <= tau1``: dropped (background).

    ``score_mode="obj"`` thresholds the teacher's objectness instead of the joint score (obj x class
    probability), so a box the teacher finds but cannot name is not trained as background. In both
    modes a reliable box trains the class head (``w_cls = 1``) only where the teacher's class
    probability ``score / obj`` is at least ``cls_thres`` (a float, or (nc,) per class: ``effteacher.ssod.class_gate``).

    Returns ``targets`` (N, 9) float32 ``[img, cls, cx, cy, w, h, w_cls, w_box, obj_target]``
    (boxes normalised to the strong image) and ``stats``. With ``soft_cls`` the detections must be
    (n, 7 + nc) (NMS ``return_probs``) and targets are (N, 9 + nc): the teacher's class
    probabilities follow, and the loss trains reliable boxes' classes on them instead of the argmax
    one-hot. ``stats``: ``n_reliable`` and ``n_uncertain`` (floats, per image), ``scores`` and ``classes`` ((K,) all input detections, detached, for the
    threshold strategies), ``reliable`` ((N,) bool, per target row).
    """
    device = dets[0].device if dets else M.device
    nb = len(dets)
    for d in dets:
        if d.numel() and (d.ndim != 2 or d.shape[1] < (8 if soft_cls else 7)):
            raise ValueError(
                f"assign_pseudo_labels: detections must be (n, 7) x1y1x2y2 score cls obj, got {tuple(d.shape)}"
            )
    counts = torch.tensor([d.shape[0] if d.numel() else 0 for d in dets], device=device, dtype=torch.long)
    if int(counts.sum()) == 0:
        zero = torch.zeros(0, device=device)
        stats = {"n_reliable": 0.0, "n_uncertain": 0.0, "scores": zero, "classes": zero.long(),
                 "reliable": torch.zeros(0, dtype=torch.bool, device=device)}
        return torch.zeros(0, 9, device=device), stats
    all_dets = torch.cat([d if soft_cls else d[:, :7] for d in dets if d.numel()], 0)
    all_dets = all_dets.detach().float()
    img = torch.repeat_interleave(torch.arange(nb, device=device), counts)
    joint, cls, obj = all_dets[:, 4], all_dets[:, 5].long(), all_dets[:, 6]
    if score_mode not in ("joint", "obj"):
        raise ValueError(f"assign_pseudo_labels: score_mode must be 'joint' or 'obj', got {score_mode!r}")
    score = obj if score_mode == "obj" else joint
    cls_prob = joint / obj.clamp(min=1e-9)
    h, w = strong_hw

    boxes = map_to_strong(all_dets[:, :4], img, M.to(device))
    area0 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    boxes = clip_boxes(boxes, (h, w))
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    geom_ok = (bw >= min_size) & (bh >= min_size) & (bw * bh >= min_visible * area0)

    t1 = tau1.to(device=device, dtype=score.dtype)[cls]
    t2 = tau2.to(device=device, dtype=score.dtype)[cls]
    reliable = geom_ok & (score >= t2)
    uncertain = geom_ok & (score > t1) & (score < t2)
    keep = reliable | uncertain

    rel = reliable[keep]
    ones = torch.ones_like(score[keep])
    gate = cls_thres.to(device=device, dtype=score.dtype)[cls] if isinstance(cls_thres, Tensor) else cls_thres
    w_cls = (rel & (cls_prob[keep] >= (gate[keep] if isinstance(gate, Tensor) else gate))).float()
    w_box = torch.where(rel, ones, (obj[keep] > obj_box_thres).float())
    obj_t = torch.where(rel, -ones, obj[keep])
    targets = torch.cat(
        [
            img[keep, None].float(),
            cls[keep, None].float(),
            xyxy2xywhn(boxes[keep], w=w, h=h),
            w_cls[:, None],
            w_box[:, None],
            obj_t[:, None],
            *([all_dets[keep, 7:]] if soft_cls else []),
        ],
        1,
    )
    stats = {
        "n_reliable": float(reliable.sum()) / nb,
        "n_uncertain": float(uncertain.sum()) / nb,
        "scores": score,
        "classes": cls,
        "reliable": rel,
    }
    return targets, stats


def mix_strong_views(x: Tensor, targets: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Unlabeled mixup: with probability ``p`` each strong view i is blended with another view j of its batch.

    x: (B, 3, H, W) float strong views; targets: (N, C) pseudo targets with the image index in column 0 (the
    ``assign_pseudo_labels`` layout). A mixed view becomes ``r * x_i + (1 - r) * x_j`` with r ~ Beta(32, 32)
    and takes j's pseudo targets next to its own (both sets whole, as in labeled mixup); its partner j != i is
    drawn uniformly. Draws use torch's global generator (seeded by the run, restored on resume).
    Returns (x, targets) unchanged for p == 0 or B < 2.
    """
    nb = x.shape[0]
    if p <= 0 or nb < 2:
        return x, targets
    mixed = torch.rand(nb) < p
    partner = (torch.arange(nb) + torch.randint(1, nb, (nb,))) % nb  # never the view itself
    r = torch.distributions.Beta(MIXUP_BETA, MIXUP_BETA).sample((nb,))
    w = torch.where(mixed, r, torch.ones(nb)).to(x).view(nb, 1, 1, 1)
    x = w * x + (1 - w) * x[partner.to(x.device)]
    dst = mixed.nonzero().flatten()  # (M,) mixed views
    img = targets[:, 0].long().cpu()
    m, n = (img[None, :] == partner[dst][:, None]).nonzero(as_tuple=True)  # partner rows, per mixed view
    extra = targets[n.to(targets.device)].clone()
    extra[:, 0] = dst[m].to(extra)
    return x, torch.cat([targets, extra], 0)
