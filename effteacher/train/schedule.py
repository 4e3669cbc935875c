"""Training schedules in iterations, sized from the data: auto burn-in, SSOD phase length, EMA windows.

Pure functions; the trainer owns the state they read. An "iteration" is one labeled batch in burn-in
and one (labeled + unlabeled) batch in SSOD; optimizer steps are iterations / accumulate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from effteacher.config import OptimConfig, SchedConfig, TrainConfig

YOLOV5_EMA_WINDOW = 10_000  # 1 / (1 - 0.9999): YOLOv5's model EMA
ADAMW_BELOW_STEPS = 10_000  # ultralytics' 'auto' optimizer: AdamW below 10k iterations, else SGD
LR0 = {"sgd": 0.01, "adamw": 0.002}


def burn_in_epoch_bounds(sched: SchedConfig, nb_burn: int) -> tuple[int, int]:
    """(min, max) burn-in epochs of ``nb_burn`` iterations each covering ``sched.min_steps`` / ``max_steps``."""
    nb = max(nb_burn, 1)
    lo = max(math.ceil(sched.min_steps / nb), 1)
    return lo, max(math.ceil(sched.max_steps / nb), lo)


def val_every_auto(sched: SchedConfig, nb_burn: int) -> int:
    """Validate every this many burn-in epochs so validations come about every ``sched.val_steps`` iterations."""
    return max(round(sched.val_steps / max(nb_burn, 1)), 1)


@dataclass
class Plateau:
    """Validation history of an auto burn-in: the best EMA fitness and the iteration it was reached at."""

    best: float = -1.0
    best_step: int = 0

    def update(self, fitness: float, step: int) -> None:
        if fitness > self.best:
            self.best, self.best_step = float(fitness), int(step)


def burn_in_done(p: Plateau, step: int, sched: SchedConfig, last_epoch: bool = False) -> str | None:
    """Why the auto burn-in ends now (a sentence for the log), or None to go on.

    Ends when ``sched.min_steps`` iterations are done and the validated fitness has not improved for
    ``sched.patience_steps`` iterations, or at ``sched.max_steps`` (or the last allowed epoch).
    """
    if step >= sched.max_steps or last_epoch:
        return f"reached the burn-in limit of {step} iterations (best fitness {p.best:.4f} at {p.best_step})"
    if step < sched.min_steps:
        return None
    if step - p.best_step >= sched.patience_steps:
        return (f"validation fitness has not improved for {step - p.best_step} iterations (best {p.best:.4f} at "
                f"iteration {p.best_step}; patience {sched.patience_steps})")
    return None


def patience_out(epoch: int, best_epoch: int, patience: int, handover: int | None, polishing: bool = False) -> bool:
    """True when ``patience`` epochs have passed without a better validation (YOLOv5's early stop).

    ``handover`` is the first SSOD epoch (None for supervised runs or while an auto burn-in is
    undecided). The SSOD phase gets its own clock from the hand-over: an auto burn-in ends after a
    plateau by design, so counting from the burn-in's best epoch stopped a run with short labeled
    epochs (4 iterations each) after one SSOD epoch. Before the hand-over of an SSOD run (a fixed
    ``--burn-in`` still running) it never fires: an SSOD run is not ended before its SSOD phase.

    A supervised run's polishing (``polishing``) is never cut: it is the LR annealing planned after a plateau
    already found, and its gain comes at the end. Counted in labeled epochs, 100 epochs of patience are a few
    thousand iterations, a fraction of the polishing, where the SSOD phase's epochs (passes over the
    unlabeled images) make the same patience several times its length.
    """
    if polishing:
        return False
    start = best_epoch if handover is None else max(best_epoch, handover - 1)
    return epoch - start >= patience


def ssod_epochs(burn_steps: int, nb_ssod: int, factor: float) -> int:
    """SSOD epochs (passes over U of ``nb_ssod`` iterations) giving at least ``factor`` x the burn-in iterations."""
    return max(math.ceil(factor * burn_steps / max(nb_ssod, 1)), 1)


def planned_steps(sched: SchedConfig, nb_burn: int, fixed_total: int | None) -> int:
    """Expected iterations of the whole run: ``fixed_total`` when known, else an auto-schedule estimate.

    The auto estimate: a burn-in of 100 epochs within [min_steps, max_steps] plus its SSOD phase.
    """
    if fixed_total is not None:
        return int(fixed_total)
    burn = min(max(sched.min_steps, 100 * max(nb_burn, 1)), sched.max_steps)
    return int(burn * (1.0 + sched.ssod_factor))


def resolve_optimizer(cfg: OptimConfig, steps: int) -> tuple[str, float]:
    """(optimizer, lr0) with ``'auto'`` and ``lr0 = 0`` resolved.

    auto: AdamW below 10k iterations (ultralytics' rule; from scratch it learns in a few hundred steps
    where SGD barely starts), SGD above. lr0 0: 0.002 (AdamW), 0.01 (SGD).
    """
    name = cfg.optimizer
    if name == "auto":
        name = "adamw" if steps < ADAMW_BELOW_STEPS else "sgd"
    return name, (cfg.lr0 if cfg.lr0 > 0 else LR0[name])


def accumulate_for(batch: int, nbs: int, nb_burn: int) -> int:
    """Gradient accumulation up to ``nbs``, but at least 4 optimizer steps per burn-in epoch (tiny L)."""
    acc = max(round(nbs / max(batch, 1)), 1)
    return max(min(acc, nb_burn // 4), 1)


def ema_schedule(window_steps: float, max_decay: float) -> tuple[float, float]:
    """(decay, tau) of a model EMA averaging over about ``window_steps`` updates, ramped like YOLOv5.

    YOLOv5's EMA (decay 0.9999, ramp tau 2,000) averages over 10,000 updates after a 2,000-update
    ramp, so a run of 1,500 updates validates an EMA that is hardly averaged (decay 0.5 at update
    1,400) and swings from one validation to the next. Here the window scales with the run: decay
    ``1 - 1/window`` (at most ``max_decay``), ramp ``tau = window / 5``.
    """
    cap = 1.0 / max(1.0 - max_decay, 1e-9)
    w = min(max(float(window_steps), 20.0), cap)
    return 1.0 - 1.0 / w, w / 5.0


def teacher_decay(cfg_decay: float, ssod_updates: int) -> float:
    """The teacher's EMA decay after burn-in: ``cfg_decay`` if > 0, else auto.

    auto: averages over a tenth of the SSOD phase, 100 to 1,000 updates (decay 0.99 to 0.999, the
    paper's value for runs of 100k+ steps): a 0.999 teacher over a 300-step CPU run hardly moves.
    """
    if cfg_decay > 0:
        return float(cfg_decay)
    w = min(max(ssod_updates / 10.0, 100.0), 1000.0)
    return 1.0 - 1.0 / w


def lr_factor(cfg: OptimConfig, x: int, total: int, const_until: int = 0) -> float:
    """LR multiplier at optimizer step ``x``: 1 until ``const_until``, then linear (or cosine) to ``lrf`` at ``total``."""
    if x < const_until:
        return 1.0
    n, t = max(total - const_until, 1), x - const_until
    if cfg.cos_lr:
        u = min(max(t / n, 0.0), 1.0)
        return (1 - math.cos(math.pi * u)) / 2 * (cfg.lrf - 1) + 1
    return max(1 - t / n, 0.0) * (1.0 - cfg.lrf) + cfg.lrf


def lr_fn(get: Callable[[], tuple[int, int]], cfg: OptimConfig) -> Callable[[int], float]:
    """A LambdaLR function reading ``(total, const_until)`` from ``get`` at each call (changes at hand-over)."""

    def f(x: int) -> float:
        total, const_until = get()
        return lr_factor(cfg, x, total, const_until)

    return f


class EpochPlan:
    """The epoch plan of one run: burn-in epochs (None while an auto burn-in waits for its plateau), the last
    epoch, the LR span and the EMA window, from the config and the loaders' lengths."""

    def __init__(self, cfg: TrainConfig, ssod: bool, nb_burn: int, nb_ssod: int) -> None:
        self.cfg, self.ssod = cfg, ssod
        self.nb_burn, self.nb_ssod = max(nb_burn, 1), max(nb_ssod, 1)
        self.accumulate = accumulate_for(cfg.batch, cfg.optim.nbs, self.nb_burn)
        self.auto = cfg.burn_in == "auto" if ssod else cfg.epochs <= 0
        self.plateau = Plateau()
        self.reason = ""
        self.burn: int | None = None
        self.end: int | None = None
        self.lr_span = (10**12, 10**12)  # (total, constant-until) in optimizer steps: constant while undecided
        lo, hi = burn_in_epoch_bounds(cfg.sched, self.nb_burn)
        if cfg.epochs > 0:
            hi = min(hi, cfg.epochs - 1 if ssod else cfg.epochs)
        self.bounds = (min(lo, hi), max(hi, 1))
        if not self.auto:
            self.set_burn(int(cfg.burn_in) if ssod else cfg.epochs)
        self.planned = planned_steps(cfg.sched, self.nb_burn, None if self.end is None else self.iters_until(self.end))

    def iters_until(self, epoch: int) -> int:
        """Iterations done at the end of ``epoch`` (burn-in epochs over L, SSOD epochs over U)."""
        burn = epoch if self.burn is None or not self.ssod else min(self.burn, epoch)
        return burn * self.nb_burn + (epoch - burn) * self.nb_ssod

    def set_burn(self, burn: int) -> None:
        """Burn-in length known: the last epoch and the LR schedule follow (SSOD phase: ssod_factor x burn-in;
        a supervised auto run's polishing: polish_factor x its plateau).

        Fixed schedules decay the LR from the first step (YOLOv5); an auto burn-in keeps it constant
        until the hand-over (or plateau) and decays it over the SSOD (or polishing) phase.
        """
        cfg = self.cfg
        self.burn = int(burn)
        if not self.ssod:  # a supervised auto schedule may polish after its plateau (sched.polish_factor)
            polish = math.ceil(cfg.sched.polish_factor * self.burn) if self.auto else 0
            self.end = self.burn + polish
        elif cfg.epochs > 0:
            self.end = cfg.epochs
        else:
            self.end = self.burn + ssod_epochs(self.burn * self.nb_burn, self.nb_ssod, cfg.sched.ssod_factor)
        total = -(-self.iters_until(self.end) // self.accumulate)
        start = -(-self.burn * self.nb_burn // self.accumulate) if self.auto else 0
        self.lr_span = (max(total, 1), start)

    def resume(self, burn: int | None) -> None:
        """Take over a resumed run's burn-in decision: the epochs of an auto burn-in decided before the
        interruption (``burn``, None while it was still undecided).

        A plan whose burn-in the config fixes (``--burn-in N``, or a supervised run's ``--epochs``, whose
        "burn-in" is the whole run) keeps its own: ``--resume RUN --epochs N`` extends it to ``N``.
        """
        if burn is not None and self.burn is None:
            self.set_burn(int(burn))

    def ema_window(self) -> float:
        """The supervised EMA's window in updates: cfg ``optim.ema_window``, else 10% of a fixed run or 20% of
        the auto burn-in's patience (it must average step noise, yet follow a model that still improves)."""
        if self.cfg.optim.ema_window > 0:
            return self.cfg.optim.ema_window / self.accumulate
        if self.end is not None:
            return 0.1 * self.iters_until(self.end) / self.accumulate
        return 0.2 * self.cfg.sched.patience_steps / self.accumulate

    def warmup_cap(self) -> int:
        """Warm-up at most a quarter of a fixed run, or half the auto burn-in's minimum."""
        if self.end is None:
            return max(self.cfg.sched.min_steps // 2, 1)
        return max(self.iters_until(self.end) // 4, 1)

    def polishing(self) -> bool:
        """A supervised auto schedule that goes on after its plateau with a decaying LR."""
        return not self.ssod and self.auto and self.burn is not None and self.end is not None and self.end > self.burn

    def in_burn_in(self, epoch: int) -> bool:
        return self.burn is None or epoch < self.burn

    def last_epoch(self) -> int:
        return self.end if self.end is not None else self.bounds[1]

    def ssod_updates(self) -> int:
        """Optimizer steps of the SSOD phase (0 before the burn-in length is known)."""
        if self.burn is None or self.end is None:
            return 0
        return int((self.end - self.burn) * self.nb_ssod / self.accumulate)
