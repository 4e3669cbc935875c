"""Threshold strategies: Epoch Adaptor formula and bounds, GMM threshold, fixed, resume, gather."""

import numpy as np
import pytest
import torch

from effteacher.errors import CheckpointError, ConfigError
from effteacher.ssod.thresholds import (
    EpochAdaptorThresholds,
    FixedThresholds,
    GMMThresholds,
    adaptor_thresholds,
    build_thresholds,
    gmm_threshold,
)

DESC10 = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])


def test_adaptor_formula_hand_indices():
    sorted_scores = [DESC10, DESC10[:5], DESC10, torch.zeros(0), DESC10]
    n_c = [2, 1, 30, 3, 0]
    # N_l = 10, N_u = 20 -> k_c = 2 * n_c
    t1, t2 = adaptor_thresholds(sorted_scores, n_c, n_l=10, n_u=20, alpha=0.6)
    # class 0: k = 4 -> P[4] = 0.5; alpha*k = 2.4 -> P[2] = 0.7
    assert t1[0] == pytest.approx(0.5) and t2[0] == pytest.approx(0.7)
    # class 1: k = 2 -> P[2] = 0.7; 1.2 -> P[1] = 0.8
    assert t1[1] == pytest.approx(0.7) and t2[1] == pytest.approx(0.8)
    # class 2: k = 60 and 36, both past the end -> clamped to the last (lowest) score
    assert t1[2] == pytest.approx(0.05) and t2[2] == pytest.approx(0.05)
    # class 3: no scores; class 4: no labeled boxes -> None (keep previous)
    assert t1[3] is None and t2[3] is None and t1[4] is None and t2[4] is None


def test_epoch_adaptor_bounds_keep_and_unsorted_batches():
    th = EpochAdaptorThresholds(nc=4, n_c=[2, 1, 1, 0], n_labeled_images=10, n_unlabeled_images=20)
    assert th.tau1.tolist() == pytest.approx([0.1] * 4) and th.tau2.tolist() == pytest.approx([0.6] * 4)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    th.observe(DESC10[perm][:6], torch.zeros(6, dtype=torch.long))
    th.observe(DESC10[perm][6:], torch.zeros(4, dtype=torch.long))
    # class 1: very high scores -> tau1 P[2] = 0.97 capped to 0.5, tau2 P[1] = 0.98 capped to 0.9
    th.observe(torch.tensor([0.99, 0.98, 0.97, 0.96]), torch.ones(4, dtype=torch.long))
    # class 3 has scores but n_c = 0 -> keeps the init
    th.observe(torch.tensor([0.9, 0.8]), torch.full((2,), 3))
    summary = th.end_epoch()
    assert th.tau1.tolist() == pytest.approx([0.5, 0.5, 0.1, 0.1])
    assert th.tau2.tolist() == pytest.approx([0.7, 0.9, 0.6, 0.6])
    assert summary["n_scores"] == 16 and summary["per_class_scores"] == [10, 4, 0, 2]
    assert summary["tau2_mean"] == pytest.approx((0.7 + 0.9 + 0.6 + 0.6) / 4)
    # next epoch: class 0 only low scores -> tau1 floored at 0.05, tau2 raised to >= 0.25
    th.observe(torch.tensor([0.03, 0.02, 0.01]), torch.zeros(3, dtype=torch.long))
    th.end_epoch()
    assert th.tau1[0].item() == pytest.approx(0.05) and th.tau2[0].item() == pytest.approx(0.25)
    assert th.tau1[1].item() == pytest.approx(0.5)  # no scores this epoch -> kept
    assert th.conf_floor == pytest.approx(0.05)


def test_epoch_adaptor_uses_observed_image_count_and_gather():
    # 5 observed images instead of N_u = 20: k = 1 * 5 / 10 = 0.5 -> P[0]
    th = EpochAdaptorThresholds(nc=1, n_c=[1], n_labeled_images=10, n_unlabeled_images=20)
    th.observe(DESC10, torch.zeros(10, dtype=torch.long), n_images=5)
    th.end_epoch()
    assert th.tau1.item() == pytest.approx(0.5)  # 0.9 capped at the 0.5 ceiling
    # a fake "other rank" contributes scores and images through the gather hook
    other = {torch.float32: torch.tensor([0.45, 0.44]), torch.int64: torch.zeros(2, dtype=torch.long)}
    calls = []

    def fake_gather(t):
        calls.append(t.dtype)
        extra = other.get(t.dtype) if t.numel() != 1 else torch.tensor([15.0])
        return torch.cat([t, extra.to(t.dtype)])

    th = EpochAdaptorThresholds(nc=1, n_c=[1], n_labeled_images=10, n_unlabeled_images=20)
    th.observe(torch.tensor([0.3, 0.2, 0.1]), torch.zeros(3, dtype=torch.long), n_images=5)
    summary = th.end_epoch(all_gather=fake_gather)
    # gathered: [0.45, 0.44, 0.3, 0.2, 0.1], images 5 + 15 = 20 -> k = 2 -> P[2] = 0.3; tau2 P[1] = 0.44
    assert len(calls) == 3 and summary["n_scores"] == 5
    assert th.tau1.item() == pytest.approx(0.3) and th.tau2.item() == pytest.approx(0.44)


