"""Model building: variant table, YOLOv5 parameter counts, output format, bias prior, meta rebuild, Focus stem."""

from __future__ import annotations

import math

import pytest
import torch

from effteacher.errors import ConfigError
from effteacher.models.build import DEFAULT_ANCHORS, VARIANTS, build_model


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_variant_table() -> None:
    assert set(VARIANTS) == {"n", "s", "m", "l", "x", "s-v5.0", "m-v5.0", "l-v5.0", "x-v5.0", "retina-r18", "retina-r50"}
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("q", 3)


@pytest.mark.parametrize("name,ref", [("n", 1_872_157), ("s", 7_235_389)])
def test_param_counts_match_yolov5(name: str, ref: int) -> None:
    # YOLOv5 v6 summaries at nc=80: n 1,872,157 and s 7,235,389 parameters.
    assert abs(n_params(build_model(name, 80)) - ref) / ref < 0.05


def test_release_v5_layout_param_count() -> None:
    # YOLOv5 release v5.0 summary of yolov5s at nc=80: 7,276,605 parameters (Focus stem = our 6x6 conv,
    # SPP(5, 9, 13) = our SPPF(5): same parameters). Exact, as the weights are imported one to one.
    m = build_model("s-v5.0", 80)
    assert n_params(m) == 7_276_605
    assert type(m.body.layers[8]).__name__ == "SPPF" and not m.body.layers[9].m[0].add


def test_yolo_forward_format_and_features() -> None:
    m = build_model("n", 3).eval()
    raw, feats = m(torch.rand(2, 3, 64, 96), return_features=True)
    assert [tuple(r.shape) for r in raw] == [(2, 3, 8, 12, 8), (2, 3, 4, 6, 8), (2, 3, 2, 3, 8)]
    assert [f.shape[1] for f in feats] == m.feature_channels == [64, 128, 256]
    assert m.stride.tolist() == [8.0, 16.0, 32.0]
    assert torch.equal(m.anchors, torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32).view(3, 3, 2))
    assert "anchors" in m.state_dict() and "stride" in m.state_dict()


def test_bias_prior() -> None:
    nc = 4
    m = build_model("n", nc)
    for conv, s in zip(m.head, (8, 16, 32)):
        b = conv.bias.detach().view(3, 5 + nc)
        bound = 1 / math.sqrt(conv.in_channels)  # default uniform init of a conv bias
        assert torch.all((b[:, 4] - math.log(8 / (640 / s) ** 2)).abs() <= bound)
        assert torch.all((b[:, 5:] - math.log(0.6 / (nc - 0.99))).abs() <= bound)


def test_meta_rebuild_and_custom_anchors() -> None:
    anchors = [[5, 6, 7, 8, 9, 10], [20, 21, 22, 23, 24, 25], [50, 60, 70, 80, 90, 100]]
    m = build_model("n", 2, anchors=anchors)
    meta = m.meta()
    assert meta["variant"] == "n" and meta["nc"] == 2 and meta["stride"] == [8.0, 16.0, 32.0]
    m2 = build_model(meta["variant"], meta["nc"], anchors=meta["anchors"])
    assert torch.equal(m2.anchors, m.anchors)
    assert m.anchors[1, 2].tolist() == [24.0, 25.0]
    with pytest.raises(ConfigError):
        build_model("n", 2, anchors=[1, 2, 3])


def test_focus_stem_equals_6x6_conv() -> None:
    # YOLOv5 release v5.0 Focus: space-to-depth then a 3x3 conv; imported as one 6x6 stride-2 padding-2 conv
    from effteacher.models.yolov5_import import focus_to_conv6

    torch.manual_seed(0)
    w3 = torch.randn(8, 12, 3, 3)
    x = torch.randn(2, 3, 32, 64)
    s2d = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    ref = torch.nn.functional.conv2d(s2d, w3, padding=1)
    out = torch.nn.functional.conv2d(x, focus_to_conv6(w3), stride=2, padding=2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
