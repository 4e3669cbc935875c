"""Anchors: best possible recall by hand, k-means anchors and the anchor check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effteacher.models.anchors import best_possible_recall, check_anchors, kmeans_anchors
from effteacher.models.build import build_model


def test_best_possible_recall_hand_case() -> None:
    anchors = np.array([[10.0, 10.0]])
    wh = np.array([[10.0, 10.0], [39.0, 10.0], [41.0, 10.0], [2.0, 10.0]])  # ratios 1, 3.9, 4.1, 5
    assert best_possible_recall(wh, anchors, thr=4.0) == pytest.approx(0.5)


def test_kmeans_and_check_anchors() -> None:
    rng = np.random.default_rng(0)
    # label sizes that the default anchors (10..373 px) cannot cover: very thin, very wide boxes
    wh = np.concatenate([rng.uniform(200, 300, (200, 1)), rng.uniform(3, 5, (200, 1))], 1)
    wh = np.concatenate([wh, wh[:, ::-1]])
    k = kmeans_anchors(wh, n=9, img_size=640, gen=50)
    assert k.shape == (9, 2) and np.all(np.diff(k.prod(1)) >= 0)
    m = build_model("n", 1)
    before = best_possible_recall(wh, m.anchors)
    assert before < 0.98
    assert check_anchors(m, wh, 640) is True
    after = best_possible_recall(wh, m.anchors)
    assert after > before and after > 0.98
    areas = m.anchors.view(-1, 2).prod(1)
    assert torch.all(areas[1:] >= areas[:-1])
    # labels that match the anchors exactly: nothing changes
    m2 = build_model("n", 1)
    assert check_anchors(m2, m2.anchors.view(-1, 2).numpy().repeat(5, 0), 640) is False
