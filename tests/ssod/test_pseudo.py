"""Pseudo Label Assigner on hand-made teacher detections; pseudo-label precision/recall."""

import pytest
import torch

from effteacher.ssod.metrics import pseudo_precision_recall
from effteacher.ssod.pseudo import assign_pseudo_labels, mix_strong_views

S = 64.0
EYE = torch.eye(3)
FLIP = torch.tensor([[-1.0, 0.0, S], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TAU1 = torch.tensor([0.1, 0.3])
TAU2 = torch.tensor([0.6, 0.8])


def shift(dx: float) -> torch.Tensor:
    m = torch.eye(3)
    m[0, 2] = dx
    return m


def row(img, cls, x1, y1, x2, y2, wc, wb, ot):
    return [img, cls, (x1 + x2) / 2 / S, (y1 + y2) / 2 / S, (x2 - x1) / S, (y2 - y1) / S, wc, wb, ot]


def find(targets, img, cx):
    hit = (targets[:, 0] == img) & ((targets[:, 2] - cx / S).abs() < 1e-5)
    assert int(hit.sum()) == 1, (img, cx)
    return targets[hit][0]


def test_pla_masks_targets_and_geometry():
    d0 = torch.tensor(
        [
            [10, 10, 30, 30, 0.70, 0, 0.90],  # reliable (class 0: tau2 0.6)
            [5, 5, 15, 25, 0.40, 0, 0.995],  # uncertain, obj > 0.99 -> box on
            [40, 40, 60, 50, 0.40, 0, 0.50],  # uncertain, obj 0.5 -> box off
            [0, 0, 10, 10, 0.05, 0, 0.90],  # <= tau1 -> dropped
            [30, 2, 40, 12, 0.70, 1, 0.60],  # class 1: tau2 0.8 -> uncertain
            [50, 2, 60, 12, 0.25, 1, 0.60],  # class 1: tau1 0.3 -> dropped (class 0 would keep it)
            [20, 40, 28, 60, 0.85, 1, 0.97],  # class 1 reliable
        ]
    )
    d1 = torch.tensor([[10, 20, 20, 40, 0.90, 0, 0.95]])  # flipped view -> mirrored [44, 20, 54, 40]
    d2 = torch.tensor(
        [
            [10, 10, 30, 30, 0.90, 0, 0.95],  # shifted by +100: outside -> dropped
        ]
    )
    d3 = torch.tensor(
        [
            [0, 10, 20, 30, 0.90, 0, 0.95],  # shifted -15: 25% visible -> dropped
            [10, 40, 30, 60, 0.90, 0, 0.95],  # shifted -15: [-5, .., 15]: 75% visible -> kept, clipped
        ]
    )
    M = torch.stack([EYE, FLIP, shift(100.0), shift(-15.0)])
    t, stats = assign_pseudo_labels([d0, d1, d2, d3], M, (64, 64), TAU1, TAU2)
    assert t.shape == (7, 9) and t.dtype == torch.float32
    expect = [
        row(0, 0, 10, 10, 30, 30, 1, 1, -1),
        row(0, 0, 5, 5, 15, 25, 0, 1, 0.995),
        row(0, 0, 40, 40, 60, 50, 0, 0, 0.5),
        row(0, 1, 30, 2, 40, 12, 0, 0, 0.6),
        row(0, 1, 20, 40, 28, 60, 1, 1, -1),
        row(1, 0, 44, 20, 54, 40, 1, 1, -1),
        row(3, 0, 0, 40, 15, 60, 1, 1, -1),
    ]
    for e in expect:
        got = find(t, e[0], e[2] * S)
        assert torch.allclose(got, torch.tensor(e), atol=1e-5), (got, e)
    assert stats["n_reliable"] == pytest.approx(4 / 4)
    assert stats["n_uncertain"] == pytest.approx(3 / 4)
    assert stats["scores"].shape == (11,) and stats["classes"].tolist()[:7] == [0, 0, 0, 0, 1, 1, 1]
    assert stats["reliable"].tolist() == (t[:, 6] == 1).tolist()


def test_pla_min_size_and_scale_matrix():
    half = torch.diag(torch.tensor([0.5, 0.5, 1.0]))
    d = torch.tensor(
        [
            [0, 0, 3, 40, 0.9, 0, 0.9],  # width 1.5 after scaling -> dropped (min_size 2)
            [10, 10, 50, 30, 0.9, 0, 0.9],  # -> [5, 5, 25, 15]
        ]
    )
    t, _ = assign_pseudo_labels([d], half[None], (32, 64), TAU1, TAU2)
    assert t.shape == (1, 9)
    assert torch.allclose(t[0, 2:6], torch.tensor([15 / 64, 10 / 32, 20 / 64, 10 / 32]))


def test_pla_boundaries_and_empty():
    # score == tau2 is reliable; score == tau1 is background
    d = torch.tensor([[10, 10, 20, 20, 0.6, 0, 0.5], [30, 30, 40, 40, 0.1, 0, 0.5]])
    t, st = assign_pseudo_labels([d], EYE[None], (64, 64), TAU1, TAU2)
    assert t.shape == (1, 9) and t[0, 6] == 1 and t[0, 8] == -1
    t, st = assign_pseudo_labels([torch.zeros(0, 7), torch.zeros(0, 7)], torch.stack([EYE, EYE]), (64, 64), TAU1, TAU2)
    assert t.shape == (0, 9) and st["n_reliable"] == 0.0 and st["scores"].numel() == 0
    with pytest.raises(ValueError, match="7"):
        assign_pseudo_labels([torch.zeros(2, 6)], EYE[None], (64, 64), TAU1, TAU2)


# ---------------------------------------------------------------- reporting metric


def test_pseudo_precision_recall_hand_case():
    gt = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [40, 40, 50, 50]], dtype=torch.float32)
    gt_cls = torch.tensor([0, 1, 0, 0])
    gt_img = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor(
        [
            [0, 0, 10, 10],  # img 0, matches gt 0 (IoU 1)
            [1, 0, 10, 10],  # img 0, duplicate of gt 0 (IoU 0.9) -> FP (one-to-one)
            [20, 20, 30, 30],  # img 0, right box, wrong class -> FP
            [0, 0, 10, 10],  # img 1, matches gt 2
            [40, 40, 44, 50],  # img 1, IoU 0.4 with gt 3 -> FP
        ],
        dtype=torch.float32,
    )
    pred_cls = torch.tensor([0, 0, 0, 0, 0])
    pred_img = torch.tensor([0, 0, 0, 1, 1])
    p, r, tp, n_pred, n_gt = pseudo_precision_recall(pred, pred_cls, pred_img, gt, gt_cls, gt_img)
    assert (tp, n_pred, n_gt) == (2, 5, 4)
    assert p == pytest.approx(0.4) and r == pytest.approx(0.5)
    # lower IoU threshold: the 0.4 box now matches
    assert pseudo_precision_recall(pred, pred_cls, pred_img, gt, gt_cls, gt_img, iou=0.35)[2] == 3
    # the higher-IoU prediction wins a contested ground truth
    assert pseudo_precision_recall(pred[[1, 0]], pred_cls[:2], pred_img[:2], gt[:1], gt_cls[:1], gt_img[:1])[2] == 1
    empty = torch.zeros(0, 4)
    assert pseudo_precision_recall(empty, pred_cls[:0], pred_img[:0], gt, gt_cls, gt_img) == (0.0, 0.0, 0, 0, 4)