def test_state_dict_exact_resume_midepoch():
    a = EpochAdaptorThresholds(nc=2, n_c=[2, 1], n_labeled_images=10, n_unlabeled_images=20)
    a.observe(DESC10, torch.zeros(10, dtype=torch.long))
    a.end_epoch()
    a.observe(DESC10[:5], torch.ones(5, dtype=torch.long))  # unfinished epoch
    state = a.state_dict()
    assert all(isinstance(v, (torch.Tensor, int, str)) for v in state.values())
    b = EpochAdaptorThresholds(nc=2, n_c=[2, 1], n_labeled_images=10, n_unlabeled_images=20)
    b.load_state_dict(state)
    assert torch.equal(a.tau1, b.tau1) and torch.equal(a.tau2, b.tau2)
    assert a.end_epoch() == b.end_epoch()
    with pytest.raises(CheckpointError, match="same --thresholds"):
        FixedThresholds(2).load_state_dict(state)


def test_fixed_thresholds_never_move():
    th = FixedThresholds(3, tau1=0.2, tau2=0.7)
    th.observe(torch.tensor([0.99, 0.01]), torch.tensor([0, 1]))
    s = th.end_epoch()
    assert th.tau1.tolist() == pytest.approx([0.2] * 3) and th.tau2.tolist() == pytest.approx([0.7] * 3)
    assert s["n_scores"] == 2 and th.conf_floor == pytest.approx(0.2)


def test_gmm_threshold_bimodal_and_fallback():
    rng = np.random.default_rng(0)
    low = rng.normal(0.2, 0.04, 60)
    high = rng.normal(0.8, 0.04, 40)
    scores = torch.tensor(np.clip(np.concatenate([low, high]), 0, 1), dtype=torch.float32)
    t = gmm_threshold(scores)
    assert t is not None
    assert low.max() < t <= high.max()  # above the whole low mode
    assert abs(t - 0.8) < 0.08  # at the high component's most likely sample
    assert gmm_threshold(torch.tensor([0.2, 0.9, 0.5])) is None  # < 4 scores
    assert gmm_threshold(torch.full((10,), 0.5)) is None  # no spread


def test_gmm_strategy_window_fallback_and_resume():
    rng = np.random.default_rng(1)
    th = GMMThresholds(nc=2, tau_fallback=0.6, window=100)
    old = torch.full((80,), 0.95)  # pushed out of the window by the 100 newer scores
    th.observe(old, torch.zeros(80, dtype=torch.long))
    th.end_epoch()
    new = np.clip(np.concatenate([rng.normal(0.15, 0.03, 60), rng.normal(0.7, 0.03, 40)]), 0, 1)
    th.observe(torch.tensor(new, dtype=torch.float32), torch.zeros(100, dtype=torch.long))
    th.observe(torch.tensor([0.9, 0.3]), torch.ones(2, dtype=torch.long))  # class 1: < 4 scores
    th.end_epoch()
    assert th.queues[0].numel() == 100 and float(th.queues[0].max()) < 0.9
    assert abs(th.tau2[0].item() - 0.7) < 0.08
    assert th.tau2[1].item() == pytest.approx(0.6) and th.tau1.tolist() == pytest.approx([0.1, 0.1])
    b = GMMThresholds(nc=2)
    b.load_state_dict(th.state_dict())
    assert torch.equal(b.queues[0], th.queues[0]) and torch.equal(b.tau2, th.tau2)


def test_build_thresholds():
    assert isinstance(build_thresholds("fixed", 2), FixedThresholds)
    assert isinstance(build_thresholds("gmm", 2, tau2=0.5), GMMThresholds)
    ea = build_thresholds("adaptor", 2, n_c=torch.tensor([3, 4]), n_labeled=5, n_unlabeled=45, alpha=0.5)
    assert isinstance(ea, EpochAdaptorThresholds) and ea.alpha == 0.5
    with pytest.raises(ConfigError, match="fixed, adaptor or gmm"):
        build_thresholds("otsu", 2)
    with pytest.raises(ConfigError):
        build_thresholds("adaptor", 2)
