"""Teacher EMA maths, the burn-in hand-over, and the flip-ensemble teacher."""

import math

import pytest
import torch
from torch import nn

from effteacher.ssod.teacher import ModelEMA, flip_ensemble_predict, hand_over


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in list(model.parameters()) + [model.bn.running_mean, model.bn.running_var]:
            t.fill_(value)


def test_ema_init_is_frozen_eval_copy():
    m = Tiny()
    ema = ModelEMA(m, decay=0.999, tau=0)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p is not q for p, q in zip(ema.module.parameters(), m.parameters()))
    assert torch.equal(ema.module.conv.weight, m.conv.weight)


def test_ema_constant_decay_exact_blend_params_and_buffers():
    m = Tiny()
    _set(m, 1.0)
    ema = ModelEMA(m, decay=0.9, tau=0)
    _set(m, 3.0)
    m.bn.num_batches_tracked.fill_(7)
    d = ema.update(m)
    assert d == 0.9
    expect = 0.9 * 1.0 + 0.1 * 3.0
    for t in [ema.module.conv.weight, ema.module.conv.bias, ema.module.bn.weight,
              ema.module.bn.running_mean, ema.module.bn.running_var]:
        assert torch.allclose(t, torch.full_like(t, expect))
    assert int(ema.module.bn.num_batches_tracked) == 7  # integer buffers copied
    ema.update(m)
    assert torch.allclose(ema.module.bn.running_mean, torch.full((4,), 0.9 * expect + 0.1 * 3.0))


def test_ema_ramp_and_set_decay():
    m = Tiny()
    _set(m, 0.0)
    ema = ModelEMA(m, decay=0.99, tau=10)
    _set(m, 1.0)
    d1 = ema.update(m)
    assert d1 == pytest.approx(0.99 * (1 - math.exp(-1 / 10)))
    assert torch.allclose(ema.module.conv.bias, torch.full((4,), 1 - d1))
    d2 = ema.update(m)
    assert d2 == pytest.approx(0.99 * (1 - math.exp(-2 / 10)))
    ema.set_decay(0.999, tau=0)
    assert ema.update(m) == 0.999
    assert ema.updates == 3


def test_ema_handles_ddp_like_wrapper_and_half_student():
    m = Tiny()
    _set(m, 1.0)
    ema = ModelEMA(m, decay=0.5, tau=0)
    half = Tiny().half()
    _set(half, 2.0)
    ema.update(half)
    assert ema.module.conv.weight.dtype == torch.float32
    assert torch.allclose(ema.module.conv.weight, torch.full_like(ema.module.conv.weight, 1.5))
    wrapped = nn.DataParallel(m)  # has .module like DDP
    ema2 = ModelEMA(wrapped, decay=0.5, tau=0)
    assert isinstance(ema2.module, Tiny)
    ema2.update(wrapped)


def test_ema_state_dict_roundtrip_plain():
    m = Tiny()
    ema = ModelEMA(m, decay=0.9, tau=5)
    ema.update(m)
    state = ema.state_dict()
    assert set(state) == {"module", "updates", "decay", "tau"}
    assert all(isinstance(v, torch.Tensor) for v in state["module"].values())
    other = ModelEMA(Tiny(), decay=0.1, tau=0)
    other.load_state_dict(state)
    assert other.updates == 1 and other.decay == 0.9 and other.tau == 5
    for a, b in zip(other.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)


