"""NMS post-processing: equality with a brute-force numpy reference, filters, multi-label, obj column."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effteacher.models.postprocess import non_max_suppression


def iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box a (4,) with boxes b (n, 4)."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)


def reference_nms(pred: np.ndarray, conf: float, iou: float, agnostic: bool, max_det: int) -> np.ndarray:
    """Greedy per-class NMS written plainly: best class per box, score = obj * cls."""
    scores_all = pred[:, 5:] * pred[:, 4:5]
    cls = scores_all.argmax(1)
    score = scores_all.max(1)
    keep = (score > conf) & (pred[:, 4] > conf)
    xy, wh = pred[:, :2], pred[:, 2:4]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[keep]
    score, cls = score[keep], cls[keep]
    order = np.argsort(-score)
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if agnostic or cls[k] == cls[i]]
        if same and iou_np(boxes[i], boxes[same]).max() > iou:
            continue
        kept.append(int(i))
    kept = kept[:max_det]
    return np.concatenate([boxes[kept], score[kept, None], cls[kept, None].astype(np.float64)], 1)


def random_pred(b: int = 2, a: int = 300, nc: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, a, 2, generator=g) * 100
    wh = torch.rand(b, a, 2, generator=g) * 30 + 5
    obj = torch.rand(b, a, 1, generator=g)
    cls = torch.rand(b, a, nc, generator=g)
    return torch.cat([xy, wh, obj, cls], 2).double()


def test_matches_bruteforce_class_aware_and_agnostic() -> None:
    pred = random_pred()
    for agnostic in (False, True):
        out = non_max_suppression(pred, conf_thres=0.2, iou_thres=0.45, agnostic=agnostic, max_det=50)
        assert len(out) == 2
        for i in range(2):
            ref = reference_nms(pred[i].numpy(), 0.2, 0.45, agnostic, 50)
            got = out[i].numpy()
            assert got.shape == ref.shape and got.shape[0] > 5
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_return_obj_classes_filter_and_max_det() -> None:
    pred = random_pred(b=1, seed=3)
    out = non_max_suppression(pred, 0.1, 0.5, return_obj=True)[0]
    assert out.shape[1] == 7
    # obj column is the objectness of the kept box: score / obj is a class probability in [0, 1]
    assert torch.all(out[:, 6] >= out[:, 4]) and torch.all(out[:, 6] <= 1)
    only2 = non_max_suppression(pred, 0.1, 0.5, classes=[2])[0]
    assert only2.shape[0] > 0 and torch.all(only2[:, 5] == 2)
    assert non_max_suppression(pred, 0.1, 0.5, max_det=3)[0].shape[0] == 3


def test_multi_label_keeps_each_class() -> None:
    # one box, obj 0.9, two classes above threshold -> two detections with multi_label
    pred = torch.tensor([[[50.0, 50.0, 20.0, 10.0, 0.9, 0.8, 0.5, 0.1]]])
    single = non_max_suppression(pred, 0.3, 0.5)[0]
    multi = non_max_suppression(pred, 0.3, 0.5, multi_label=True)[0]
    torch.testing.assert_close(single, torch.tensor([[40.0, 45.0, 60.0, 55.0, 0.72, 0.0]]))
    assert multi.shape == (2, 6)
    torch.testing.assert_close(multi[:, 4:], torch.tensor([[0.72, 0.0], [0.45, 1.0]]))


def test_empty_inputs() -> None:
    pred = torch.zeros(2, 10, 7)
    out = non_max_suppression(pred, 0.25, 0.45, return_obj=True)
    assert [o.shape for o in out] == [(0, 7), (0, 7)]


def test_return_probs_appends_the_kept_boxes_class_probabilities() -> None:
    pred = random_pred(b=1, seed=3)
    base = non_max_suppression(pred, 0.1, 0.5, return_obj=True)[0]
    out = non_max_suppression(pred, 0.1, 0.5, return_obj=True, return_probs=True)[0]
    nc = pred.shape[-1] - 5
    assert out.shape == (base.shape[0], 7 + nc)
    torch.testing.assert_close(out[:, :7], base)
    # score = obj * prob of the chosen class, and that class has the largest probability
    probs = out[:, 7:]
    torch.testing.assert_close(out[:, 4], out[:, 6] * probs.gather(1, out[:, 5:6].long())[:, 0])
    assert torch.equal(probs.argmax(1), out[:, 5].long())
    assert [o.shape for o in non_max_suppression(torch.zeros(2, 10, 7), 0.25, 0.45, return_obj=True,
                                                 return_probs=True)] == [(0, 9), (0, 9)]
    with pytest.raises(ValueError, match="return_obj"):
        non_max_suppression(pred, 0.1, 0.5, return_probs=True)
