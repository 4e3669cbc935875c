"""Models: variant table, YOLOv5 parameter counts, raw output format, bias prior, decode, retina, anchors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models import resnet18

from effteacher.errors import CheckpointError, ConfigError
from effteacher.models.anchors import best_possible_recall, check_anchors, kmeans_anchors
from effteacher.models.build import DEFAULT_ANCHORS, VARIANTS, build_model
from effteacher.models.head import DeployModel, decode


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


def test_retina_forward_shapes() -> None:
    m = build_model("retina-r18", 3).eval()
    with torch.no_grad():
        raw, feats = m(torch.rand(1, 3, 64, 128), return_features=True)
    assert [tuple(r.shape) for r in raw] == [(1, 3, 8, 16, 8), (1, 3, 4, 8, 8), (1, 3, 2, 4, 8)]
    assert m.feature_channels == [256, 256, 256] == [f.shape[1] for f in feats]
    assert m.head[0] is not m.head[1]  # unshared heads
    assert not any(p1 is p2 for p1 in m.head[0].parameters() for p2 in m.head[1].parameters())


def test_retina_backbone_weights(tmp_path) -> None:
    torch.manual_seed(0)
    ref = resnet18()
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    m = build_model("retina-r18", 2, backbone_weights=str(path))
    torch.testing.assert_close(m.body.backbone.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    bad = ref.state_dict()
    bad["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        build_model("retina-r18", 2, backbone_weights=str(tmp_path / "bad.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        build_model("retina-r18", 2, backbone_weights=str(tmp_path / "junk.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        build_model("retina-r18", 2, backbone_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError):
        build_model("n", 2, backbone_weights=str(path))


def test_best_possible_recall_hand_case() -> None:
    anchors = np.array([[10.0, 10.0]])
    wh = np.array([[10.0, 10.0], [39.0, 10.0], [41.0, 10.0], [2.0, 10.0]])  # ratios 1, 3.9, 4.1, 5
    assert best_possible_recall(wh, anchors, thr=4.0) == pytest.approx(0.5)


def test_kmeans_and_check_anchors() -> None:
    rng = np.random.default_rng(0)
    # label sizes that the default anchors (10..373 px) cannot cover: very thin, very wide boxes
    wh = np.concatenate([rng.uniform(200, 300, (200, 1)), rng.uniform(3, 5, (200, 1))], 1)
    wh = np.concatenate([wh, wh[:, ::-1]])
    k = kmeans_anchors(wh, n=9, img_size=640, gen=50)
    assert k.shape == (9, 2) and np.all(np.diff(k.prod(1)) >= 0)
    m = build_model("n", 1)
    before = best_possible_recall(wh, m.anchors)
    assert before < 0.98
    assert check_anchors(m, wh, 640) is True
    after = best_possible_recall(wh, m.anchors)
    assert after > before and after > 0.98
    areas = m.anchors.view(-1, 2).prod(1)
    assert torch.all(areas[1:] >= areas[:-1])
    # labels that match the anchors exactly: nothing changes
    m2 = build_model("n", 1)
    assert check_anchors(m2, m2.anchors.view(-1, 2).numpy().repeat(5, 0), 640) is False


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