def test_hand_over_copies_values_in_place_and_student_still_trains():
    student = Tiny()
    _set(student, 0.0)
    ema = ModelEMA(student, decay=0.5, tau=0)
    _set(student, 4.0)
    ema.update(student)  # ema = 2.0 everywhere
    params_before = [id(p) for p in student.parameters()]
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    hand_over(student, ema)
    for (n, p), q in zip(student.state_dict().items(), ema.module.state_dict().values()):
        assert torch.equal(p, q), n
        assert p.data_ptr() != q.data_ptr(), n
    assert [id(p) for p in student.parameters()] == params_before
    assert torch.allclose(student.conv.weight, torch.full_like(student.conv.weight, 2.0))
    # the student keeps training with the same optimizer; the teacher is unaffected
    student.train()
    loss = student(torch.rand(2, 3, 4, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    assert not torch.equal(student.conv.weight, ema.module.conv.weight)
    assert torch.allclose(ema.module.conv.weight, torch.full_like(ema.module.conv.weight, 2.0))


# ---------------------------------------------------------------- flip ensemble


def ref_decode(raw, anchors, stride):
    """The decode formula of docs/method.md section 2, written out for the test."""
    out = []
    for i, r in enumerate(raw):
        b, na, h, w, no = r.shape
        y = r.sigmoid()
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack([gx, gy], -1).view(1, 1, h, w, 2).float()
        xy = (y[..., :2] * 2 - 0.5 + grid) * stride[i]
        wh = (y[..., 2:4] * 2) ** 2 * anchors[i].view(1, na, 1, 1, 2)
        out.append(torch.cat([xy, wh, y[..., 4:]], -1).view(b, -1, no))
    return torch.cat(out, 1)


class ConstDet(nn.Module):
    """Returns fixed raw outputs whatever the image (one level, 1 anchor, 1x2 grid, stride 8)."""

    def __init__(self, raw: torch.Tensor) -> None:
        super().__init__()
        self.raw = raw
        self.register_buffer("stride", torch.tensor([8.0]))
        self.register_buffer("anchors", torch.tensor([[[8.0, 8.0]]]))

    def forward(self, x):
        return [self.raw.expand(x.shape[0], -1, -1, -1, -1)]


class ConvDet(nn.Module):
    """Input-dependent two-level toy detector (1 anchor per level, nc = 2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 7, 3, stride=8, padding=1)
        self.b = nn.Conv2d(3, 7, 3, stride=16, padding=1)
        self.register_buffer("stride", torch.tensor([8.0, 16.0]))
        self.register_buffer("anchors", torch.tensor([[[10.0, 13.0]], [[30.0, 61.0]]]))

    def forward(self, x):
        return [c(x).permute(0, 2, 3, 1).unsqueeze(1) for c in (self.a, self.b)]


def test_flip_ensemble_hand_case():
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    raw = torch.zeros(1, 1, 1, 2, 6)
    raw[0, 0, 0, 0, 0] = logit(0.75)  # cell 0: cx = (1.5 - 0.5 + 0) * 8 = 8
    raw[0, 0, 0, 1, 0] = logit(0.5)  # cell 1: cx = (1.0 - 0.5 + 1) * 8 = 12
    raw[0, 0, 0, 0, 4] = logit(0.9)  # obj at cell 0
    raw[0, 0, 0, 1, 4] = logit(0.3)
    raw[0, 0, 0, 0, 2] = logit(0.6)  # w logit differs between cells
    det = ConstDet(raw)
    out = flip_ensemble_predict(det, torch.zeros(1, 3, 8, 16), decode_fn=ref_decode)
    plain = ref_decode([raw], det.anchors, det.stride)
    # mirrored run: cell 0 gets cell 1's box flipped back: 16 - 12 = 4; cell 1 gets 16 - 8 = 8
    assert torch.allclose(out[0, :, 0], torch.tensor([(8 + 4) / 2, (12 + 8) / 2]))
    assert torch.allclose(out[0, :, 4], torch.tensor([0.6, 0.6]))  # obj (0.9+0.3)/2 at both cells
    w0, w1 = plain[0, 0, 2], plain[0, 1, 2]
    assert torch.allclose(out[0, :, 2], torch.stack([(w0 + w1) / 2, (w1 + w0) / 2]))
    assert torch.allclose(out[0, :, 1], plain[0, :, 1])  # y untouched


def test_flip_ensemble_is_flip_consistent():
    det = ConvDet()
    x = torch.rand(2, 3, 32, 48)
    e = flip_ensemble_predict(det, x, decode_fn=ref_decode)
    ef = flip_ensemble_predict(det, x.flip(-1), decode_fn=ref_decode)
    # map ef back: per level flip the anchor grid along W and mirror cx
    back, start = [], 0
    for s in (8, 16):
        h, w = 32 // s, 48 // s
        lvl = ef[:, start : start + h * w].reshape(2, 1, h, w, -1).flip(3).reshape(2, h * w, -1).clone()
        lvl[..., 0] = 48 - lvl[..., 0]
        back.append(lvl)
        start += h * w
    assert torch.allclose(torch.cat(back, 1), e, atol=1e-5)
    plain = ref_decode(det(x), det.anchors, det.stride)
    assert not torch.allclose(plain, e)  # the ensemble actually averaged something


def test_flip_ensemble_rejects_bad_width():
    with pytest.raises(ValueError, match="multiple of stride"):
        flip_ensemble_predict(ConvDet(), torch.rand(1, 3, 32, 40), decode_fn=ref_decode)


def test_flip_ensemble_with_project_decode():
    head = pytest.importorskip("effteacher.models.head")
    det = ConvDet()
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(flip_ensemble_predict(det, x), flip_ensemble_predict(det, x, decode_fn=ref_decode), atol=1e-5)
    assert head.decode is not None
