"""The steps after each epoch, in a fixed order: validate, decide an auto burn-in, log, early stop, report, save."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from effteacher.config import TrainConfig
from effteacher.train.checkpointer import Checkpointer
from effteacher.train.parts import TrainParts
from effteacher.train.results_csv import CSVLogger, epoch_summary, results_row
from effteacher.train.schedule import burn_in_done, patience_out, val_every_auto
from effteacher.train.tb_logger import TensorBoardLogger
from effteacher.train.train_data import TrainData
from effteacher.utils.console import info, warn
from effteacher.utils.progress import print_threshold_table


@dataclass
class EpochOutcome:
    """What one epoch produced, filled in step by step."""

    epoch: int  # 0-based
    means: dict[str, float]
    seconds: float
    ssod_epoch: bool
    validated: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    fitness: float = -1.0
    decided_stop: bool = False  # an auto schedule ended a supervised run
    early: bool = False  # --patience ran out
    finished: bool = False  # the run ends after this epoch


class EpochEnd:
    """Rank 0's end of an epoch; ``__call__`` runs the steps in order and returns True to stop the run."""

    def __init__(self, cfg: TrainConfig, parts: TrainParts, data: TrainData, csv: CSVLogger,
                 checkpointer: Checkpointer, tb: TensorBoardLogger | None = None) -> None:
        self.cfg, self.parts, self.data, self.csv, self.checkpointer = cfg, parts, data, csv, checkpointer
        self.tb = tb

    def __call__(self, epoch: int, means: dict[str, float], seconds: float, ssod_epoch: bool) -> bool:
        o = EpochOutcome(epoch, means, seconds, ssod_epoch)
        auto = self.parts.plan.burn is None  # before this epoch's decision
        last = epoch + 1 >= self.parts.plan.last_epoch()
        self.validate(o, auto, last)
        self.decide_burn_in(o, auto, last)
        self.log(o)
        self.early_stop(o, auto)
        o.finished = o.decided_stop or o.early or epoch + 1 >= self.parts.plan.last_epoch()
        self.report(o)
        self.save(o)
        return o.decided_stop or o.early

    def validate(self, o: EpochOutcome, auto: bool, last: bool) -> None:
        """Validate the EMA (the teacher in SSOD) on SSOD epochs, every val_every epochs, the last and the hand-over."""
        p, plan = self.parts, self.parts.plan
        every = val_every_auto(self.cfg.sched, plan.nb_burn) if auto or plan.polishing() else self.cfg.val_every
        if not (o.ssod_epoch or (o.epoch + 1) % every == 0 or last or o.epoch + 1 == plan.burn):
            return
        assert p.evaluator is not None
        result = p.evaluator.run(p.ema.module, save_dir=None, plots=False, verbose=self.cfg.verbose)
        o.validated, o.metrics, o.fitness = True, result.as_dict(), result.fitness()
        if o.fitness > p.progress.best_fitness:
            p.progress.best_fitness, p.progress.best_epoch = o.fitness, o.epoch

    def decide_burn_in(self, o: EpochOutcome, auto: bool, last: bool) -> None:
        """Auto burn-in: end it when validation plateaus (hand-over for SSOD, the end of a supervised run)."""
        p, plan = self.parts, self.parts.plan
        if not (auto and o.validated):
            return
        plan.plateau.update(o.fitness, p.progress.iteration)
        reason = burn_in_done(plan.plateau, p.progress.iteration, self.cfg.sched, last_epoch=last)
        if not reason:
            return
        plan.reason = reason
        plan.set_burn(o.epoch + 1)
        if p.ssod is not None:
            what = "hand-over to SSOD"
        elif plan.polishing():
            what = f"plateau: polishing for {plan.last_epoch() - plan.burn} epochs with a decaying LR"
        else:
            what = "supervised training done"
        info(f"{what} after epoch {o.epoch + 1} ({p.progress.iteration} iterations): {reason}")
        o.decided_stop = p.ssod is None and not plan.polishing()

    def log(self, o: EpochOutcome) -> None:
        """The results.csv row and the epoch's summary lines."""
        p = self.parts
        domain_adapt = p.ssod is not None and p.ssod.disc is not None
        row = results_row(o.epoch + 1, o.seconds, p.progress.iteration, p.scheduler.last_epoch, o.means, o.metrics,
                          p.optimizer.param_groups[0]["lr"], domain_adapt=domain_adapt)
        self.csv.log(row)
        for line in epoch_summary(row):
            info(line)
        if self.tb is not None:
            self.tensorboard(o, row)

    def tensorboard(self, o: EpochOutcome, row: dict[str, Any]) -> None:
        """The row, the thresholds after an SSOD epoch, the epoch's pictures and, at the end of burn-in, the
        hand-over (logged here, before last.pt is saved, so a resumed run never logs it twice)."""
        assert self.tb is not None
        ssod, plan = self.parts.ssod, self.parts.plan
        if ssod is not None and plan.burn == o.epoch + 1:
            why = plan.reason or "fixed --burn-in"
            text = (f"burn-in done after {plan.burn} epochs ({self.parts.progress.iteration} iterations, "
                    f"{row['train/steps']} optimizer steps): {why}; student <- EMA weights, teacher = EMA; "
                    f"{(plan.end or plan.burn) - plan.burn} SSOD epochs follow")
            self.tb.hand_over(int(row["train/steps"]), plan.burn, text)
        th = ssod.thresholds if o.ssod_epoch and ssod is not None else None
        self.tb.epoch(row, (th.tau1, th.tau2) if th is not None else None, self.data.names)  # flushes

    def early_stop(self, o: EpochOutcome, auto: bool) -> None:
        """--patience epochs without a better validation (the SSOD phase's clock starts at the hand-over)."""
        p = self.parts
        handover = p.plan.burn if p.ssod is not None else None
        o.early = not auto and patience_out(o.epoch, p.progress.best_epoch, self.cfg.patience, handover,
                                            p.plan.polishing())
        if o.early:
            info(f"stopping early: no better validation in the last {self.cfg.patience} epochs (--patience; best at "
                 f"epoch {p.progress.best_epoch + 1})")

    def report(self, o: EpochOutcome) -> None:
        """SSOD epochs: the per-class threshold table (verbose or at the end) and pseudo-label warnings."""
        ssod = self.parts.ssod
        if not o.ssod_epoch or ssod is None:
            return
        if self.cfg.verbose or o.finished:
            print_threshold_table(ssod.thresholds.tau1, ssod.thresholds.tau2, self.data.names)
        labeled = self.data.labeled
        warn_pseudo(o.means, sum(r.n for r in labeled) / max(len(labeled), 1))

    def save(self, o: EpochOutcome) -> None:
        is_best = o.validated and o.fitness == self.parts.progress.best_fitness
        self.checkpointer.save(o.epoch, o.metrics, is_best, o.finished, o.validated)


def warn_pseudo(means: dict[str, Any], per_img_labeled: float) -> None:
    """Warn when an SSOD epoch had no pseudo labels, or far more per image than the labeled images have boxes."""
    rel = means.get("reliable", 0.0) + means.get("uncertain", 0.0)
    if rel == 0.0:
        warn("no pseudo labels this epoch: the teacher is not confident yet; train longer (--burn-in) "
             "or lower the thresholds (--thresholds fixed with cfg ssod.tau1/tau2)")
    elif rel > 5 * max(per_img_labeled, 1.0):
        warn(f"{rel:.1f} pseudo boxes per image vs {per_img_labeled:.1f} labeled: thresholds look too low; "
             "raise cfg ssod.tau1/tau2 or use --thresholds adaptor")
