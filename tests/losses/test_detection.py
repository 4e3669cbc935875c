"""Detection loss: YOLOv5 gains, 6 and 9 target columns, masks, soft and hard objectness, focal, overfit."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from effteacher.config import LossConfig
from effteacher.losses.assign import assign_targets
from effteacher.losses.detection import DetectionLoss, bce_focal, priority_objectness
from effteacher.models.build import build_model


def fake_model(nc: int) -> SimpleNamespace:
    return SimpleNamespace(
        nc=nc, nl=3, na=3, stride=torch.tensor([8.0, 16.0, 32.0]),
        anchors=torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
                             dtype=torch.float32).view(3, 3, 2),
    )


def raw_for(nc: int, bs: int = 2, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(bs, 3, size // s, size // s, 5 + nc, generator=g, requires_grad=True) for s in (8, 16, 32)]


def test_gains_scale_like_yolov5() -> None:
    loss = DetectionLoss(fake_model(40), LossConfig(), imgsz=320)
    assert loss.gain_box == pytest.approx(0.05)
    assert loss.gain_obj == pytest.approx(0.25)
    assert loss.gain_cls == pytest.approx(0.25)
    over = DetectionLoss(fake_model(40), LossConfig(), imgsz=640, gains=(0.05, 0.7, 0.3))
    assert (over.gain_obj, over.gain_cls) == pytest.approx((0.7, 0.15))


def test_six_and_nine_columns_agree_and_batch_scaling() -> None:
    loss = DetectionLoss(fake_model(3), LossConfig(), imgsz=64)
    t6 = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.4], [1, 2, 0.6, 0.3, 0.2, 0.1]])
    t9 = torch.cat([t6, torch.tensor([[1.0, 1.0, -1.0]] * 2)], 1)
    raw = raw_for(3)
    a, pa = loss(raw, t6)
    b, pb = loss(raw, t9)
    torch.testing.assert_close(a, b)
    assert a.item() == pytest.approx(2 * sum(v.item() for v in pa.values()), rel=1e-5)
    assert all(v.item() > 0 for v in pa.values()) and not any(v.requires_grad for v in pa.values())


def test_masks_remove_terms() -> None:
    loss = DetectionLoss(fake_model(3), LossConfig(), imgsz=64)
    t = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.4, 0.0, 0.0, -1.0]])
    raw = raw_for(3)
    total, parts = loss(raw, t)
    assert parts["cls"].item() == 0.0 and parts["box"].item() == 0.0 and parts["obj"].item() > 0
    total.backward()
    assert all(torch.all(r.grad[..., 5:] == 0) for r in raw)  # no class gradient anywhere
    assert all(torch.all(r.grad[..., :4] == 0) for r in raw)  # no box gradient anywhere
    # nc == 1: the class term is skipped
    _, p1 = DetectionLoss(fake_model(1), LossConfig(), imgsz=64)(raw_for(1), t[:, :6])
    assert p1["cls"].item() == 0.0
    # no targets at all: finite loss from objectness only
    l0, p0 = loss(raw_for(3), torch.zeros(0, 9))
    assert torch.isfinite(l0) and p0["box"].item() == 0.0


def test_expected_targets_scale_sparse_box_and_class_losses() -> None:
    loss = DetectionLoss(fake_model(3), LossConfig(), imgsz=64)
    # one reliable target (cls + box) and one uncertain target (soft obj, no cls, no box)
    t = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.4, 1.0, 1.0, -1.0], [1, 2, 0.6, 0.3, 0.2, 0.1, 0.0, 0.0, 0.7]])
    raw = raw_for(3)
    _, full = loss(raw, t)
    _, quarter = loss(raw, t, expected_targets=4.0)  # 1 box/cls target of 4 expected
    assert quarter["box"].item() == pytest.approx(full["box"].item() / 4)
    assert quarter["cls"].item() == pytest.approx(full["cls"].item() / 4)
    assert quarter["obj"].item() == pytest.approx(full["obj"].item())  # dense: never scaled
    _, dense = loss(raw, t, expected_targets=0.5)  # at least as many targets as expected: unchanged
    for k in ("box", "obj", "cls"):
        assert dense[k].item() == pytest.approx(full[k].item())


def test_soft_class_targets_replace_the_one_hot() -> None:
    loss = DetectionLoss(fake_model(3), LossConfig(), imgsz=64)
    t9 = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.4, 1.0, 1.0, -1.0], [1, 2, 0.6, 0.3, 0.2, 0.1, 1.0, 1.0, -1.0]])
    raw = raw_for(3)
    _, hard = loss(raw, t9)
    one_hot = torch.cat([t9, F.one_hot(t9[:, 1].long(), 3).float()], 1)  # soft targets equal to the one-hot
    _, same = loss(raw, one_hot)
    for k in ("box", "obj", "cls"):
        assert same[k].item() == pytest.approx(hard[k].item())
    soft = torch.cat([t9, torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.4]])], 1)
    _, parts = loss(raw, soft)
    assert parts["cls"].item() != pytest.approx(hard["cls"].item())
    assert parts["box"].item() == pytest.approx(hard["box"].item())
    with pytest.raises(ValueError, match="9 \\+ nc"):
        loss(raw, torch.zeros(1, 10))


def test_soft_obj_target_in_map() -> None:
    cfg = LossConfig()
    model = fake_model(3)
    loss = DetectionLoss(model, cfg, imgsz=64)
    t = torch.tensor([[1, 0, 0.45, 0.55, 0.3, 0.3, 0.0, 0.0, 0.55]])
    raw = raw_for(3)
    _, parts = loss(raw, t)
    anchors = model.anchors / model.stride.view(-1, 1, 1)
    assigned = assign_targets(t, anchors, [(r.shape[2], r.shape[3]) for r in raw])
    expected = 0.0
    for i, (r, lt) in enumerate(zip(raw, assigned)):
        tobj = torch.zeros(r.shape[:4])
        tobj[lt.b, lt.a, lt.gj, lt.gi] = 0.55
        expected += F.binary_cross_entropy_with_logits(r[..., 4].detach(), tobj).item() * cfg.balance[i]
    assert sum(lt.b.numel() for lt in assigned) > 0
    assert parts["obj"].item() == pytest.approx(expected * loss.gain_obj, rel=1e-5)


def test_priority_hard_beats_soft_then_larger() -> None:
    shape = (1, 1, 2, 2)
    idx = torch.tensor([0, 0, 1, 1, 2, 2, 3])
    value = torch.tensor([0.9, 0.3, 0.2, 0.7, 0.4, 0.6, 0.55])
    hard = torch.tensor([False, True, False, False, True, True, False])
    m = priority_objectness(shape, idx, value, hard)
    # cell 0: soft 0.9 vs hard 0.3 -> hard; cell 1: two soft -> 0.7; cell 2: two hard -> 0.6; cell 3 soft 0.55
    torch.testing.assert_close(m.view(-1), torch.tensor([0.3, 0.7, 0.6, 0.55]))
    # the order of the inputs does not matter
    p = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(priority_objectness(shape, idx[p], value[p], hard[p]), m)


def test_focal_hand_value() -> None:
    x, y = torch.tensor([0.0]), torch.tensor([1.0])
    assert bce_focal(x, y).item() == pytest.approx(math.log(2))
    assert bce_focal(x, y, gamma=2.0, alpha=0.25).item() == pytest.approx(0.25 * 0.25 * math.log(2))


def test_giou_and_focal_options_run() -> None:
    cfg = LossConfig(iou_type="giou", focal_gamma=2.0)
    t = torch.tensor([[0, 1, 0.4, 0.5, 0.3, 0.4]])
    total, parts = DetectionLoss(fake_model(3), cfg, imgsz=64)(raw_for(3), t)
    assert torch.isfinite(total) and parts["box"].item() > 0


@pytest.mark.slow
def test_overfit_two_tiny_images() -> None:
    torch.manual_seed(0)
    model = build_model("n", 2)
    model.train()
    imgs = torch.rand(2, 3, 64, 64) * 0.2
    imgs[0, :, 16:40, 8:32] = 0.9  # bright square, class 0
    imgs[1, 0, 30:60, 20:50] = 1.0  # red square, class 1
    imgs[1, 1:, 4:20, 40:60] = 0.8
    targets = torch.tensor([
        [0, 0, 20 / 64, 28 / 64, 24 / 64, 24 / 64],
        [1, 1, 35 / 64, 45 / 64, 30 / 64, 30 / 64],
        [1, 0, 50 / 64, 12 / 64, 20 / 64, 16 / 64],
    ])
    loss_fn = DetectionLoss(model, LossConfig(), imgsz=64)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = last = None
    for step in range(60):
        loss, _ = loss_fn(model(imgs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < 0.5 * first


def loss_case(nc: int, cols: int, expected: float | None, ciou: bool, extra: torch.Tensor | None = None,
              sync_free: bool = True):
    """A seeded batch of 40 targets (6, 9 or 9 + nc columns) on 4 images at 128 px: (loss, parts, grad norms)."""
    g = torch.Generator().manual_seed(3)
    n = 40
    t = torch.cat([torch.randint(0, 4, (n, 1), generator=g).float(), torch.randint(0, nc, (n, 1), generator=g).float(),
                   torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) * 0.5 + 0.01], 1)
    if cols >= 9:
        t = torch.cat([t, (torch.rand(n, 2, generator=g) > 0.3).float(), torch.rand(n, 1, generator=g) * 2 - 1], 1)
    if cols > 9:
        t = torch.cat([t, torch.softmax(torch.randn(n, nc, generator=g), 1)], 1)
    if extra is not None:
        t = torch.cat([t, extra[:, :t.shape[1]]], 0)
    raw = raw_for(nc, bs=4, size=128, seed=5)
    loss_fn = DetectionLoss(fake_model(nc), LossConfig(iou_type="ciou" if ciou else "giou"), 128)
    loss_fn.sync_free = sync_free
    loss, parts = loss_fn(raw, t, expected)
    loss.backward()
    return loss.item(), parts, [r.grad.double().norm().item() for r in raw]


@pytest.mark.parametrize("sync_free", [True, False])
@pytest.mark.parametrize("case, want", [
    ((3, 6, None, True), [1.4008181, 0.1309205, 0.1736386, 0.0456454, 0.0073836, 0.0048608, 0.0076529]),
    ((5, 9, 20.0, True), [1.5054512, 0.1306481, 0.1713164, 0.0743983, 0.0077523, 0.0063036, 0.0089289]),
    ((4, 13, None, False), [1.5466018, 0.1497515, 0.1753508, 0.0615482, 0.0089151, 0.0085507, 0.0140426]),
])
def test_loss_values_unchanged_by_masked_assignment(case, want, sync_free) -> None:
    # values of the loss as it was with compacted positives only, before the GPU path's masked candidates
    loss, parts, grads = loss_case(*case, sync_free=sync_free)
    got = [loss, parts["box"].item(), parts["obj"].item(), parts["cls"].item(), *grads]
    assert got == pytest.approx(want, rel=1e-5)


def test_zero_size_target_changes_nothing_and_stays_finite() -> None:
    # a zero-size row matches no anchor; its candidates are all invalid and must not bring a NaN into the grads
    pad = torch.tensor([[1.0, 2.0, 0.5, 0.5, 0.0, 0.0, 1.0, 1.0, -1.0] + [0.25] * 4])
    loss, parts, grads = loss_case(4, 13, None, True)
    loss_p, parts_p, grads_p = loss_case(4, 13, None, True, extra=pad)
    assert loss_p == pytest.approx(loss, rel=1e-6)
    assert grads_p == pytest.approx(grads, rel=1e-6) and all(math.isfinite(g) for g in grads_p)
