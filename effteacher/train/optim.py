"""Optimizer, LR schedule, warmup and gradient accumulation (YOLOv5 recipe)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from effteacher.config import OptimConfig
from effteacher.errors import ConfigError

# Names of the three parameter groups, in optimizer order. Stored in each group's "name" key.
GROUP_BIAS = "bias"  # every bias: no weight decay, its own warmup LR ramp (warmup_bias_lr -> lr)
GROUP_DECAY = "decay"  # conv/linear weights: scaled weight decay
GROUP_NO_DECAY = "no_decay"  # normalisation weights and other 1-D parameters: no weight decay
GROUP_NAMES = (GROUP_BIAS, GROUP_DECAY, GROUP_NO_DECAY)


def accumulate_steps(batch_size: int, nbs: int) -> int:
    """Optimizer steps are taken every ``max(round(nbs / batch_size), 1)`` batches."""
    return max(round(nbs / max(batch_size, 1)), 1)


def scaled_weight_decay(cfg: OptimConfig, batch_size: int) -> float:
    """Weight decay scaled by the effective batch: ``wd * batch * accumulate / nbs``."""
    return cfg.weight_decay * batch_size * accumulate_steps(batch_size, cfg.nbs) / cfg.nbs


def param_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split the trainable parameters of ``model`` into the three YOLOv5 groups.

    bias: parameters named ``bias``; no_decay: weights of normalisation layers (any ``nn`` class
    with "Norm" in its name) and any other parameter with ndim <= 1; decay: everything else
    (conv and linear weights). Shared parameters are counted once; frozen ones are skipped.
    """
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in GROUP_NAMES}
    seen: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if pname == "bias":
                groups[GROUP_BIAS].append(p)
            elif isinstance(module, norm_types) or p.ndim <= 1:
                groups[GROUP_NO_DECAY].append(p)
            else:
                groups[GROUP_DECAY].append(p)
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, batch_size: int) -> torch.optim.Optimizer:
    """SGD (nesterov, momentum ``cfg.momentum``) or AdamW (betas ``(cfg.momentum, 0.999)``).

    Three parameter groups in this order, each with a ``"name"`` key: ``bias`` (no decay),
    ``decay`` (weight decay ``scaled_weight_decay(cfg, batch_size)``), ``no_decay`` (norm weights).
    Groups may be empty. All LRs start at ``cfg.lr0``; warmup and the scheduler adjust them.
    """
    groups = param_groups(model)
    wd = scaled_weight_decay(cfg, batch_size)
    decay = {GROUP_BIAS: 0.0, GROUP_DECAY: wd, GROUP_NO_DECAY: 0.0}
    specs = [{"params": groups[n], "weight_decay": decay[n], "name": n} for n in GROUP_NAMES]
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(specs, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(specs, lr=cfg.lr0, betas=(cfg.momentum, 0.999))
    raise ConfigError(f"unknown optimizer '{cfg.optimizer}'; use optim.optimizer: sgd or adamw")


def lr_lambda(cfg: OptimConfig, epochs: int) -> Callable[[int], float]:
    """LR multiplier per epoch: 1 at epoch 0 falling to ``cfg.lrf`` at ``epochs``.

    Linear: ``max(1 - x/epochs, 0) * (1 - lrf) + lrf``; cosine (``cfg.cos_lr``): one-cycle
    ``(1 - cos(pi * x/epochs)) / 2 * (lrf - 1) + 1``. A plain function (not an object) so
    ``LambdaLR.state_dict`` does not store it: on resume it is rebuilt from cfg and the (possibly
    extended) epoch count.
    """
    lrf, n = cfg.lrf, max(int(epochs), 1)
    if cfg.cos_lr:

        def cosine(x: int) -> float:
            t = min(max(x / n, 0.0), 1.0)
            return (1 - math.cos(math.pi * t)) / 2 * (lrf - 1) + 1

        return cosine

    def linear(x: int) -> float:
        return max(1 - x / n, 0.0) * (1.0 - lrf) + lrf

    return linear


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int) -> LambdaLR:
    """Per-epoch LambdaLR with ``lr_lambda(cfg, epochs)``; call ``.step()`` once per epoch.

    On resume, build it the same way and ``load_state_dict`` the saved state (last epoch, base LRs).
    """
    return LambdaLR(optimizer, lr_lambda=lr_lambda(cfg, epochs))


def warmup_iters(cfg: OptimConfig, n_batches_per_epoch: int, cap: int | None = None) -> int:
    """Warmup length in iterations: ``max(round(warmup_epochs * nb), 100)``, at most ``cap``.

    Returns 0 when ``cfg.warmup_epochs <= 0``. Pass ``cap`` (e.g. a third of all training
    iterations) so tiny runs do not spend every step warming up.
    """
    if cfg.warmup_epochs <= 0:
        return 0
    n = max(round(cfg.warmup_epochs * n_batches_per_epoch), 100)
    if cap is not None:
        n = min(n, max(int(cap), 0))
    return int(n)


def warmup_accumulate(it: int, n_warmup: int, batch_size: int, nbs: int) -> int:
    """Accumulation steps during warmup: ramps from 1 to ``nbs / batch_size`` (then stays)."""
    if n_warmup <= 0 or it >= n_warmup:
        return accumulate_steps(batch_size, nbs)
    return max(1, int(np.interp(it, [0, n_warmup], [1, nbs / max(batch_size, 1)]).round()))


def apply_warmup(
    optimizer: torch.optim.Optimizer, it: int, n_warmup: int, epoch_lr_lambda_value: float, cfg: OptimConfig
) -> None:
    """Set LR and momentum of every group for global iteration ``it`` (< ``n_warmup``).

    LR: the ``bias`` group goes from ``cfg.warmup_bias_lr`` down, the others from 0 up, to
    ``initial_lr * epoch_lr_lambda_value`` (``initial_lr`` is set by the scheduler; ``cfg.lr0``
    if there is none). Momentum (SGD ``momentum``, AdamW ``betas[0]``) goes from
    ``cfg.warmup_momentum`` to ``cfg.momentum``. Linear in ``it`` (numpy.interp). Does nothing once
    ``it >= n_warmup``, so the scheduler's values stand after warmup.
    """
    if n_warmup <= 0 or it >= n_warmup:
        return
    xi = [0, n_warmup]
    momentum = float(np.interp(it, xi, [cfg.warmup_momentum, cfg.momentum]))
    for group in optimizer.param_groups:
        start = cfg.warmup_bias_lr if group.get("name") == GROUP_BIAS else 0.0
        target = group.get("initial_lr", cfg.lr0) * epoch_lr_lambda_value
        group["lr"] = float(np.interp(it, xi, [start, target]))
        if "momentum" in group:
            group["momentum"] = momentum
        elif "betas" in group:
            group["betas"] = (momentum, group["betas"][1])


def run_optimizer(state: dict[str, Any]) -> tuple[str, float] | None:
    """(optimizer, lr0) a resumed run was trained with, read from its saved optimizer state; None if unknown.

    ``optim.optimizer: auto`` picks by the planned iterations, which grow when ``--epochs`` extends a run:
    the run keeps the optimizer (and LR) its saved state belongs to.
    """
    groups = state.get("optimizer", {}).get("param_groups") or [{}]
    g = groups[0]
    name = "adamw" if "betas" in g else "sgd" if "nesterov" in g else None
    lr0 = g.get("initial_lr")
    return None if name is None or lr0 is None else (name, float(lr0))
