"""Metrics: matching, AP against pycocotools, confusion matrix, coco_evaluate edge cases, empty validations score 0."""

from __future__ import annotations

import numpy as np
import pytest

from effteacher.data.records import ImageRecord
from effteacher.utils.boxes import xyxy2xywhn
from effteacher.val.metrics import (
    ConfusionMatrix,
    ap_per_class,
    box_iou_np,
    coco_evaluate,
    compute_ap,
    match_predictions,
)


def _record(i: int, boxes_xyxy: list, cls: list, hw=(100, 100)) -> ImageRecord:
    b = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    return ImageRecord(path=f"/x/{i}.jpg", shape=hw, cls=np.asarray(cls, dtype=np.int64),
                       boxes=xyxy2xywhn(b, hw[1], hw[0]).astype(np.float32))


def _pred(img: int, xyxy: list, score: float, c: int) -> dict:
    x1, y1, x2, y2 = xyxy
    return {"image_id": img, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


def test_box_iou():
    iou = box_iou_np(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]], atol=1e-9)


def test_compute_ap_known_value():
    # TP, FP, TP on 2 GT: recall .5 .5 1, precision 1 .5 .667 -> envelope 1 .667 .667
    ap = compute_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert ap == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert compute_ap(np.array([]), np.array([])) == 0.0


def test_coco_evaluate_known_value_and_match_pycocotools():
    gt = [_record(0, [[10, 10, 50, 50], [60, 60, 90, 90]], [0, 0])]
    preds = [_pred(0, [10, 10, 50, 50], 0.9, 0), _pred(0, [0, 60, 20, 80], 0.8, 0), _pred(0, [60, 60, 90, 90], 0.7, 0)]
    res = coco_evaluate(gt, preds, ["a"])
    expected = (51 + 50 * 2 / 3) / 101
    assert res["map50"] == pytest.approx(expected, abs=1e-6)
    assert res["map"] == pytest.approx(expected, abs=1e-6)
    assert res["per_class_ap50"][0] == pytest.approx(expected, abs=1e-6)

    # the same case through our own matcher + AP
    det = np.array([p["bbox"] for p in preds], dtype=np.float64)
    det[:, 2:] += det[:, :2]
    tp = match_predictions(det, np.zeros(3), np.array([[10, 10, 50, 50], [60, 60, 90, 90]]), np.zeros(2))
    out = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.zeros(3), np.zeros(2), nc=1)
    assert out["ap"][0].mean() == pytest.approx(expected)


def test_iou_dependent_map():
    # IoU 0.72: TP at 0.50 .. 0.70 (5 of 10 thresholds) -> mAP50 1, mAP50-95 0.5
    gt = [_record(0, [[0, 0, 100, 100]], [1], hw=(200, 200))]
    preds = [_pred(0, [0, 0, 100, 72], 0.5, 1)]
    res = coco_evaluate(gt, preds, ["a", "b"])
    assert res["map50"] == pytest.approx(1.0)
    assert res["map"] == pytest.approx(0.5)
    np.testing.assert_allclose(res["per_class_map"], [0.0, 0.5])
    tp = match_predictions(np.array([[0, 0, 100, 72.0]]), np.array([1]), np.array([[0, 0, 100, 100.0]]), np.array([1]))
    assert tp[0].tolist() == [True] * 5 + [False] * 5


def test_perfect_predictions_map_one():
    rng = np.random.default_rng(0)
    records, preds = [], []
    for i in range(5):
        xy = rng.uniform(0, 60, (4, 2))
        wh = rng.uniform(5, 40, (4, 2))
        boxes = np.concatenate([xy, xy + wh], 1).round(2)
        cls = rng.integers(0, 3, 4)
        records.append(_record(i, boxes, cls))
        # boxes go through float32 normalisation in the record; use the record's pixels
        for b, c in zip(boxes, cls):
            preds.append(_pred(i, b.tolist(), float(rng.uniform(0.3, 1)), int(c)))
    res = coco_evaluate(records, preds, ["a", "b", "c"])
    assert res["map50"] == pytest.approx(1.0)
    assert res["map"] == pytest.approx(1.0)


