"""Dense soft pseudo labels: the weak->strong warp of per-cell maps, top-k targets, and the masked loss."""

from __future__ import annotations

import torch

from effteacher.ssod.dense import dense_loss, dense_targets, warp_to_strong


def _affine(a: float, b: float, c: float, d: float, tx: float, ty: float) -> torch.Tensor:
    return torch.tensor([[[a, b, tx], [c, d, ty], [0.0, 0.0, 1.0]]])


def test_identity_warp_keeps_maps_and_every_cell_valid() -> None:
    maps = torch.rand(1, 3, 4, 5)
    out, valid = warp_to_strong(maps, _affine(1, 0, 0, 1, 0, 0), 8.0, (32, 40))
    assert torch.allclose(out, maps, atol=1e-5)
    assert valid.all()


def test_translation_moves_cells_and_marks_uncovered_ones_invalid() -> None:
    maps = torch.arange(20, dtype=torch.float32).view(1, 1, 4, 5)
    # the strong view is the weak one shifted right by one cell (8 px): strong cell x shows weak cell x - 1
    out, valid = warp_to_strong(maps, _affine(1, 0, 0, 1, 8, 0), 8.0, (32, 40))
    assert torch.allclose(out[0, 0, :, 1:], maps[0, 0, :, :-1], atol=1e-5)
    assert not valid[0, :, 0].any() and valid[0, :, 1:].all()


def test_horizontal_flip_mirrors_the_map() -> None:
    maps = torch.rand(1, 2, 4, 5)
    out, valid = warp_to_strong(maps, _affine(-1, 0, 0, 1, 40, 0), 8.0, (32, 40))
    assert torch.allclose(out, maps.flip(-1), atol=1e-5)
    assert valid.all()


def test_scale_samples_between_cells() -> None:
    maps = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()
    # strong = weak scaled 2x about the origin: strong cell centre 12 px (cell 1) is weak 6 px, between cells 0 and 1
    out, valid = warp_to_strong(maps, _affine(2, 0, 0, 2, 0, 0), 8.0, (64, 64))
    assert abs(float(out[0, 0, 0, 1]) - 0.25) < 1e-5  # weak x = 6 px = cell coordinate 0.25 past cell 0's centre
    assert valid.all()  # a 2x zoom shows only weak pixels
    _, valid = warp_to_strong(maps, _affine(0.5, 0, 0, 0.5, 0, 0), 8.0, (64, 64))
    assert valid[0, :4, :4].all() and not valid[0, 4:].any() and not valid[0, :, 4:].any()  # a 0.5x view: the rest is padding


def _raw(obj: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """(B, na, H, W) objectness and (B, na, H, W, nc) class probabilities -> raw logits (B, na, H, W, 5+nc)."""
    box = torch.zeros(*obj.shape, 4)
    return torch.cat([box, torch.logit(obj)[..., None], torch.logit(cls)], -1)


def test_topk_cells_get_teacher_scores_and_the_rest_background() -> None:
    g = torch.Generator().manual_seed(0)
    obj = [torch.rand(2, 3, 4, 4, generator=g) * 0.98 + 0.01, torch.rand(2, 3, 2, 2, generator=g) * 0.98 + 0.01]
    cls = [torch.rand(2, 3, 4, 4, 3, generator=g) * 0.98 + 0.01, torch.rand(2, 3, 2, 2, 3, generator=g) * 0.98 + 0.01]
    raw = [_raw(o, c) for o, c in zip(obj, cls)]
    eye = torch.eye(3).expand(2, 3, 3)
    t = dense_targets(raw, eye, [8.0, 16.0], (32, 32), topk=0.1)
    n_cells = 2 * 3 * 16 + 2 * 3 * 4
    k = -(-n_cells // 2 // 10)  # ceil(0.1 * 60) per image
    for b in range(2):
        all_obj = torch.cat([o[b].flatten() for o in obj])
        pos = torch.cat([p[b].flatten() for p in t.pos])
        assert int(pos.sum()) == k
        assert torch.equal(pos, all_obj >= all_obj.topk(k).values[-1])
        tgt = torch.cat([o[b].flatten() for o in t.obj])
        assert torch.allclose(tgt[pos], all_obj[pos], atol=1e-5) and (tgt[~pos] == 0).all()
    assert torch.allclose(t.cls[0], cls[0], atol=1e-5)


def test_invalid_cells_are_never_positive() -> None:
    obj = torch.full((1, 1, 4, 4), 0.1)
    obj[0, 0, :, 0] = 0.9  # the teacher's best cells are in column 0 ...
    raw = [_raw(obj, torch.full((1, 1, 4, 4, 2), 0.5))]
    shift = _affine(1, 0, 0, 1, 8, 0)  # ... which the strong view's column 0 cannot see (it shows weak x < 0)
    t = dense_targets(raw, shift, [8.0], (32, 32), topk=0.3)  # 4 of the 12 valid cells
    assert not t.pos[0][..., 0].any() and not t.valid[0][..., 0].any()
    assert t.pos[0][..., 1].all()  # weak column 0 lands in strong column 1


def test_loss_is_lowest_at_the_teacher_and_ignores_what_it_should() -> None:
    g = torch.Generator().manual_seed(1)
    obj = torch.rand(1, 2, 4, 4, generator=g) * 0.9 + 0.05
    cls = torch.rand(1, 2, 4, 4, 3, generator=g) * 0.9 + 0.05
    shift = _affine(1, 0, 0, 1, 8, 0)
    t = dense_targets([_raw(obj, cls)], shift, [8.0], (32, 32), topk=0.2)
    target_raw = _raw(t.obj[0].clamp(1e-4, 1 - 1e-4), t.cls[0])
    best_obj, best_cls = dense_loss([target_raw], t, (1.0,), 1.0, 1.0)
    noisy = target_raw + 0.5 * torch.randn(target_raw.shape, generator=g)
    worse_obj, worse_cls = dense_loss([noisy], t, (1.0,), 1.0, 1.0)
    assert worse_obj > best_obj and worse_cls > best_cls
    # class logits off the top-k cells and any logit on invalid cells carry no loss
    other = target_raw.clone()
    other[..., 5:][~t.pos[0]] = 7.0
    other[..., 4][~t.valid[0]] = -9.0
    o2, c2 = dense_loss([other], t, (1.0,), 1.0, 1.0)
    assert torch.allclose(o2, best_obj) and torch.allclose(c2, best_cls)
    # gains scale the two parts
    o3, c3 = dense_loss([target_raw], t, (1.0,), 2.0, 3.0)
    assert torch.allclose(o3, 2 * best_obj) and torch.allclose(c3, 3 * best_cls)


def test_gradient_flows_to_student_only() -> None:
    obj = torch.full((1, 1, 2, 2), 0.7)
    raw_t = _raw(obj, torch.full((1, 1, 2, 2, 2), 0.6))
    t = dense_targets([raw_t], torch.eye(3)[None], [8.0], (16, 16), topk=0.5)
    student = torch.zeros(1, 1, 2, 2, 7, requires_grad=True)
    lo, lc = dense_loss([student], t, (1.0,), 1.0, 1.0)
    (lo + lc).backward()
    assert student.grad is not None and student.grad[..., 4].abs().sum() > 0 and student.grad[..., 5:].abs().sum() > 0
    assert student.grad[..., :4].abs().sum() == 0  # boxes stay with the sparse pseudo boxes
