"""Pseudo-label quality against hidden labels (REPORTING only: never feeds training)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def match_count(
    pred_xyxy: Tensor,
    pred_cls: Tensor,
    pred_img: Tensor,
    gt_xyxy: Tensor,
    gt_cls: Tensor,
    gt_img: Tensor,
    iou: float = 0.5,
) -> int:
    """Number of one-to-one matches (same image, same class, IoU >= iou).

    Greedy by IoU, vectorised: all candidate pairs sorted by IoU descending, then the first pair of
    every prediction is kept, then the first remaining pair of every ground truth. The IoU matrix
    spans the whole batch with other images masked out, so call it per batch and sum the counts.
    """
    if pred_xyxy.shape[0] == 0 or gt_xyxy.shape[0] == 0:
        return 0
    ious = box_iou(pred_xyxy.float(), gt_xyxy.float())  # (P, G)
    same = (pred_img[:, None] == gt_img[None, :]) & (pred_cls.long()[:, None] == gt_cls.long()[None, :])
    ious = torch.where(same, ious, torch.zeros_like(ious))
    p, g = torch.nonzero(ious >= iou, as_tuple=True)
    if p.numel() == 0:
        return 0
    order = ious[p, g].argsort(descending=True, stable=True)
    p, g = p[order], g[order]
    first_p = _first_occurrence(p)
    p, g = p[first_p], g[first_p]  # still sorted by IoU
    return int(_first_occurrence(g).sum())


def _first_occurrence(x: Tensor) -> Tensor:
    """Boolean mask of the first occurrence of each value in a 1-D long tensor (order preserved)."""
    n = x.numel()
    pos = torch.arange(n, device=x.device)
    first = torch.full((int(x.max()) + 1,), n, dtype=torch.long, device=x.device).scatter_reduce(
        0, x, pos, reduce="amin"
    )
    return first[x] == pos


def pseudo_precision_recall(
    pseudo_xyxy: Tensor,
    pseudo_cls: Tensor,
    pseudo_img: Tensor,
    gt_xyxy: Tensor,
    gt_cls: Tensor,
    gt_img: Tensor,
    iou: float = 0.5,
    ignore_class: bool = False,
) -> tuple[float, float, int, int, int]:
    """Precision and recall of pseudo boxes against hidden labels of the same (weak) view.

    pseudo_xyxy (P, 4), pseudo_cls (P,), pseudo_img (P,); gt_xyxy (G, 4), gt_cls (G,), gt_img (G,),
    all boxes in the same pixel frame. Returns (precision, recall, tp, n_pred, n_gt); precision
    and recall are 0 when their denominator is 0. Sum tp/n_pred/n_gt over batches for an epoch.
    ``ignore_class`` matches boxes whatever their class: with a high class-agnostic and a low
    class-aware precision, the teacher localises well but misclassifies.
    """
    if ignore_class:  # "found the object" regardless of its name
        pseudo_cls, gt_cls = torch.zeros_like(pseudo_cls).long(), torch.zeros_like(gt_cls).long()
    tp = match_count(pseudo_xyxy, pseudo_cls, pseudo_img, gt_xyxy, gt_cls, gt_img, iou)
    n_pred, n_gt = int(pseudo_xyxy.shape[0]), int(gt_xyxy.shape[0])
    return tp / max(n_pred, 1), tp / max(n_gt, 1), tp, n_pred, n_gt

