"""Active-learning scores of one unlabeled image (pure numpy): uncertainty, flip disagreement, class rarity, mixing, k-center.

Detections come as arrays of one image: ``probs`` (n, nc) class probabilities, ``obj`` (n,)
objectness, ``boxes`` (n, 4) xyxy pixels, ``cls`` (n,) int classes, ``scores`` (n,). Every score is
in [0, 1], higher = more worth labeling; an image without detections scores 0 except where said.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

EPS = 1e-12


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """(n,) probabilities -> (n,) entropy in bits, in [0, 1] (1 at p = 0.5)."""
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """(n, nc) class probabilities (need not sum to 1) -> (n,) entropy / log(nc), in [0, 1].

    Each row is normalised to sum 1 first (YOLO class outputs are independent sigmoids). With one
    class the entropy of the single probability is used (``binary_entropy``).
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"normalized_entropy: probs must be (n, nc), got shape {probs.shape}")
    if probs.shape[1] == 1:
        return binary_entropy(probs[:, 0])
    p = np.clip(probs, EPS, None)
    p = p / p.sum(1, keepdims=True)
    return -(p * np.log(p)).sum(1) / np.log(probs.shape[1])


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """(n, nc) -> (n,) best minus second-best normalised class probability (|2p - 1| for one class); low = unsure."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"top2_margin: probs must be (n, nc), got shape {probs.shape}")
    if probs.shape[1] == 1:
        return np.abs(2 * probs[:, 0] - 1)
    p = np.clip(probs, EPS, None)
    p = p / p.sum(1, keepdims=True)
    top = np.sort(p, 1)[:, -2:]
    return top[:, 1] - top[:, 0]


def image_uncertainty(probs: np.ndarray, obj: np.ndarray) -> dict[str, float]:
    """Teacher uncertainty of one image from its boxes.

    Returns ``entropy`` (mean normalised class entropy), ``margin`` (mean top-2 class margin; 1 when
    no box), ``objectness`` (mean binary entropy of the objectness: is it an object at all?) and
    ``uncertainty`` = mean over boxes of ``(class entropy + (1 - margin) + objectness entropy) / 3``.
    """
    probs = np.asarray(probs, np.float64).reshape(len(obj), -1) if len(obj) else np.zeros((0, 1))
    if len(obj) == 0:
        return {"entropy": 0.0, "margin": 1.0, "objectness": 0.0, "uncertainty": 0.0}
    ent, mar, obe = normalized_entropy(probs), top2_margin(probs), binary_entropy(obj)
    return {"entropy": float(ent.mean()), "margin": float(mar.mean()), "objectness": float(obe.mean()),
            "uncertainty": float(((ent + (1 - mar) + obe) / 3).mean())}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) x (m, 4) xyxy -> (n, m) IoU."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, EPS)


def flip_disagreement(boxes_a: np.ndarray, cls_a: np.ndarray, boxes_b: np.ndarray, cls_b: np.ndarray,
                      iou_thres: float = 0.5) -> float:
    """How much the detections of an image and of its mirror image (mapped back) disagree, in [0, 1].

    Boxes are matched greedily by IoU (highest first, at least ``iou_thres``, any class); a matched
    pair agrees by its IoU when both name the same class, else 0. Disagreement =
    ``1 - sum(agreement) / max(n_a, n_b)``: 0 when both views find the same boxes (or none), 1 when
    nothing matches.
    """
    na, nb = len(boxes_a), len(boxes_b)
    if na == 0 and nb == 0:
        return 0.0
    if na == 0 or nb == 0:
        return 1.0
    iou = box_iou(boxes_a, boxes_b)
    same = np.asarray(cls_a).reshape(-1, 1) == np.asarray(cls_b).reshape(1, -1)
    agree = 0.0
    order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
    used_a, used_b = np.zeros(na, bool), np.zeros(nb, bool)
    for i, j in order:
        if iou[i, j] < iou_thres:
            break
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = used_b[j] = True
        agree += float(iou[i, j]) * float(same[i, j])
    return float(1.0 - agree / max(na, nb))


def class_rarity_weights(labeled_counts: np.ndarray) -> np.ndarray:
    """(nc,) labeled boxes per class -> (nc,) rarity in (0, 1]: ``log((N + nc) / (n_c + 1))`` over its maximum.

    A class without labeled boxes gets 1; all classes equally common give 1 each.
    """
    n = np.asarray(labeled_counts, np.float64)
    if n.ndim != 1 or len(n) == 0 or (n < 0).any():
        raise ValueError(f"class_rarity_weights: need (nc,) non-negative counts, got {labeled_counts!r}")
    r = np.log((n.sum() + len(n)) / (n + 1))
    return r / r.max() if r.max() > 0 else np.ones_like(r)


def class_rarity(probs: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """Rarity of an image's predicted classes: score-weighted mean over boxes of ``sum_c p_c * weights_c``.

    probs (n, nc) (normalised per box here), scores (n,), weights (nc,) from ``class_rarity_weights``.
    """
    scores = np.asarray(scores, np.float64)
    if len(scores) == 0:
        return 0.0
    p = np.clip(np.asarray(probs, np.float64).reshape(len(scores), -1), EPS, None)
    p = p / p.sum(1, keepdims=True)
    per_box = p @ np.asarray(weights, np.float64)
    return float((per_box * scores).sum() / max(scores.sum(), EPS))


def rank_normalize(x: np.ndarray) -> np.ndarray:
    """(n,) values -> (n,) rank percentiles in [0, 1] (ties share their mean rank; all equal -> 0.5)."""
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return x
    if len(x) == 1 or np.ptp(x) == 0:
        return np.full(len(x), 0.5)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last copy of each distinct value
    mean_rank = ends - (counts - 1) / 2.0
    return (mean_rank[inv.reshape(-1)] - 1) / (len(x) - 1)


def combine_scores(columns: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of the rank-normalised columns named in ``weights`` -> (n,) in [0, 1].

    Ranks make scores of different scales comparable (an entropy of 0.3 and a rarity of 0.9 say
    nothing about each other, their ranks among the images do).
    """
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"combine_scores: weights must sum above 0, got {dict(weights)}")
    missing = [k for k in weights if k not in columns]
    if missing:
        raise ValueError(f"combine_scores: no column {missing}; have {sorted(columns)}")
    return sum(w * rank_normalize(columns[k]) for k, w in weights.items()) / total