def test_ap_per_class_matches_pycocotools_random():
    rng = np.random.default_rng(1)
    nc = 2
    records, preds = [], []
    all_tp, all_conf, all_cls, all_tcls = [], [], [], []
    for i in range(6):
        # GT on a grid so that boxes never overlap; detections jittered + false positives
        cells = rng.choice(16, 5, replace=False)
        x1, y1 = (cells % 4) * 50 + 5.0, (cells // 4) * 50 + 5.0
        gt = np.stack([x1, y1, x1 + 35, y1 + 35], 1)
        gcls = rng.integers(0, nc, 5)
        records.append(_record(i, gt, gcls, hw=(200, 200)))
        keep = rng.random(5) < 0.8
        det = gt[keep] + rng.uniform(-8, 8, (int(keep.sum()), 4))
        dcls = np.where(rng.random(int(keep.sum())) < 0.85, gcls[keep], 1 - gcls[keep])
        fp = rng.uniform(0, 150, (2, 2))
        det = np.concatenate([det, np.concatenate([fp, fp + 30], 1)])
        dcls = np.concatenate([dcls, rng.integers(0, nc, 2)])
        conf = rng.uniform(0.05, 1.0, len(det))
        for b, s, c in zip(det, conf, dcls):
            preds.append(_pred(i, b.tolist(), float(s), int(c)))
        rec = records[-1]
        from effteacher.utils.boxes import xywhn2xyxy

        all_tp.append(match_predictions(det, dcls, xywhn2xyxy(rec.boxes.astype(np.float64), 200, 200), rec.cls))
        all_conf.append(conf), all_cls.append(dcls), all_tcls.append(gcls)
    res = coco_evaluate(records, preds, ["a", "b"])
    out = ap_per_class(np.concatenate(all_tp), np.concatenate(all_conf), np.concatenate(all_cls),
                       np.concatenate(all_tcls), nc=nc)
    np.testing.assert_allclose(out["ap"][:, 0], res["per_class_ap50"], atol=1e-6)
    np.testing.assert_allclose(out["ap"].mean(1), res["per_class_map"], atol=1e-6)
    assert 0 < res["map"] < 1
    assert out["p"].shape == (nc,) and np.all((out["p"] >= 0) & (out["p"] <= 1))
    assert out["py"].shape == (nc, 1000)


def test_precision_recall_at_best_f1():
    # class 0: 2 GT, detections TP(0.9), TP(0.8), FP(0.1): best F1 at conf in (0.1, 0.8] -> P=1, R=1
    tp = np.array([[True], [True], [False]])
    out = ap_per_class(tp, np.array([0.9, 0.8, 0.1]), np.zeros(3), np.zeros(2), nc=1)
    assert out["p"][0] == pytest.approx(1.0, abs=1e-3)
    assert out["r"][0] == pytest.approx(1.0, abs=1e-3)


def test_coco_evaluate_no_predictions_and_no_gt():
    gt = [_record(0, [[10, 10, 50, 50]], [0])]
    res = coco_evaluate(gt, [], ["a"])
    assert res["map"] == 0.0 and res["map50"] == 0.0 and res["per_class_map"].tolist() == [0.0]
    res = coco_evaluate([_record(0, [], [])], [_pred(0, [1, 1, 5, 5], 0.9, 0)], ["a"])
    assert res["map"] == 0.0


def test_coco_evaluate_is_silent(capsys):
    gt = [_record(0, [[10, 10, 50, 50]], [0])]
    coco_evaluate(gt, [_pred(0, [10, 10, 50, 50], 0.9, 0)], ["a"])
    assert capsys.readouterr().out == ""


def test_confusion_matrix():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou=0.45)
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=float)
    gcls = np.array([0, 1, 1])
    det = np.array([[0, 0, 10, 10], [20, 20, 30, 31], [60, 60, 70, 70], [40, 40, 50, 50]], dtype=float)
    dcls = np.array([0, 0, 1, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.1])  # the last one is below conf: ignored -> GT 3 missed
    cm.process(det, scores, dcls, gt, gcls)
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[0, 0] = 1  # correct
    expected[0, 1] = 1  # true 1 predicted as 0
    expected[1, 2] = 1  # false positive of class 1 (background column)
    expected[2, 1] = 1  # missed GT of class 1 (background row)
    np.testing.assert_array_equal(cm.matrix, expected)
    cm.process(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0))
    np.testing.assert_array_equal(cm.matrix, expected)


def _zero(pr: dict[str, np.ndarray], nc: int) -> None:
    assert pr["p"].shape == pr["r"].shape == pr["f1"].shape == (nc,)
    assert pr["ap"].shape == (nc, 10) and pr["py"].shape == (nc, 1000)
    assert not pr["p"].any() and not pr["r"].any() and not pr["ap"].any() and not pr["py"].any()


@pytest.mark.parametrize("tp", [np.zeros((0, 10), bool), np.zeros(0, bool), []], ids=["2d", "1d", "list"])
def test_no_prediction_at_all_scores_zero(tp):
    pr = ap_per_class(tp, np.zeros(0), np.zeros(0, np.int64), np.array([0, 1, 1]), nc=3)
    _zero(pr, 3)
    assert pr["n_gt"].tolist() == [1, 2, 0]


def test_no_prediction_and_no_ground_truth_scores_zero():
    _zero(ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.zeros(0), nc=2), 2)


def test_predictions_only_of_classes_without_ground_truth_score_zero():
    # two detections of class 1 (no GT), the GT is of class 0 (no detection)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    correct = match_predictions(boxes, np.array([1, 1]), np.array([[0, 0, 10, 10]], float), np.array([0]))
    assert correct.shape == (2, 10) and not correct.any()
    pr = ap_per_class(correct, np.array([0.9, 0.8]), np.array([1, 1]), np.array([0]), nc=2)
    _zero(pr, 2)


def test_empty_curves_give_zero_ap():
    assert compute_ap(np.zeros(0), np.zeros(0)) == 0.0
