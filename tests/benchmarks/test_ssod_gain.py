"""benchmarks/ssod_gain.py: the per-dataset SSOD gain targets."""

from __future__ import annotations


def test_ssod_gain_targets_per_dataset():
    """Issue 10's bars: sample-large needs 1.3x, 40% of the gap and never 0.01 below a baseline; the small sample 1.1x
    (it has no converged 100% arm, so the gap is NaN there and must not fail it)."""
    from benchmarks.ssod_gain import met

    nan = float("nan")
    assert met("sample", 1.2, nan, nan) and not met("sample", 1.05, nan, 0.0)
    assert met("sample-large", 1.31, 0.45, -0.005)
    assert not met("sample-large", 1.31, 0.45, -0.02) and not met("sample-large", 1.31, nan, 0.0)
    assert not met("sample-large", 1.05, 0.43, 0.0) and not met("tiny", 1.2, 0.5, 0.0)
