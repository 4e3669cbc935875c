"""Detection metrics: prediction/GT matching, per-class P/R/AP, confusion matrix, pycocotools mAP."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from effteacher.data.records import ImageRecord
from effteacher.utils.boxes import xywhn2xyxy

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a (n, 4) and b (m, 4) -> (n, m)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-12)


def match_predictions(
    det_boxes: np.ndarray,
    det_cls: np.ndarray,
    gt_boxes: np.ndarray,
    gt_cls: np.ndarray,
    iouv: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """Which detections are true positives at each IoU threshold (YOLOv5-style matching).

    det_boxes (n, 4) xyxy, det_cls (n,), gt_boxes (m, 4) xyxy (same pixel space), gt_cls (m,).
    Per threshold, same-class pairs with IoU >= t are matched one-to-one by descending IoU.
    Returns correct (n, len(iouv)) bool.
    """
    n = len(det_boxes)
    correct = np.zeros((n, len(iouv)), dtype=bool)
    if n == 0 or len(gt_boxes) == 0:
        return correct
    iou = box_iou_np(gt_boxes, det_boxes)  # (m, n)
    iou = iou * (np.asarray(gt_cls)[:, None] == np.asarray(det_cls)[None, :])
    for t, thr in enumerate(iouv):
        gi, di = np.nonzero(iou >= thr)
        if gi.size == 0:
            continue
        vals = iou[gi, di]
        order = np.argsort(-vals, kind="stable")
        gi, di = gi[order], di[order]
        _, keep = np.unique(di, return_index=True)  # best GT for each detection
        gi, di = gi[keep], di[keep]
        order = np.argsort(-iou[gi, di], kind="stable")
        gi, di = gi[order], di[order]
        _, keep = np.unique(gi, return_index=True)  # then best detection for each GT
        correct[di[keep], t] = True
    return correct


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP as COCO does: 101-point interpolation of the monotone precision envelope.

    recall, precision: (k,) cumulative curves for detections sorted by descending confidence.
    """
    recall = np.asarray(recall, dtype=np.float64)
    if recall.size == 0:
        return 0.0
    envelope = np.flip(np.maximum.accumulate(np.flip(np.asarray(precision, dtype=np.float64))))
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    # recall levels beyond the highest recall reached score 0 (as pycocotools)
    q = np.where(idx < len(recall), envelope[np.clip(idx, 0, len(recall) - 1)], 0.0)
    return float(q.mean())


def ap_per_class(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray, nc: int, eps: float = 1e-16
) -> dict[str, np.ndarray]:
    """Per-class precision, recall and AP from matched detections of a whole dataset.

    tp (N, T) bool from ``match_predictions``, conf (N,), pred_cls (N,), target_cls (M,) every GT's
    class, nc classes. P and R are taken at the confidence with the best mean F1 over classes
    (YOLOv5). Returns dict with p, r, f1 (nc,), ap (nc, T), px (1000,) confidence grid,
    py (nc, 1000) precision on a recall grid px (for the PR curve), n_gt (nc,).
    """
    tp = np.asarray(tp, dtype=bool)
    tp = tp.reshape(len(conf), tp.shape[-1] if tp.ndim == 2 else (1 if tp.size else len(IOU_THRESHOLDS)))
    order = np.argsort(-np.asarray(conf), kind="stable")
    tp, conf, pred_cls = tp[order], np.asarray(conf)[order], np.asarray(pred_cls)[order]
    n_gt = np.bincount(np.asarray(target_cls, dtype=np.int64), minlength=nc)[:nc]
    px = np.linspace(0, 1, 1000)
    T = tp.shape[1]
    ap = np.zeros((nc, T))
    p_curve = np.zeros((nc, 1000))
    r_curve = np.zeros((nc, 1000))
    py = np.zeros((nc, 1000))
    for c in range(nc):
        sel = pred_cls == c
        n_p = int(sel.sum())
        if n_p == 0 or n_gt[c] == 0:
            continue
        tpc = tp[sel].cumsum(0)
        fpc = (~tp[sel]).cumsum(0)
        recall = tpc / (n_gt[c] + eps)
        precision = tpc / (tpc + fpc)
        # P and R when keeping the detections with conf >= threshold (step curves; none kept: P=1, R=0)
        k = np.searchsorted(-conf[sel], -px, side="right")
        r_curve[c] = np.where(k > 0, recall[np.maximum(k - 1, 0), 0], 0.0)
        p_curve[c] = np.where(k > 0, precision[np.maximum(k - 1, 0), 0], 1.0)
        for t in range(T):
            ap[c, t] = compute_ap(recall[:, t], precision[:, t])
        env = np.flip(np.maximum.accumulate(np.flip(precision[:, 0])))
        py[c] = np.interp(px, recall[:, 0], env, right=0)
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    present = n_gt > 0
    mean_f1 = f1[present].mean(0) if present.any() else np.zeros(1000)
    i = int(_smooth(mean_f1, 0.1).argmax())
    return {
        "p": p_curve[:, i],
        "r": r_curve[:, i],
        "f1": f1[:, i],
        "ap": ap,
        "px": px,
        "py": py,
        "n_gt": n_gt,
        "conf": np.array(px[i]),
    }


