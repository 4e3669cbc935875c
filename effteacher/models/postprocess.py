"""Post-processing of decoded predictions: confidence filtering and class-aware NMS (torchvision batched_nms)."""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import batched_nms

from effteacher.utils.boxes import xywh2xyxy


def non_max_suppression(
    pred: torch.Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    return_obj: bool = False,
    max_nms: int = 30000,
    return_probs: bool = False,
) -> list[torch.Tensor]:
    """Decoded predictions -> per-image detections.

    pred: (B, A, 5+nc) from ``models.head.decode``: cx, cy, w, h (pixels), obj, class probs.
    score = obj * cls_prob. Keeps score > conf_thres (every class above it with ``multi_label``,
    else the best class), optional ``classes`` filter, then NMS per class (all classes together
    with ``agnostic``) suppressing IoU > iou_thres, at most ``max_det`` by descending score
    (``max_nms`` boxes enter NMS). Returns B tensors (n, 6) [x1, y1, x2, y2, score, cls], or
    (n, 7) with the objectness appended when ``return_obj``; ``return_probs`` (with ``return_obj``)
    then appends the nc class probabilities of each kept box: (n, 7 + nc).
    """
    if return_probs and not return_obj:
        raise ValueError("return_probs needs return_obj (the probabilities follow the objectness column)")
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres and iou_thres must be in [0, 1], got {conf_thres}, {iou_thres}")
    ncols = (7 if return_obj else 6) + (pred.shape[-1] - 5 if return_probs else 0)
    out: list[torch.Tensor] = []
    cls_filter = None if classes is None else torch.as_tensor(classes, device=pred.device)
    for x in pred:
        x = x[x[:, 4] > conf_thres]  # obj * cls <= obj, so this cannot drop a kept box
        if not x.shape[0]:
            out.append(pred.new_zeros((0, ncols)))
            continue
        obj = x[:, 4]
        scores = x[:, 5:] * obj[:, None]  # (n, nc)
        boxes = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            conf = scores[i, j]
        else:
            conf, j = scores.max(1)
            i = torch.arange(x.shape[0], device=x.device)
            keep = conf > conf_thres
            i, j, conf = i[keep], j[keep], conf[keep]
        if cls_filter is not None:
            keep = (j[:, None] == cls_filter[None]).any(1)
            i, j, conf = i[keep], j[keep], conf[keep]
        if conf.numel() > max_nms:
            top = conf.topk(max_nms).indices
            i, j, conf = i[top], j[top], conf[top]
        if not conf.numel():
            out.append(pred.new_zeros((0, ncols)))
            continue
        groups = torch.zeros_like(j) if agnostic else j
        k = batched_nms(boxes[i].float(), conf.float(), groups, iou_thres)[:max_det]
        cols = [boxes[i[k]], conf[k, None], j[k, None].to(pred.dtype)]
        if return_obj:
            cols.append(obj[i[k], None])
        if return_probs:
            cols.append(x[i[k], 5:])
        out.append(torch.cat(cols, 1))
    return out


def detections_from_output(out: torch.Tensor, has_nms: bool, conf: float, iou: float, max_det: int,
                           classes: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Backend output -> per-image (n, 6) [x1, y1, x2, y2, score, cls] (NMS unless already in the graph), only
    the ``classes`` given (None = all)."""
    if has_nms:
        keep = [o[o[:, 4] > conf] for o in out]
        if classes is not None:
            allowed = torch.as_tensor(list(classes), device=out.device, dtype=out.dtype)
            keep = [o[(o[:, 5:6] == allowed[None]).any(1)] for o in keep]
        return [o[:max_det].float() for o in keep]
    return non_max_suppression(out.float(), conf_thres=conf, iou_thres=iou, max_det=max_det,
                               classes=None if classes is None else list(classes))
