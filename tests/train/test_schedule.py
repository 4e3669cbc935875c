"""Schedules sized from the data: auto burn-in decisions, epoch plans, EMA windows, the auto optimizer."""

import pytest

from effteacher.config import OptimConfig, SchedConfig, TrainConfig, replace
from effteacher.train.schedule import (
    EpochPlan,
    Plateau,
    burn_in_done,
    ema_schedule,
    lr_factor,
    patience_out,
    resolve_optimizer,
    ssod_epochs,
    teacher_decay,
    val_every_auto,
)

S = SchedConfig(min_steps=500, max_steps=5000, patience_steps=1000, val_steps=100)


def test_burn_in_waits_for_min_steps_then_a_plateau():
    p = Plateau()
    p.update(0.10, 100)
    p.update(0.30, 400)
    p.update(0.29, 450)  # no improvement: best stays at 400
    assert p.best == 0.30 and p.best_step == 400
    assert burn_in_done(p, 450, S) is None  # below min_steps
    assert burn_in_done(p, 1399, S) is None  # 999 iterations without improvement < patience
    why = burn_in_done(p, 1400, S)
    assert why and "not improved for 1000 iterations" in why
    assert "limit" in burn_in_done(Plateau(), 5000, S)
    assert "limit" in burn_in_done(Plateau(), 10, S, last_epoch=True)


def test_plan_for_30_and_3000_labeled_images():
    cfg = TrainConfig(sched=S)
    tiny = EpochPlan(cfg, ssod=True, nb_burn=2, nb_ssod=188)  # 30 labeled, 3,000 unlabeled, batch 16
    assert tiny.burn is None and tiny.accumulate == 1  # every batch steps the optimizer
    assert tiny.bounds[0] * 2 >= 500 and tiny.bounds[1] * 2 >= 5000  # a few hundred burn-in iterations at least
    assert val_every_auto(S, 2) == 50
    assert resolve_optimizer(cfg.optim, tiny.planned) == ("adamw", 0.002)
    tiny.set_burn(300)  # plateau after 600 iterations -> SSOD phase of ssod_factor x 600 iterations
    assert tiny.end == 300 + ssod_epochs(600, 188, S.ssod_factor) and tiny.lr_span[1] == 600
    big = EpochPlan(cfg, ssod=True, nb_burn=188, nb_ssod=1688)  # 3,000 labeled, 27,000 unlabeled
    assert big.accumulate == 4 and resolve_optimizer(cfg.optim, big.planned)[0] == "sgd"
    assert resolve_optimizer(replace(cfg.optim, optimizer="adamw", lr0=0.001), big.planned) == ("adamw", 0.001)


def test_fixed_plan_keeps_yolov5_schedule_and_epoch_caps():
    cfg = TrainConfig(epochs=12, burn_in=10, sched=S)
    p = EpochPlan(cfg, ssod=True, nb_burn=4, nb_ssod=20)
    assert (p.burn, p.end) == (10, 12) and p.iters_until(12) == 10 * 4 + 2 * 20
    assert p.lr_span == (80, 0)  # linear decay from the first step over all 80 optimizer steps
    sup = EpochPlan(replace(cfg, epochs=0), ssod=False, nb_burn=4, nb_ssod=4)
    assert sup.auto and sup.end is None
    auto_capped = EpochPlan(replace(cfg, burn_in="auto"), ssod=True, nb_burn=4, nb_ssod=20)
    assert auto_capped.bounds[1] == 11  # --epochs 12 leaves at least one SSOD epoch


def test_supervised_auto_plan_polishes_after_its_plateau():
    """sched.polish_factor: a supervised auto run goes on after the plateau with the LR decaying from lr0 to lrf
    over polish_factor x the plateau's iterations; 0 stops at the plateau, and fixed runs never polish."""
    cfg = TrainConfig(epochs=0, sched=replace(S, polish_factor=0.5))
    p = EpochPlan(cfg, ssod=False, nb_burn=4, nb_ssod=4)
    assert not p.polishing()
    p.set_burn(100)  # plateau after 400 iterations
    assert (p.burn, p.end, p.last_epoch()) == (100, 150, 150) and p.polishing()
    assert p.lr_span == (600, 400)  # constant until the plateau, then linear over the 200 polishing iterations
    default = EpochPlan(replace(cfg, sched=S), ssod=False, nb_burn=4, nb_ssod=4)
    default.set_burn(100)
    assert default.end == 200 and default.polishing()  # polish_factor 1.0 by default
    stop = EpochPlan(replace(cfg, sched=replace(S, polish_factor=0.0)), ssod=False, nb_burn=4, nb_ssod=4)
    stop.set_burn(100)
    assert stop.end == 100 and not stop.polishing()
    fixed = EpochPlan(replace(cfg, epochs=30), ssod=False, nb_burn=4, nb_ssod=4)
    assert fixed.end == 30 and not fixed.polishing()
    resumed = EpochPlan(cfg, ssod=False, nb_burn=4, nb_ssod=4)
    resumed.resume(100)  # last.pt's burn_epochs: the same plan again
    assert (resumed.end, resumed.lr_span) == (150, (600, 400)) and resumed.polishing()


def test_patience_clock_restarts_at_the_hand_over():
    """Regression: the small sample (4-iteration labeled epochs) had its best burn-in validation at epoch 1102 and
    handed over at 1254; counting --patience 100 from the burn-in's best stopped it after one SSOD epoch."""
    assert patience_out(1254, 1101, 100, None)  # supervised / undecided runs: YOLOv5's rule
    assert not patience_out(1254, 1101, 100, 1254)  # first SSOD epoch
    assert not patience_out(1352, 1101, 100, 1254)
    assert patience_out(1353, 1101, 100, 1254)  # 100 SSOD epochs without a better validation
    assert not patience_out(1400, 1350, 100, 1254)  # a better SSOD validation moves the clock
    assert patience_out(16, 6, 10, 5) and not patience_out(15, 6, 10, 5)  # best after the hand-over: plain rule
    assert not patience_out(1200, 50, 100, 1254)  # a fixed burn-in still running is not cut short
    assert not patience_out(2000, 100, 100, None, polishing=True)  # a supervised run's polishing runs to its end


def test_lr_factor_constant_then_decay():
    o = OptimConfig(lrf=0.01)
    assert lr_factor(o, 50, 200, const_until=100) == 1.0
    assert lr_factor(o, 100, 200, const_until=100) == 1.0
    assert lr_factor(o, 150, 200, const_until=100) == pytest.approx(0.505)
    assert lr_factor(o, 200, 200, const_until=100) == pytest.approx(0.01)


def test_ema_window_suits_short_runs():
    decay, tau = ema_schedule(150, 0.9999)
    assert decay == pytest.approx(1 - 1 / 150) and tau == pytest.approx(30)
    d_at = decay * (1 - 2.718281828 ** (-900 / tau))  # YOLOv5's ramp gives 0.36 at update 900
    assert d_at > 0.99
    assert ema_schedule(10**9, 0.9999)[0] == pytest.approx(0.9999)  # never beyond YOLOv5's decay
    assert ema_schedule(1, 0.9999)[0] == pytest.approx(0.95)  # at least 20 updates
    assert teacher_decay(0.0, 300) == pytest.approx(0.99) and teacher_decay(0.0, 10**6) == pytest.approx(0.999)
    assert teacher_decay(0.9996, 300) == 0.9996
