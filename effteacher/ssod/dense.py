"""Dense soft pseudo labels (Dense Teacher style): the teacher's objectness and class maps as student targets.

Instead of thresholded, NMS'd boxes, the student's objectness and class outputs on the strong view are
trained on the teacher's own dense maps from the weak view, warped cell by cell through the exact
weak->strong transform. On the top-k fraction of the (valid) cells of an image, ranked by the teacher's
objectness, the targets are the teacher's objectness and class probabilities; every other valid cell
is background (objectness 0, no class loss); cells whose weak-view position falls outside the weak
image get no loss. Nothing here thresholds a class probability, so a teacher that finds objects
before it names them right still teaches "object here" at full strength and "which class" softly.

Anchors are warped anchor by anchor: the strong view's scale jitter can move an object to a
neighbouring anchor's size range, which the per-anchor warp does not follow (YOLOv5's matching
already makes most objects positive on several anchors).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class DenseTargets(NamedTuple):
    """Per output level, in the strong view's grid: shapes (B, na, H, W) and (B, na, H, W, nc)."""

    obj: list[Tensor]  # objectness target: the teacher's on top-k cells, 0 on the other valid cells
    cls: list[Tensor]  # the teacher's class probabilities (used on top-k cells only)
    pos: list[Tensor]  # bool: top-k cells
    valid: list[Tensor]  # bool: the cell's weak-view position lies inside the weak image


def warp_to_strong(maps: Tensor, M: Tensor, stride: float, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Resample per-cell maps of the weak view at the strong view's cell centres.

    maps: (B, C, H, W) on the grid of stride ``stride`` of a weak image of ``hw`` = (h, w) pixels;
    M: (B, 3, 3) weak->strong pixel transforms (strong image of the same size). Returns
    (warped (B, C, H, W) bilinear, valid (B, H, W) bool: the weak position lies inside the image).
    """
    b, _, ny, nx = maps.shape
    h, w = hw
    dev, dt = maps.device, maps.dtype
    ys, xs = torch.meshgrid(torch.arange(ny, device=dev, dtype=dt), torch.arange(nx, device=dev, dtype=dt),
                            indexing="ij")
    pts = torch.stack(((xs + 0.5) * stride, (ys + 0.5) * stride, torch.ones_like(xs)), -1).view(1, -1, 3)
    inv = torch.linalg.inv(M.to(device=dev, dtype=torch.float64)).to(dt)  # strong -> weak
    weak = pts @ inv.transpose(1, 2)  # (B, H*W, 3)
    weak = weak[..., :2] / weak[..., 2:3].clamp(min=1e-9)
    valid = (weak[..., 0] >= 0) & (weak[..., 0] < w) & (weak[..., 1] >= 0) & (weak[..., 1] < h)
    norm = torch.stack((weak[..., 0] / w * 2 - 1, weak[..., 1] / h * 2 - 1), -1).view(b, ny, nx, 2)
    out = F.grid_sample(maps, norm, mode="bilinear", padding_mode="border", align_corners=False)
    return out, valid.view(b, ny, nx)


@torch.no_grad()
def dense_targets(raw: list[Tensor], M: Tensor, strides: list[float], hw: tuple[int, int],
                  topk: float) -> DenseTargets:
    """Teacher raw logits on the weak view -> dense targets on the strong view's grid.

    raw: per level (B, na, H, W, 5+nc) teacher logits; M: (B, 3, 3) weak->strong; strides per level;
    hw: image (h, w) in pixels; topk: fraction (0, 1] of each image's valid cells (all levels and
    anchors together) that are positives, ranked by warped teacher objectness (at least one cell).
    """
    warped, valids = [], []
    for r, s in zip(raw, strides):
        b, na, ny, nx, no = r.shape
        p = r.float()[..., 4:].sigmoid()  # (B, na, H, W, 1+nc)
        maps = p.permute(0, 1, 4, 2, 3).reshape(b, na * (no - 4), ny, nx)
        wm, v = warp_to_strong(maps, M, float(s), hw)
        warped.append(wm.view(b, na, no - 4, ny, nx).permute(0, 1, 3, 4, 2))  # (B, na, H, W, 1+nc)
        valids.append(v[:, None].expand(b, na, ny, nx))
    b = raw[0].shape[0]
    obj_all = torch.cat([w[..., 0].reshape(b, -1) for w in warped], 1)
    valid_all = torch.cat([v.reshape(b, -1) for v in valids], 1)
    ranked = torch.where(valid_all, obj_all, torch.full_like(obj_all, -1.0))
    n_valid = valid_all.sum(1)
    k = (n_valid.float() * topk).ceil().clamp(min=1).long()
    order = ranked.argsort(1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    pos_all = (rank < k[:, None]) & valid_all
    obj_t, cls_t, pos, valid = [], [], [], []
    start = 0
    for w, v in zip(warped, valids):
        n = v[0].numel()
        pm = pos_all[:, start:start + n].view(v.shape)
        start += n
        obj_t.append(torch.where(pm, w[..., 0], torch.zeros_like(w[..., 0])))
        cls_t.append(w[..., 1:])
        pos.append(pm)
        valid.append(v)
    return DenseTargets(obj_t, cls_t, pos, valid)


def dense_loss(raw: list[Tensor], t: DenseTargets, balance: tuple[float, ...], gain_obj: float,
               gain_cls: float) -> tuple[Tensor, Tensor]:
    """Student raw logits on the strong view vs dense targets: (objectness loss, class loss), gain-scaled.

    Objectness: BCE on every valid cell, a per-level mean weighted by ``balance`` like YOLOv5's.
    Class: BCE against the teacher's probabilities on the top-k cells, weighted by the teacher's
    objectness there (a cell the teacher is unsure is an object says little about its class).
    """
    lobj = raw[0].new_zeros(())
    num = raw[0].new_zeros(())
    den = raw[0].new_zeros(())
    for i, (r, o, c, p, v) in enumerate(zip(raw, t.obj, t.cls, t.pos, t.valid)):
        r = r.float()
        bce = F.binary_cross_entropy_with_logits(r[..., 4], o, reduction="none")
        vf = v.float()
        lobj = lobj + (bce * vf).sum() / vf.sum().clamp(min=1.0) * balance[i]
        if r.shape[-1] > 6 and p.any():
            wgt = o[p]
            per = F.binary_cross_entropy_with_logits(r[..., 5:][p], c[p].clamp(0, 1), reduction="none").mean(1)
            num = num + (per * wgt).sum()
            den = den + wgt.sum()
    lcls = num / den.clamp(min=1e-6)
    return lobj * gain_obj, lcls * gain_cls