def test_pseudo_quality_separates_localisation_from_class():
    # same hand case: the right-box-wrong-class prediction counts for the agnostic precision only
    gt = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [40, 40, 50, 50]], dtype=torch.float32)
    gt_cls, gt_img = torch.tensor([0, 1, 0, 0]), torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [40, 40, 44, 50]],
                        dtype=torch.float32)
    args = (pred, torch.zeros(5, dtype=torch.long), torch.tensor([0, 0, 0, 1, 1]), gt, gt_cls, gt_img)
    assert pseudo_precision_recall(*args)[:2] == pytest.approx((0.4, 0.5))
    p_agn, r_agn, tp, *_ = pseudo_precision_recall(*args, ignore_class=True)
    assert tp == 3 and p_agn == pytest.approx(0.6)  # 3 of 5: gt 0, gt 1 (any class), gt 2


def test_pla_soft_cls_carries_the_teacher_class_probabilities():
    probs = torch.tensor([[0.7, 0.2], [0.3, 0.6], [0.1, 0.1]])
    d = torch.cat([torch.tensor([[10, 10, 30, 30, 0.70, 0, 1.0],  # reliable
                                 [40, 40, 60, 50, 0.50, 1, 0.8],  # uncertain (class 1: tau1 0.3, tau2 0.8)
                                 [0, 0, 10, 10, 0.05, 0, 0.5]]),  # dropped
                   probs], 1)
    hard, _ = assign_pseudo_labels([d[:, :7]], EYE[None], (64, 64), TAU1, TAU2)
    soft, _ = assign_pseudo_labels([d], EYE[None], (64, 64), TAU1, TAU2, soft_cls=True)
    assert hard.shape == (2, 9) and soft.shape == (2, 11)
    torch.testing.assert_close(soft[:, :9], hard)
    torch.testing.assert_close(soft[:, 9:], probs[:2])
    with pytest.raises(ValueError):
        assign_pseudo_labels([d[:, :7]], EYE[None], (64, 64), TAU1, TAU2, soft_cls=True)


