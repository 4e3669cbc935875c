"""The detection head: decode inverts a hand encode; the deploy model matches decode."""

from __future__ import annotations

import math

import torch

from effteacher.models.build import DEFAULT_ANCHORS, build_model
from effteacher.models.head import DeployModel, decode


def test_decode_inverts_hand_encode() -> None:
    anchors = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32).view(3, 3, 2)
    stride = torch.tensor([8.0, 16.0, 32.0])
    nc, shapes = 2, [(8, 8), (4, 4), (2, 2)]
    raw = [torch.zeros(1, 3, h, w, 5 + nc) for h, w in shapes]
    # A box at level 1, anchor 2, row 3, col 1: cx = 30, cy = 60, w = 50, h = 100 pixels.
    cx, cy, bw, bh = 30.0, 60.0, 50.0, 100.0
    lvl, a, gj, gi = 1, 2, 3, 1
    sx = (cx / 16 - gi + 0.5) / 2
    sy = (cy / 16 - gj + 0.5) / 2
    sw = math.sqrt(bw / anchors[lvl, a, 0].item()) / 2
    sh = math.sqrt(bh / anchors[lvl, a, 1].item()) / 2
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    raw[lvl][0, a, gj, gi] = torch.tensor([logit(sx), logit(sy), logit(sw), logit(sh), logit(0.9), logit(0.2), logit(0.7)])
    out = decode(raw, anchors, stride)
    assert out.shape == (1, 3 * (64 + 16 + 4), 7)
    idx = 3 * 64 + (a * 4 + gj) * 4 + gi  # level-major, then anchor, row, column
    torch.testing.assert_close(out[0, idx], torch.tensor([cx, cy, bw, bh, 0.9, 0.2, 0.7]), atol=1e-4, rtol=1e-5)
    # an all-zero logit decodes to the cell centre and the anchor size
    torch.testing.assert_close(out[0, 0, :4], torch.tensor([4.0, 4.0, 10.0, 13.0]))


def test_deploy_model_matches_decode() -> None:
    m = build_model("n", 2)
    x = torch.rand(1, 3, 64, 64)
    dm = DeployModel(m)
    assert not dm.training and not m.training  # exporters restore the wrapper's mode: it must be eval
    with torch.no_grad():
        y = dm(x)
        ref = decode(m(x), m.anchors, m.stride)
    assert y.shape == (1, 3 * (64 + 16 + 4), 7)
    torch.testing.assert_close(y, ref)
