"""AutoAnchor: best possible recall of anchors on label sizes, k-means + evolution refit, write-back into a model."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans


def _ratio_metric(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N, K): for each label and anchor, min over w/h of min(r, 1/r), r = label / anchor (1 = same size)."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1 / r).min(2)


def best_possible_recall(wh: np.ndarray | torch.Tensor, anchors: np.ndarray | torch.Tensor, thr: float = 4.0) -> float:
    """Fraction of labels whose best anchor is within ratio ``thr`` on both sides.

    wh: (N, 2) label sizes in pixels; anchors: (K, 2) or (nl, na, 2) pixels, same scale.
    """
    wh_np = np.asarray(torch.as_tensor(wh).detach().cpu(), dtype=np.float64).reshape(-1, 2)
    a_np = np.asarray(torch.as_tensor(anchors).detach().cpu(), dtype=np.float64).reshape(-1, 2)
    if not len(wh_np):
        return 1.0
    best = _ratio_metric(wh_np, a_np).max(1)
    return float((best > 1 / thr).mean())


def _fitness(wh: np.ndarray, k: np.ndarray, thr: float) -> float:
    best = _ratio_metric(wh, k).max(1)
    return float((best * (best > 1 / thr)).mean())


def kmeans_anchors(
    wh: np.ndarray | torch.Tensor,
    n: int = 9,
    img_size: int = 640,
    thr: float = 4.0,
    gen: int = 300,
    seed: int = 0,
) -> np.ndarray:
    """Fit n anchors (pixels at ``img_size``, sorted by area) to label sizes.

    wh: (N, 2) label sizes in pixels at ``img_size``. K-means (scikit-learn, seeded) on sizes
    whitened by their std, then ``gen`` generations of multiplicative mutation kept when they
    raise the fitness mean(best ratio above 1/thr). Labels under 2 px are ignored.
    """
    wh0 = np.asarray(torch.as_tensor(wh).detach().cpu(), dtype=np.float64).reshape(-1, 2)
    wh0 = wh0[(wh0 >= 2.0).all(1)]
    if len(wh0) < n:
        raise ValueError(f"need at least {n} labels of >= 2 px to fit {n} anchors, got {len(wh0)}")
    s = wh0.std(0) + 1e-9
    km = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(wh0 / s)
    k = km.cluster_centers_ * s
    rng = np.random.default_rng(seed)
    f = _fitness(wh0, k, thr)
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1).all():  # mutate at least one value
            v = ((rng.random(k.shape) < 0.9) * rng.random() * rng.standard_normal(k.shape) * 0.1 + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = _fitness(wh0, kg, thr)
        if fg > f:
            f, k = fg, kg
    k = k[np.argsort(k.prod(1))]
    return k.astype(np.float32)


def check_anchors(model: torch.nn.Module, wh_pixels: np.ndarray | torch.Tensor, imgsz: int, thr: float = 4.0,
                  seed: int = 0) -> bool:
    """Refit ``model.anchors`` (nl, na, 2 pixels) when their BPR on ``wh_pixels`` (N, 2) is below 0.98.

    The new anchors (sorted small to large across levels) are written into the buffer only if they
    recall more labels than the old ones. Returns True when the model's anchors changed.
    """
    old = model.anchors.detach().cpu().numpy().reshape(-1, 2)
    bpr = best_possible_recall(wh_pixels, old, thr)
    if bpr >= 0.98:
        return False
    nl, na = model.anchors.shape[:2]
    try:
        new = kmeans_anchors(wh_pixels, n=nl * na, img_size=imgsz, thr=thr, seed=seed)
    except ValueError:
        return False
    if best_possible_recall(wh_pixels, new, thr) <= bpr:
        return False
    with torch.no_grad():
        model.anchors.copy_(torch.from_numpy(new).view(nl, na, 2).to(model.anchors))
    return True