def test_pla_objectness_score_mode_and_class_gate():
    # x1 y1 x2 y2 joint-score cls obj: class probability = score / obj
    d = torch.tensor(
        [
            [10, 10, 30, 30, 0.27, 0, 0.90],  # obj 0.9, class prob 0.3: joint 'uncertain', obj-mode reliable w/o class
            [40, 40, 60, 60, 0.08, 0, 0.40],  # obj 0.4, class prob 0.2: joint background, obj-mode uncertain
            [5, 40, 25, 60, 0.72, 1, 0.90],  # obj 0.9, class prob 0.8: reliable with its class in both modes
        ]
    )
    joint, _ = assign_pseudo_labels([d], EYE[None], (64, 64), TAU1, TAU2)
    assert joint.shape[0] == 2 and find(joint, 0, 20.0)[6:].tolist() == pytest.approx([0.0, 0.0, 0.9])
    obj, st = assign_pseudo_labels([d], EYE[None], (64, 64), TAU1, TAU2, score_mode="obj", cls_thres=0.5)
    assert obj.shape[0] == 3 and st["n_reliable"] == 2.0 and st["n_uncertain"] == 1.0
    assert find(obj, 0, 20.0)[6:].tolist() == pytest.approx([0.0, 1.0, -1.0])  # hard obj and box, no class
    assert find(obj, 0, 50.0)[6:].tolist() == pytest.approx([0.0, 0.0, 0.4])  # soft objectness, not background
    assert find(obj, 0, 15.0)[6:].tolist() == pytest.approx([1.0, 1.0, -1.0])
    gated, _ = assign_pseudo_labels([d], EYE[None], (64, 64), torch.tensor([0.1, 0.1]), torch.tensor([0.2, 0.2]),
                                    cls_thres=0.5)  # joint mode: reliable by score, class still gated
    assert find(gated, 0, 20.0)[6].item() == 0.0 and find(gated, 0, 15.0)[6].item() == 1.0
    with pytest.raises(ValueError, match="score_mode"):
        assign_pseudo_labels([d], EYE[None], (64, 64), TAU1, TAU2, score_mode="cls")


def test_unlabeled_mixup_blends_views_and_joins_their_pseudo_targets():
    """p = 1 with two views: each is blended with the other (ratio in (0, 1)) and carries both target sets."""
    torch.manual_seed(0)
    x = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])
    t = torch.tensor([row(0, 0, 0, 0, 10, 10, 1, 1, -1), row(1, 1, 20, 20, 40, 40, 0, 0, 0.7),
                      row(1, 0, 5, 5, 15, 15, 1, 1, -1)])
    xm, tm = mix_strong_views(x, t, 1.0)
    r0, r1 = 1 - float(xm[0, 0, 0, 0]), float(xm[1, 0, 0, 0])  # view i keeps r_i of itself (view 0 is 0, view 1 is 1)
    assert 0.2 < r0 < 0.8 and 0.2 < r1 < 0.8
    assert torch.allclose(xm[0], torch.full((3, 8, 8), 1 - r0)) and torch.allclose(xm[1], torch.full((3, 8, 8), r1))
    assert tm.shape == (6, 9)
    for img, expected in ((0, 3), (1, 3)):  # view 0: its own box + view 1's two; view 1: its two + view 0's one
        assert int((tm[:, 0] == img).sum()) == expected
    # a copied target keeps every column but the image index
    copied = tm[3:]
    assert {tuple(r[1:].tolist()) for r in copied} == {tuple(r[1:].tolist()) for r in t}


def test_unlabeled_mixup_off_or_single_view_changes_nothing():
    x, t = torch.rand(2, 3, 8, 8), torch.tensor([row(0, 0, 0, 0, 10, 10, 1, 1, -1)])
    for xin, p in ((x, 0.0), (x[:1], 1.0)):
        xm, tm = mix_strong_views(xin, t, p)
        assert xm is xin and tm is t
    xm, tm = mix_strong_views(x, torch.zeros(0, 9), 1.0)  # no pseudo targets: views still mixed, none invented
    assert tm.shape == (0, 9) and not torch.equal(xm, x)
