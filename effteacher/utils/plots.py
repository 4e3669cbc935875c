"""Training and evaluation pictures: labels.jpg, batch mosaics, PR curve, confusion matrix (results.png:
``effteacher.utils.results_plot``, re-exported here)."""

from __future__ import annotations

import colorsys
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from effteacher.utils.results_plot import plot_results, results_series

__all__ = ["color", "plot_confusion_matrix", "plot_images", "plot_labels", "plot_pr_curve", "plot_pseudo_batch",
           "plot_results", "results_series"]

MAX_MOSAIC = 1920  # longest side of a batch mosaic in pixels
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


# ----------------------------------------------------------------------------------- helpers
def _np(x: Any, dtype: Any = np.float32, cols: int | None = None) -> np.ndarray:
    """Tensor/array/None -> numpy; ``cols`` reshapes an empty input to (0, cols)."""
    if x is None:
        return np.zeros((0, cols or 0), dtype)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if cols is not None and a.size == 0:
        return np.zeros((0, max(cols, a.shape[-1] if a.ndim == 2 else 0)), dtype)
    return a


def color(i: int) -> tuple[int, int, int]:
    """A distinct, deterministic RGB colour for class ``i`` (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((int(i) * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib Figure drawn by the Agg canvas (no pyplot, no global backend state)."""
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_fig(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def _save_rgb(img: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1])):
        raise OSError(f"could not write {path}")
    return path


def _name(names: Sequence[str], c: int) -> str:
    return str(names[c]) if 0 <= c < len(names) else str(c)


def _to_hwc(imgs: Any, n: int) -> list[np.ndarray]:
    """First ``n`` images of a (B,3,H,W) batch as uint8 (H,W,3) RGB arrays."""
    a = imgs.detach().cpu().numpy() if hasattr(imgs, "detach") else np.asarray(imgs)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.max(initial=0) <= 1.0 else a, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(a[i].transpose(1, 2, 0)) for i in range(min(n, a.shape[0]))]


def _label(img: np.ndarray, text: str, x: int, y: int, rgb: tuple[int, int, int], scale: float) -> None:
    """Text on a filled box whose top-left is near (x, y), kept inside the image."""
    th = max(int(round(scale * 2)), 1)
    (tw, tht), base = cv2.getTextSize(text, _FONT, scale, th)
    x = int(min(max(x, 0), max(img.shape[1] - tw - 1, 0)))
    y = int(min(max(y, tht + base), img.shape[0] - 1))
    cv2.rectangle(img, (x, y - tht - base), (x + tw, y), rgb, -1)
    cv2.putText(img, text, (x, y - base), _FONT, scale, (255, 255, 255), th, cv2.LINE_AA)


def _dashed_rect(img: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], rgb: tuple[int, int, int],
                 thickness: int, dash: int = 5) -> None:
    """A rectangle drawn as dashes (cv2 has no dashed lines): one polylines call per box."""
    (x1, y1), (x2, y2) = p1, p2
    segs = []
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        t0 = np.arange(0, max(length, 1), 2 * dash) / max(length, 1)
        t1 = np.minimum(t0 + dash / max(length, 1), 1.0)
        for a, b in zip(t0, t1):
            segs.append(np.array([[ax + a * (bx - ax), ay + a * (by - ay)], [ax + b * (bx - ax), ay + b * (by - ay)]],
                                 dtype=np.int32))
    if segs:
        cv2.polylines(img, segs, False, rgb, thickness, cv2.LINE_AA)


