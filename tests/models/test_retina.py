"""The RetinaNet-style family: forward shapes and torchvision backbone weights."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from effteacher.errors import CheckpointError, ConfigError
from effteacher.models.build import build_model


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
