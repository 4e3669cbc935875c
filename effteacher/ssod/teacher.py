"""Mean teacher: the EMA model, the burn-in hand-over, and the flip-ensemble teacher prediction."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module behind a DDP/DataParallel wrapper (``.module``), or the model itself."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters AND buffers.

    ``ema = d * ema + (1 - d) * student`` after every optimizer step, with
    ``d = decay * (1 - exp(-updates / tau))`` (YOLOv5-style ramp that lets early updates follow
    the student quickly). ``tau = 0`` disables the ramp: ``d = decay`` at every step, which is what
    the SSOD teacher uses after burn-in (decay 0.999, Mean Teacher).

    ``.module`` is a deep copy of the (unwrapped) student in eval mode with ``requires_grad=False``.
    Integer buffers (e.g. BatchNorm ``num_batches_tracked``) are copied from the student.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.module: nn.Module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = int(updates)

    def _decay_at(self, updates: int) -> float:
        if self.tau <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    def set_decay(self, decay: float, tau: float = 0.0) -> None:
        """Change the schedule (e.g. the teacher's constant 0.999 after burn-in: ``tau=0``)."""
        self.decay = float(decay)
        self.tau = float(tau)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Blend the student into the EMA; returns the decay ``d`` that was used.

        Works with DDP-wrapped students and with students whose tensors differ in dtype from the
        EMA's (values are cast to the EMA tensor's dtype before blending).
        """
        self.updates += 1
        d = self._decay_at(self.updates)
        student = unwrap(model).state_dict()
        dst: list[Tensor] = []
        src: list[Tensor] = []
        for name, ema_v in self.module.state_dict().items():
            s = student[name].detach()
            if ema_v.dtype.is_floating_point:
                dst.append(ema_v)
                src.append(s.to(device=ema_v.device, dtype=ema_v.dtype))
            else:
                ema_v.copy_(s)
        if dst:  # two fused multi-tensor kernels instead of two per tensor
            torch._foreach_mul_(dst, d)
            torch._foreach_add_(dst, src, alpha=1.0 - d)
        return d

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers only (safe with ``torch.load(weights_only=True)``)."""
        return {
            "module": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
            "updates": int(self.updates),
            "decay": float(self.decay),
            "tau": float(self.tau),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights and schedule saved by ``state_dict``."""
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.tau = float(state["tau"])


@torch.no_grad()
def hand_over(student: nn.Module, ema: ModelEMA) -> None:
    """Burn-in hand-over: load the EMA weights INTO the student's own tensors (in place).

    The student's Parameter objects stay the same (an optimizer holding them keeps working and
    they keep ``requires_grad``); only their values become the EMA's. The EMA itself is untouched
    and stays the teacher. (The reference code rebinds state-dict entries instead, a no-op.)
    """
    unwrap(student).load_state_dict(ema.module.state_dict())


def mirror_raw(raw: Tensor) -> Tensor:
    """Map one level's raw output of a horizontally flipped image back to the original frame.

    raw: (B, na, H, W, 5+nc) logits. The grid is flipped along W; the x-offset logit is negated,
    because for a cell j of a W-cell map ``W*s - (2*sig(t) - 0.5 + (W-1-j))*s
    = (2*sig(-t) - 0.5 + j)*s``. Anchors are mirror-symmetric, so nothing else changes.
    """
    out = raw.flip(3).clone()
    out[..., 0] = -out[..., 0]
    return out


@torch.no_grad()
def flip_ensemble_predict(
    model: nn.Module,
    x: Tensor,
    decode_fn: Callable[[list[Tensor], Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """Humble-Teacher prediction: average of the decoded predictions of x and of its mirror image.

    model: a Detector (``model(x)`` -> raw per-level (B, na, H_i, W_i, 5+nc), ``.anchors``,
    ``.stride``). x: (B, 3, H, W) float, W a multiple of the largest stride. The flipped run is
    mapped back per anchor location (see ``mirror_raw``), both runs are decoded, and boxes
    (pixels) and probabilities are averaged anchor by anchor. Returns (B, A, 5+nc) like ``decode``.
    decode_fn defaults to ``effteacher.models.head.decode``.
    """
    if decode_fn is None:
        from effteacher.models.head import decode as decode_fn
    net = unwrap(model)
    smax = int(net.stride.max().item())
    if x.shape[-1] % smax:
        raise ValueError(f"flip_ensemble_predict: image width {x.shape[-1]} is not a multiple of stride {smax}")
    raw = [r.float() for r in net(x)]  # decoded in fp32 also when the network ran under autocast
    raw_f = [mirror_raw(r.float()) for r in net(x.flip(-1))]
    with torch.autocast(x.device.type, enabled=False):
        return 0.5 * (decode_fn(raw, net.anchors, net.stride) + decode_fn(raw_f, net.anchors, net.stride))