def _grid(tiles: list[np.ndarray], ncols: int, pad: int = 2) -> np.ndarray:
    """Tiles of equal size into a white mosaic with ``ncols`` columns."""
    h, w = tiles[0].shape[:2]
    nrows = math.ceil(len(tiles) / ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = t
    return out


def _resize_tiles(tiles: list[np.ndarray], n_across: int) -> tuple[list[np.ndarray], float]:
    """Resize all tiles to the first one's size times a factor keeping the mosaic <= MAX_MOSAIC."""
    h, w = tiles[0].shape[:2]
    s = min(1.0, MAX_MOSAIC / max(n_across * w, 1), MAX_MOSAIC / max(n_across * h, 1))
    size = (max(int(w * s), 1), max(int(h * s), 1))
    return [t if t.shape[:2] == (size[1], size[0]) else cv2.resize(t, size, interpolation=cv2.INTER_AREA)
            for t in tiles], s


def _blank(path: str | Path, text: str) -> Path:
    img = np.full((128, 256, 3), 255, np.uint8)
    cv2.putText(img, text, (8, 68), _FONT, 0.5, (90, 90, 90), 1, cv2.LINE_AA)
    return _save_rgb(img, path)


def _draw_xyxy(img: np.ndarray, xyxy: np.ndarray, cls: np.ndarray, labels: list[str], solid: np.ndarray,
               thick: int, scale: float) -> None:
    """Draw pixel boxes: ``solid`` ones with ``thick`` lines, the others dashed and thinner."""
    xyxy = np.round(xyxy).astype(np.int64)
    for (x1, y1, x2, y2), c, text, s in zip(xyxy.tolist(), cls.tolist(), labels, solid.tolist()):
        rgb = color(int(c))
        if s:
            cv2.rectangle(img, (x1, y1), (x2, y2), rgb, thick, cv2.LINE_AA)
        else:
            _dashed_rect(img, (x1, y1), (x2, y2), rgb, max(thick // 2, 1))
        if text:
            _label(img, text, x1, y1, rgb, scale)


# ----------------------------------------------------------------------------------- plots
def plot_labels(cls: Any, boxes_xywhn: Any, names: Sequence[str], path: str | Path) -> Path:
    """``labels.jpg``: instances per class, box centres (x, y) and box sizes (w, h), all normalised.

    cls (N,) int; boxes_xywhn (N, 4) norm cx, cy, w, h.
    """
    c = _np(cls, np.int64).reshape(-1)
    b = _np(boxes_xywhn, np.float32, cols=4).reshape(-1, 4)
    nc = max(len(names), int(c.max()) + 1 if c.size else 0)
    fig = _figure((13, 4.2))
    ax = fig.subplots(1, 3)
    counts = np.bincount(c, minlength=nc) if nc else np.zeros(0, np.int64)
    ax[0].bar(np.arange(nc), counts, color=[np.array(color(i)) / 255 for i in range(nc)])
    ax[0].set_ylabel("instances")
    ax[0].set_title(f"{int(counts.sum())} instances, {nc} classes")
    if 0 < nc <= 30:
        ax[0].set_xticks(np.arange(nc))
        ax[0].set_xticklabels([_name(names, i) for i in range(nc)], rotation=90, fontsize=8)
    kw = dict(s=3, alpha=min(1.0, max(0.05, 200 / max(len(b), 1))), linewidths=0, rasterized=True)
    rgb = np.array([color(int(i)) for i in c], dtype=np.float64).reshape(-1, 3) / 255
    ax[1].scatter(b[:, 0], b[:, 1], c=rgb, **kw)
    ax[1].set(xlim=(0, 1), ylim=(1, 0), xlabel="x", ylabel="y", title="box centres")
    ax[2].scatter(b[:, 2], b[:, 3], c=rgb, **kw)
    ax[2].set(xlim=(0, 1), ylim=(0, 1), xlabel="width", ylabel="height", title="box sizes")
    for a in ax[1:]:
        a.set_aspect("equal")
    return _save_fig(fig, path)


def plot_images(imgs: Any, targets: Any, paths: Sequence[str] | None, names: Sequence[str], path: str | Path,
                max_images: int = 16, conf_thres: float = 0.25) -> Path:
    """``train_batch*.jpg``: a mosaic of up to ``max_images`` images with their boxes.

    imgs: uint8 (B, 3, H, W) RGB. targets: (N, 6+) ``[img, cls, cx, cy, w, h(, conf)]`` norm;
    with a conf column only boxes >= ``conf_thres`` are drawn and labels show the score.
    """
    n = 0 if imgs is None else min(len(imgs), max_images)
    if n == 0:
        return _blank(path, "no images")
    tiles = _to_hwc(imgs, n)
    ns = math.ceil(math.sqrt(n))
    tiles, _ = _resize_tiles(tiles, ns)
    h, w = tiles[0].shape[:2]
    t = _np(targets, np.float32, cols=6)
    scale = max(min(h, w) / 640, 0.3)
    thick = max(int(round(min(h, w) / 200)), 1)
    for i, tile in enumerate(tiles):
        ti = t[t[:, 0] == i]
        if ti.shape[1] > 6:
            ti = ti[ti[:, 6] >= conf_thres]
        cx, cy, bw, bh = ti[:, 2] * w, ti[:, 3] * h, ti[:, 4] * w, ti[:, 5] * h
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        cls = ti[:, 1].astype(np.int64)
        if ti.shape[1] > 6:
            labels = [f"{_name(names, k)} {s:.2f}" for k, s in zip(cls.tolist(), ti[:, 6].tolist())]
        else:
            labels = [_name(names, k) for k in cls.tolist()]
        _draw_xyxy(tile, xyxy, cls, labels, np.ones(len(cls), bool), thick, scale)
        if paths is not None and i < len(paths):
            _label(tile, Path(str(paths[i])).name[:40], 0, h - 1, (80, 80, 80), scale)  # bottom: boxes label on top
    return _save_rgb(_grid(tiles, ns), path)


def plot_pseudo_batch(weak: Any, strong: Any, weak_dets: Sequence[Any], strong_targets: Any, names: Sequence[str],
                      path: str | Path, tau2: Any, max_images: int = 8) -> Path:
    """``pseudo_batch*.jpg``: pairs (weak view + teacher boxes | strong view + pseudo boxes).

    weak, strong: uint8 (B, 3, S, S). weak_dets: per image (n, 7) pixel ``x1 y1 x2 y2 score cls obj``
    in the weak view. strong_targets: (N, 9) ``[img, cls, cx, cy, w, h, w_cls, w_box, obj_target]``
    norm to the strong view. tau2: float or (nc,). Reliable boxes (teacher score >= tau2; pseudo
    targets with w_cls = 1) are thick and solid, uncertain ones thin and dashed; every teacher box is labelled
    with its class and score, every pseudo target with its class ('?' when uncertain).
    """
    n = 0 if weak is None else min(len(weak), max_images)
    if n == 0:
        return _blank(path, "no unlabeled images")

    tiles_w, tiles_s = _to_hwc(weak, n), _to_hwc(strong, n)
    ns = math.ceil(math.sqrt(n))
    s0 = tiles_w[0].shape[:2]
    tiles, s = _resize_tiles([t for pair in zip(tiles_w, tiles_s) for t in pair], 2 * ns)
    h, w = tiles[0].shape[:2]
    thick = max(int(round(min(h, w) / 160)), 2)
    fs = max(min(h, w) / 640, 0.3)
    tau = _np(tau2, np.float64).reshape(-1)
    t = _np(strong_targets, np.float32, cols=9)
    for i in range(n):
        d = _np(weak_dets[i] if i < len(weak_dets) else None, np.float32, cols=7)
        d = d.reshape(-1, d.shape[-1] if d.ndim == 2 else 7)[:, :7]  # extra columns: class probabilities
        cls = d[:, 5].astype(np.int64)
        thr = tau[np.clip(cls, 0, len(tau) - 1)] if len(tau) > 1 else np.full(len(cls), tau[0] if len(tau) else 0.5)
        rel = d[:, 4] >= thr
        labels = [f"{_name(names, k)} {sc:.2f}" for k, sc in zip(cls.tolist(), d[:, 4].tolist())]
        _draw_xyxy(tiles[2 * i], d[:, :4] * s, cls, labels, rel, thick, fs)
        ti = t[t[:, 0] == i]
        cx, cy, bw, bh = ti[:, 2] * w, ti[:, 3] * h, ti[:, 4] * w, ti[:, 5] * h
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        c2 = ti[:, 1].astype(np.int64)
        rel2 = ti[:, 6] >= 0.5 if ti.shape[1] > 6 else np.ones(len(ti), bool)
        _draw_xyxy(tiles[2 * i + 1], xyxy, c2, [_name(names, k) if r else f"{_name(names, k)}?" for k, r in zip(c2.tolist(), rel2)],
                   rel2, thick, fs)
        _label(tiles[2 * i], "weak: teacher", 0, h - 1, (60, 60, 60), fs)
        _label(tiles[2 * i + 1], "strong: pseudo", 0, h - 1, (60, 60, 60), fs)
    mosaic = _grid(tiles, 2 * ns)
    legend = np.full((28, mosaic.shape[1], 3), 255, np.uint8)
    cv2.putText(legend, f"solid = reliable (score >= tau2), dashed = uncertain; views {s0[1]}x{s0[0]}",
                (6, 19), _FONT, 0.5, (40, 40, 40), 1, cv2.LINE_AA)
    return _save_rgb(np.concatenate([legend, mosaic], 0), path)


def plot_pr_curve(px: Any, py: Any, ap50: Any, names: Sequence[str], path: str | Path) -> Path:
    """Precision-recall curves at IoU 0.5: px (K,) recall grid, py (nc, K) precision, ap50 (nc,).

    One line per class when nc <= 20 (legend with AP50), and the class mean in bold.
    """
    x = _np(px, np.float64).reshape(-1)
    y = _np(py, np.float64)
    ap = _np(ap50, np.float64).reshape(-1)
    y = y.reshape(-1, len(x)) if y.size and len(x) else np.zeros((0, len(x)))
    fig = _figure((7, 5.5))
    ax = fig.subplots()
    if len(y) <= 20:
        for i, yi in enumerate(y):
            label = f"{_name(names, i)} {ap[i]:.3f}" if i < len(ap) else _name(names, i)
            ax.plot(x, yi, linewidth=1, label=label, color=np.array(color(i)) / 255)
    else:
        for yi in y:
            ax.plot(x, yi, linewidth=0.5, color="grey")
    if len(y):
        ax.plot(x, y.mean(0), linewidth=3, color="blue", label=f"all classes {ap.mean() if ap.size else 0:.3f} mAP@0.5")
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no classes", ha="center", va="center")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall curve")
    ax.grid(alpha=0.3)
    return _save_fig(fig, path)


def plot_confusion_matrix(matrix: Any, names: Sequence[str], path: str | Path, normalize: bool = True) -> Path:
    """Confusion matrix picture from ``matrix`` (nc+1, nc+1) counts: ``matrix[pred, true]``.

    The last index is background: the last row counts missed objects (true class, no prediction),
    the last column false positives (prediction, no object). ``normalize`` makes columns sum to 1.
    """
    m = _np(matrix, np.float64)
    m = m if m.ndim == 2 and m.size else np.zeros((0, 0))
    k = m.shape[0]
    labels = [_name(names, i) for i in range(k - 1)] + ["background"] if k else []
    if normalize and k:
        m = m / (m.sum(0, keepdims=True) + 1e-9)
    size = min(max(4.0, 0.45 * k + 3), 16)
    fig = _figure((size + 1.5, size))
    ax = fig.subplots()
    if k:
        im = ax.imshow(np.where(m < 0.005, np.nan, m), cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if k <= 30:
            ticks = np.arange(k)
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.set_xticklabels(labels, rotation=90, fontsize=8)
            ax.set_yticklabels(labels, fontsize=8)
            for (r, c), v in np.ndenumerate(m):
                if v >= 0.005:
                    ax.text(c, r, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.6 * (m.max() or 1) else "black")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center")
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix" + (" (normalised)" if normalize else ""))
    return _save_fig(fig, path)