def _smooth(y: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter over ``fraction`` of the points (odd width), edges padded."""
    nf = round(len(y) * fraction * 2) // 2 + 1
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


class ConfusionMatrix:
    """(nc+1, nc+1) counts: rows = predicted class, columns = true class; index nc = background."""

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.45) -> None:
        self.nc, self.conf, self.iou = nc, conf, iou
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process(self, det_boxes: np.ndarray, det_scores: np.ndarray, det_cls: np.ndarray,
                gt_boxes: np.ndarray, gt_cls: np.ndarray) -> None:
        """Add one image: detections (n, 4) xyxy with scores/classes, GT (m, 4) xyxy with classes."""
        keep = np.asarray(det_scores) > self.conf
        det_boxes, det_cls = np.asarray(det_boxes)[keep], np.asarray(det_cls, dtype=np.int64)[keep]
        gt_cls = np.asarray(gt_cls, dtype=np.int64)
        bg = self.nc
        if len(gt_cls) == 0:
            np.add.at(self.matrix, (det_cls, bg), 1)
            return
        if len(det_cls) == 0:
            np.add.at(self.matrix, (bg, gt_cls), 1)
            return
        iou = box_iou_np(gt_boxes, det_boxes)
        gi, di = np.nonzero(iou > self.iou)
        if gi.size:
            order = np.argsort(-iou[gi, di], kind="stable")
            gi, di = gi[order], di[order]
            _, k = np.unique(di, return_index=True)
            gi, di = gi[k], di[k]
            order = np.argsort(-iou[gi, di], kind="stable")
            gi, di = gi[order], di[order]
            _, k = np.unique(gi, return_index=True)
            gi, di = gi[k], di[k]
        np.add.at(self.matrix, (det_cls[di], gt_cls[gi]), 1)
        fn = np.setdiff1d(np.arange(len(gt_cls)), gi)
        fp = np.setdiff1d(np.arange(len(det_cls)), di)
        np.add.at(self.matrix, (np.full(len(fn), bg), gt_cls[fn]), 1)
        np.add.at(self.matrix, (det_cls[fp], np.full(len(fp), bg)), 1)


def coco_ground_truth(records: Sequence[ImageRecord], names: Sequence[str]) -> dict[str, Any]:
    """COCO-format GT dict from records: image id = index in ``records``, category id = class index,
    boxes [x, y, w, h] in original pixels, area = w*h, iscrowd 0, annotation ids from 1."""
    images, anns = [], []
    ann_id = 1
    for i, r in enumerate(records):
        h, w = int(r.shape[0]), int(r.shape[1])
        images.append({"id": i, "width": w, "height": h, "file_name": str(r.path)})
        if r.n == 0:
            continue
        xyxy = xywhn2xyxy(np.asarray(r.boxes, dtype=np.float64), w, h)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
        for c, (x1, y1, ww, hh) in zip(r.cls.tolist(), xywh.tolist()):
            anns.append({"id": ann_id, "image_id": i, "category_id": int(c), "bbox": [x1, y1, ww, hh],
                         "area": ww * hh, "iscrowd": 0})
            ann_id += 1
    cats = [{"id": i, "name": str(n)} for i, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_evaluate(
    gt_records: Sequence[ImageRecord], predictions: list[dict[str, Any]], names: Sequence[str]
) -> dict[str, Any]:
    """Score COCO-format predictions against records with pycocotools (its prints silenced).

    predictions: [{"image_id": index into gt_records, "category_id": cls, "bbox": [x, y, w, h]
    original pixels, "score": float}]. Returns map50, map (0.5:0.95) floats and per_class_ap50,
    per_class_map (nc,) numpy arrays (0.0 for classes without GT). Zero predictions -> zeros.
    """
    nc = len(names)
    zeros = {"map50": 0.0, "map": 0.0, "per_class_ap50": np.zeros(nc), "per_class_map": np.zeros(nc)}
    gt = coco_ground_truth(gt_records, names)
    if not predictions or not gt["annotations"]:
        return zeros
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(p) for p in predictions])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) area=all, maxDets=100
    cat_index = {c: k for k, c in enumerate(ev.params.catIds)}
    per50, per = np.zeros(nc), np.zeros(nc)
    for c in range(nc):
        k = cat_index.get(c)
        if k is None:
            continue
        p50 = prec[0, :, k]
        pall = prec[:, :, k]
        per50[c] = p50[p50 > -1].mean() if (p50 > -1).any() else 0.0
        per[c] = pall[pall > -1].mean() if (pall > -1).any() else 0.0
    return {
        "map50": max(float(ev.stats[1]), 0.0),
        "map": max(float(ev.stats[0]), 0.0),
        "per_class_ap50": per50,
        "per_class_map": per,
    }