def k_center_greedy(features: np.ndarray, k: int, centers: np.ndarray | None = None,
                    weights: np.ndarray | None = None, radius: float = np.inf) -> list[int]:
    """Greedy k-center on (n, d) features: pick k indices, each the farthest from everything picked so far.

    centers: (m, d) points already covered (e.g. the labeled images), so the picks avoid them too.
    weights: (n,) >= 0; then each pick maximises ``weight * min(1, distance / radius)``: with
    ``radius`` inf this is a score-weighted k-center, with a finite radius it is top-k by weight that
    skips near-duplicates (closer than ``radius`` to a pick) until nothing farther is left. Without
    centers the first pick is the highest weight (index 0 when no weights). Ties go to the higher
    weight, then the lower index. Returns min(k, n) distinct indices in pick order.
    """
    x = np.asarray(features, np.float64)
    n = len(x)
    if x.ndim != 2:
        raise ValueError(f"k_center_greedy: features must be (n, d), got shape {x.shape}")
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n,) or (w < 0).any():
        raise ValueError(f"k_center_greedy: weights must be (n,) non-negative, got shape {w.shape}")
    k = min(int(k), n)
    if k <= 0:
        return []
    mind = np.full(n, np.inf)
    if centers is not None and len(centers):
        c = np.asarray(centers, np.float64).reshape(-1, x.shape[1])
        for i in range(0, len(c), 1024):
            mind = np.minimum(mind, pairwise_dist(x, c[i:i + 1024]).min(1))
    picked: list[int] = []
    free = np.ones(n, bool)
    for _ in range(k):
        if np.isinf(mind).all():
            gain = w.copy()
        else:
            reach = np.minimum(1.0, mind / radius) if np.isfinite(radius) else mind
            gain = w * reach if weights is not None else reach
        gain = np.where(free, gain, -np.inf)
        top = np.flatnonzero(gain >= gain.max() - 1e-12)
        # ties: the farthest, then the highest weight, then the lowest index
        i = int(top[np.lexsort((top, -w[top], -np.where(np.isinf(mind[top]), 0.0, mind[top])))[0]])
        picked.append(i)
        free[i] = False
        mind = np.minimum(mind, pairwise_dist(x, x[i:i + 1])[:, 0])
    return picked


def standardize_features(*sets: np.ndarray) -> list[np.ndarray]:
    """Feature sets (n_i, d) -> the same sets z-scored per dimension over all of them, then unit-norm rows.

    Pooled CNN features share a large constant component (biases, normalisation): raw, every image is
    almost the same unit vector; centred and scaled, their distances say how the images differ.
    """
    if not sets:
        return []
    allf = np.concatenate([np.asarray(s, np.float64).reshape(len(s), -1) for s in sets], 0)
    mu, sd = allf.mean(0), allf.std(0)
    out = []
    for s in sets:
        z = (np.asarray(s, np.float64).reshape(len(s), -1) - mu) / np.where(sd > 1e-12, sd, 1.0)
        out.append(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
    return out


def pairwise_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, d) x (m, d) -> (n, m) Euclidean distances."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def nearest_neighbour_scale(features: np.ndarray, sample: int = 2048, seed: int = 0) -> float:
    """Median distance of a point to its nearest other point (on at most ``sample`` points): a near-duplicate radius."""
    x = np.asarray(features, np.float64)
    if len(x) < 2:
        return np.inf
    if len(x) > sample:
        x = x[np.random.default_rng(seed).choice(len(x), sample, replace=False)]
    d = pairwise_dist(x, x)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(1)))
