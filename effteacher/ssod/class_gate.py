"""Class gate of reliable pseudo boxes: a class target only where the teacher's class probability is confident.

``ssod.cls_thres`` is the gate; ``ssod.cls_thres_mode`` says whether it is one value for every class
(``fixed``) or per class from the teacher's own confidence (``adaptive``): FreeMatch's self-adaptive
class thresholds (Wang et al., 2023) carried to detection,

    gate_c = cls_thres * p_c / max_k p_k,  p_c = sum(obj * prob) / sum(obj) over last epoch's teacher boxes of class c,

so a class the teacher is still unsure of gets a lower bar (it keeps receiving class targets instead of
starving) and the class it knows best keeps ``cls_thres``. The objectness weighting lets the boxes the
teacher believes are objects speak for the class, not its background-level detections. Classes not seen
in an epoch keep their gate.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from effteacher.errors import CheckpointError, ConfigError

GatherFn = Callable[[Tensor], Tensor]


def adaptive_class_gate(sums: Tensor, base: float, prev: Tensor) -> Tensor:
    """Per-class gates from ``sums`` (2, nc) = per class [sum(obj * prob), sum(obj)] of the teacher's boxes.

    Returns (nc,) ``base * p_c / max p`` with ``p_c = sums[0, c] / sums[1, c]``; classes with no weight keep
    ``prev``; all of ``prev`` when no class has any.
    """
    seen = sums[1] > 0
    if not bool(seen.any()):
        return prev.clone()
    p = torch.where(seen, sums[0] / sums[1].clamp(min=1e-12), torch.zeros_like(sums[0]))
    top = float(p.max())
    if top <= 0:
        return prev.clone()
    return torch.where(seen, base * p / top, prev).float()


def class_sums(dets: list[Tensor], nc: int) -> Tensor:
    """(2, nc) per class [sum(obj * class prob), sum(obj)] of detections ``x1 y1 x2 y2 score cls obj ...``
    (score = obj x class prob, so obj * prob is the score column)."""
    out = torch.zeros(2, nc)
    d = torch.cat([x[:, :7] for x in dets if x.numel()], 0).detach().float().cpu() if any(x.numel() for x in dets) else None
    if d is None:
        return out
    cls = d[:, 5].long().clamp(0, nc - 1)
    out[0].index_add_(0, cls, d[:, 4])
    out[1].index_add_(0, cls, d[:, 6])
    return out


class ClassGate:
    """The per-class ``cls_thres`` the Pseudo Label Assigner uses, updated once per SSOD epoch (``adaptive``)."""

    def __init__(self, nc: int, base: float = 0.0, mode: str = "fixed") -> None:
        if mode not in ("fixed", "adaptive"):
            raise ConfigError(f"ssod.cls_thres_mode must be 'fixed' or 'adaptive', got {mode!r}")
        self.nc, self.base, self.mode = int(nc), float(base), mode
        self.thres = torch.full((self.nc,), self.base)
        self._sums = torch.zeros(2, self.nc)

    def observe(self, dets: list[Tensor]) -> None:
        """Accumulate one batch of teacher detections (adaptive mode only; a no-op otherwise)."""
        if self.mode == "adaptive" and self.base > 0:
            self._sums += class_sums(dets, self.nc)

    def end_epoch(self, all_gather: GatherFn | None = None) -> None:
        """Recompute the gates from the epoch's sums (gathered over DDP ranks) and clear them."""
        if self.mode != "adaptive" or self.base <= 0:
            return
        sums = self._sums.reshape(-1)
        if all_gather is not None:
            sums = all_gather(sums).reshape(-1, 2 * self.nc).sum(0)
        self.thres = adaptive_class_gate(sums.reshape(2, self.nc).cpu(), self.base, self.thres)
        self._sums = torch.zeros(2, self.nc)

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "base": self.base, "thres": self.thres.clone(), "sums": self._sums.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore an adaptive gate saved with the same mode and ``cls_thres``; anything else (a fixed gate, or a
        run branched with other ``ssod.cls_thres*`` keys) keeps the gate this config sets."""
        if len(state["thres"]) != self.nc:
            raise CheckpointError(f"class gate state has {len(state['thres'])} classes, not {self.nc}: resume with "
                                  "the same dataset")
        if self.mode == "adaptive" and state.get("mode") == self.mode and state.get("base") == self.base:
            self.thres = torch.as_tensor(state["thres"], dtype=torch.float32).clone()
            self._sums = torch.as_tensor(state["sums"], dtype=torch.float32).clone()
