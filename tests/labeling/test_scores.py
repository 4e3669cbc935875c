"""Active-learning scores (labeling.scores) and the reliable/uncertain split of pseudo labels, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from effteacher.labeling.pseudo_export import BELOW, RELIABLE, UNCERTAIN, PseudoRule, box_status, rule_from_checkpoint
from effteacher.labeling.scores import (
    binary_entropy,
    class_rarity,
    class_rarity_weights,
    combine_scores,
    flip_disagreement,
    image_uncertainty,
    k_center_greedy,
    nearest_neighbour_scale,
    normalized_entropy,
    rank_normalize,
    standardize_features,
    top2_margin,
)


def test_entropy_and_margin():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.2]])
    ent = normalized_entropy(probs)
    assert ent[0] == pytest.approx(0.0, abs=1e-6)
    assert ent[1] == pytest.approx(np.log(2) / np.log(3), abs=1e-6)
    assert ent[2] == pytest.approx(1.0)  # uniform after normalising the independent sigmoids
    mar = top2_margin(probs)
    assert mar.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    # one class: the probability itself is the uncertainty
    assert normalized_entropy(np.array([[0.5], [1.0]])).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert top2_margin(np.array([[0.5], [0.9]])).tolist() == pytest.approx([0.0, 0.8])
    assert binary_entropy(np.array([0.5, 0.0]))[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(n, nc\)"):
        normalized_entropy(np.zeros(3))


def test_image_uncertainty():
    sure = image_uncertainty(np.array([[0.99, 0.0]]), np.array([0.999]))
    unsure = image_uncertainty(np.array([[0.5, 0.5]]), np.array([0.5]))
    assert sure["uncertainty"] < 0.05 and unsure["uncertainty"] == pytest.approx(1.0)
    assert unsure["entropy"] == pytest.approx(1.0) and unsure["margin"] == pytest.approx(0.0)
    none = image_uncertainty(np.zeros((0, 2)), np.zeros(0))
    assert none == {"entropy": 0.0, "margin": 1.0, "objectness": 0.0, "uncertainty": 0.0}
    mixed = image_uncertainty(np.array([[0.99, 0.0], [0.5, 0.5]]), np.array([0.999, 0.5]))
    assert mixed["uncertainty"] == pytest.approx((sure["uncertainty"] + 1.0) / 2)


def test_flip_disagreement():
    a = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float64)
    assert flip_disagreement(a, np.array([0, 1]), a.copy(), np.array([0, 1])) == pytest.approx(0.0)
    # the same boxes, one named differently: half the agreement is lost
    assert flip_disagreement(a, np.array([0, 1]), a.copy(), np.array([0, 2])) == pytest.approx(0.5)
    # one view misses a box
    assert flip_disagreement(a, np.array([0, 1]), a[:1], np.array([0])) == pytest.approx(0.5)
    # shifted box: agreement is its IoU (0.6 / 1.4 ... here 50/150)
    b = np.array([[5, 0, 15, 10]], np.float64)
    assert flip_disagreement(a[:1], np.array([0]), b, np.array([0]), iou_thres=0.3) == pytest.approx(1 - 50 / 150)
    assert flip_disagreement(a[:1], np.array([0]), b, np.array([0]), iou_thres=0.5) == pytest.approx(1.0)
    e = np.zeros((0, 4))
    assert flip_disagreement(e, np.zeros(0), e, np.zeros(0)) == 0.0
    assert flip_disagreement(a, np.array([0, 1]), e, np.zeros(0)) == 1.0


def test_class_rarity():
    w = class_rarity_weights(np.array([100, 10, 0]))
    assert w[2] == pytest.approx(1.0) and w[0] < w[1] < w[2]
    assert class_rarity_weights(np.array([5, 5])).tolist() == [1.0, 1.0]
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert class_rarity(probs[:1], np.array([0.9]), w) == pytest.approx(w[0])
    # score-weighted mean over boxes
    assert class_rarity(probs, np.array([0.5, 0.5]), w) == pytest.approx((w[0] + w[2]) / 2)
    assert class_rarity(np.zeros((0, 3)), np.zeros(0), w) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        class_rarity_weights(np.array([-1, 2]))


def test_rank_normalize_and_combine():
    assert rank_normalize(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert rank_normalize(np.array([2.0, 2.0])).tolist() == [0.5, 0.5]
    assert rank_normalize(np.array([3.0, 2.0, 1.0, 2.0])).tolist() == [1.0, 0.5, 0.0, 0.5]  # ties share a rank
    cols = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([30.0, 20.0, 10.0]), "c": np.array([1.0, 1.0, 5.0])}
    s = combine_scores(cols, {"a": 1.0, "b": 1.0})
    assert s.tolist() == pytest.approx([0.5, 0.5, 0.5])  # opposite orders cancel
    s = combine_scores(cols, {"a": 2.0, "b": 1.0})
    assert np.argmax(s) == 2 and 0.0 <= s.min() and s.max() <= 1.0
    with pytest.raises(ValueError, match="no column"):
        combine_scores(cols, {"z": 1.0})


def test_k_center_greedy_spreads_and_avoids_centers():
    # two tight clusters and a far point
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [10.0, 0.0]])
    picks = k_center_greedy(x, 3)
    assert picks[0] == 0 and sorted(picks) == sorted(set(picks))
    assert {3, 4} & set(picks) and 5 in picks  # one per cluster, never two of the same cluster
    assert len({0, 1, 2} & set(picks)) == 1
    # with the first cluster already labeled, it is picked last
    picks = k_center_greedy(x, 2, centers=np.array([[0.0, 0.05]]))
    assert not {0, 1, 2} & set(picks)
    # weights: top by weight unless a near-duplicate (closer than the radius) of an earlier pick
    w = np.array([0.9, 1.0, 0.2, 0.8, 0.7, 0.1])
    picks = k_center_greedy(x, 3, weights=w, radius=1.0)
    assert picks == [1, 3, 5]  # 0 (0.9) and 4 (0.7) sit within 0.1 of picks: scaled down to 0.09 / 0.07
    assert k_center_greedy(x, 10) and len(k_center_greedy(x, 10)) == 6
    assert k_center_greedy(x, 0) == []
    with pytest.raises(ValueError, match="weights"):
        k_center_greedy(x, 2, weights=np.ones(3))


def test_equal_weights_fall_back_to_k_center():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [10.0, 0.0]])
    # every weight equal and every distance beyond the radius: the farthest still wins the tie
    assert k_center_greedy(x, 3, weights=np.full(4, 0.5), radius=0.05) == [0, 3, 2]


def test_standardize_features():
    rng = np.random.default_rng(0)
    # a large shared component and small differences: raw rows are all but identical
    a = 100.0 + rng.normal(0, 1e-3, (20, 8))
    b = 100.0 + rng.normal(0, 1e-3, (5, 8))
    za, zb = standardize_features(a, b)
    assert za.shape == a.shape and zb.shape == b.shape
    assert np.allclose(np.linalg.norm(za, axis=1), 1.0)
    raw = a / np.linalg.norm(a, axis=1, keepdims=True)
    assert np.ptp(raw @ raw.T) < 1e-6 and np.ptp(za @ za.T) > 0.5


def test_nearest_neighbour_scale():
    x = np.array([[0.0], [1.0], [3.0]])
    assert nearest_neighbour_scale(x) == pytest.approx(1.0)
    assert nearest_neighbour_scale(x[:1]) == np.inf


def test_box_status_and_checkpoint_rules():
    rule = PseudoRule(tau1=np.array([0.1, 0.3]), tau2=np.array([0.5, 0.8]))
    #                  x1 y1 x2 y2 score cls obj
    dets = np.array([[0, 0, 1, 1, 0.6, 0, 0.9],
                     [0, 0, 1, 1, 0.6, 1, 0.9],
                     [0, 0, 1, 1, 0.2, 1, 0.9],
                     [0, 0, 1, 1, 0.05, 0, 0.9]])
    assert box_status(dets, rule).tolist() == [RELIABLE, UNCERTAIN, BELOW, BELOW]
    obj_rule = PseudoRule(tau1=rule.tau1, tau2=rule.tau2, score="obj")
    assert box_status(dets, obj_rule).tolist() == [RELIABLE] * 4
    assert box_status(np.zeros((0, 7)), rule).tolist() == []

    base = {"model": {"nc": 2}, "args": {"ssod": {"tau1": 0.2, "tau2": 0.7, "score": "obj"}}}
    r = rule_from_checkpoint(base)
    assert r.tau1.tolist() == [0.2, 0.2] and r.tau2.tolist() == [0.7, 0.7] and r.score == "obj"
    stored = {**base, "pseudo_thresholds": {"kind": "adaptor", "tau1": [0.1, 0.15], "tau2": [0.4, 0.9]}}
    r = rule_from_checkpoint(stored)
    assert r.tau2.tolist() == [0.4, 0.9] and "per-class adaptor" in r.source
    r = rule_from_checkpoint(stored, conf=0.12)
    assert r.tau2.tolist() == [0.12, 0.12] and r.tau1.tolist() == [0.1, 0.12]
    assert rule_from_checkpoint({"model": {"nc": 3}}).tau2.tolist() == [0.6] * 3
