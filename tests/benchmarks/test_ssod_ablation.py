"""benchmarks/ssod_ablation.py: the ablation versus the default, per validation and at equal iterations."""

from __future__ import annotations

import pytest


def test_ablation_versus_the_default_per_validation():
    """Variant minus default at the same epoch, the shared hand-over row left out; epochs the default lacks skipped."""
    from benchmarks.ssod_ablation import MAP, versus

    ref = [{"epoch": 10, MAP: 0.40}, {"epoch": 11, MAP: 0.42}, {"epoch": 12, MAP: 0.44}]
    run = [{"epoch": 10, MAP: 0.40}, {"epoch": 11, MAP: 0.43}, {"epoch": 12, MAP: 0.43}, {"epoch": 13, MAP: 0.5}]
    mean, lo, hi, n = versus(run, ref)
    assert n == 2 and lo == pytest.approx(-0.01) and hi == pytest.approx(0.01) and mean == pytest.approx(0.0)
    assert versus(run[:1], ref)[3] == 0


def test_ablation_compares_equal_iterations_when_epochs_differ():
    """A variant with half-length SSOD epochs (unlabeled_ratio 2) is compared with the default at the same
    optimizer iteration, the default interpolated between its validations, not at the same epoch number."""
    from benchmarks.ssod_ablation import MAP, value_at, versus

    it = "train/iterations"
    ref = [{"epoch": 10, it: 100, MAP: 0.40}, {"epoch": 11, it: 130, MAP: 0.43}, {"epoch": 12, it: 160, MAP: 0.46}]
    run = [{"epoch": 10, it: 100, MAP: 0.40}, {"epoch": 11, it: 115, MAP: 0.42}, {"epoch": 12, it: 130, MAP: 0.44},
           {"epoch": 13, it: 145, MAP: 0.44}, {"epoch": 14, it: 160, MAP: 0.46}, {"epoch": 15, it: 175, MAP: 0.9}]
    assert value_at(ref, 115) == pytest.approx(0.415) and value_at(ref, 160) == pytest.approx(0.46)
    assert value_at(ref, 175) != value_at(ref, 175)  # beyond the reference: NaN, not extrapolated
    mean, lo, hi, n = versus(run, ref)
    assert n == 4 and lo == pytest.approx(-0.005) and hi == pytest.approx(0.01)
    assert mean == pytest.approx((0.005 + 0.01 - 0.005 + 0.0) / 4)


def test_ablation_minutes_survive_a_lost_wall_time():
    from benchmarks.ssod_ablation import _minutes

    assert _minutes({"min": 0.0, "train_min": 79.6}) == "80 min training"
    assert _minutes({"min": 95.0, "train_min": 79.6}) == "80 min training, 95 min wall"
