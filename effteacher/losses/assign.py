"""YOLOv5 target assignment: anchor-ratio matching plus the two neighbouring cells nearest each centre."""

from __future__ import annotations

from typing import NamedTuple

import torch

# Candidate cell offsets (in cells, scaled by the 0.5 bias): centre, left, up, right, down.
_OFFSETS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


class LevelTargets(NamedTuple):
    """Candidate positives of one output level; every tensor has one row per candidate (n of them).

    ``assign_candidates`` returns all ``5 * na * N`` candidates with ``valid`` marking the positives, so its
    sizes depend only on the number of targets (no host sync on a GPU); ``assign_targets`` keeps the positives.
    Indices of invalid candidates are clamped into the grid and their ``tbox`` is a harmless unit box.
    """

    b: torch.Tensor  # (n,) int64 image index
    a: torch.Tensor  # (n,) int64 anchor index
    gj: torch.Tensor  # (n,) int64 cell row
    gi: torch.Tensor  # (n,) int64 cell column
    tbox: torch.Tensor  # (n, 4) x, y offset from the cell corner (in [-0.5, 1.5]) and w, h, in cells
    anchors: torch.Tensor  # (n, 2) matched anchor w, h in cells
    rows: torch.Tensor  # (n,) int64 index of the target row this positive came from
    valid: torch.Tensor  # (n,) bool: a positive (all True after ``assign_targets``)


def assign_candidates(
    targets: torch.Tensor,
    anchors: torch.Tensor,
    grid_shapes: list[tuple[int, int]],
    anchor_t: float = 4.0,
    bias: float = 0.5,
) -> list[LevelTargets]:
    """Every (cell offset, anchor, target) candidate of each level with a ``valid`` mask, YOLOv5 rules.

    targets: (N, >=6) rows [img_idx, cls, cx, cy, w, h, ...] normalised 0-1 to the input image.
    anchors: (nl, na, 2) anchor sizes in CELLS of each level (pixels / stride).
    grid_shapes: [(ny, nx)] per level. A target matches an anchor when
    max(r, 1/r) < anchor_t for both sides, r = target_wh / anchor_wh; each match is placed in the
    centre cell and in the horizontal and vertical neighbours whose border is nearest the centre
    (fractional part < bias), when they lie inside the grid.
    Returns per level n = 5 * na * N candidates ordered (offset, anchor, target): centre, left, up, right, down.
    """
    device, dtype = targets.device, torch.float32
    offsets = torch.tensor(_OFFSETS, device=device, dtype=dtype) * bias  # (5, 2)
    n_t = targets.shape[0]
    img = targets[:, 0].long()
    out: list[LevelTargets] = []
    for level, (ny, nx) in enumerate(grid_shapes):
        anc = anchors[level].to(device=device, dtype=dtype)  # (na, 2)
        na = anc.shape[0]
        gain = torch.tensor([nx, ny, nx, ny], device=device, dtype=dtype)
        t = targets[:, 2:6].to(dtype) * gain  # (N, 4) cells
        r = t[None, :, 2:4] / anc[:, None]  # (na, N, 2)
        match = torch.maximum(r, 1 / r).amax(2) < anchor_t  # (na, N); a zero-size target matches nothing
        gxy, gwh = t[:, :2], t[:, 2:4]
        gxi = gain[:2] - gxy
        near_lo = (gxy % 1 < bias) & (gxy > 1)  # left / up neighbour is closer
        near_hi = (gxi % 1 < bias) & (gxi > 1)  # right / down neighbour is closer
        keep = torch.stack(
            (torch.ones_like(near_lo[:, 0]), near_lo[:, 0], near_lo[:, 1], near_hi[:, 0], near_hi[:, 1])
        )  # (5, N)
        valid = (keep[:, None, :] & match[None]).reshape(-1)  # (5 * na * N,)
        shape = (5, na, n_t)
        gxy5 = gxy[None, None].expand(*shape, 2).reshape(-1, 2)
        gwh5 = gwh[None, None].expand(*shape, 2).reshape(-1, 2)
        off5 = offsets[:, None, None].expand(*shape, 2).reshape(-1, 2)
        a5 = torch.arange(na, device=device)[None, :, None].expand(shape).reshape(-1)
        rows5 = torch.arange(n_t, device=device)[None, None, :].expand(shape).reshape(-1)
        gij = (gxy5 - off5).long()
        gi = gij[:, 0].clamp(0, nx - 1)
        gj = gij[:, 1].clamp(0, ny - 1)
        tbox = torch.cat((gxy5 - torch.stack((gi, gj), 1).to(dtype), gwh5), 1)
        tbox = torch.where(valid[:, None], tbox, torch.tensor([0.5, 0.5, 1.0, 1.0], device=device, dtype=dtype))
        out.append(LevelTargets(img[rows5], a5, gj, gi, tbox, anc[a5], rows5, valid))
    return out


def assign_targets(
    targets: torch.Tensor,
    anchors: torch.Tensor,
    grid_shapes: list[tuple[int, int]],
    anchor_t: float = 4.0,
    bias: float = 0.5,
) -> list[LevelTargets]:
    """The positives of ``assign_candidates`` only (n = number of positives per level; syncs on a GPU)."""
    out = []
    for lt in assign_candidates(targets, anchors, grid_shapes, anchor_t, bias):
        keep = lt.valid
        out.append(LevelTargets(*(x[keep] for x in lt)))
    return out
