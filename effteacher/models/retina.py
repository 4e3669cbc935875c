"""RetinaNet-style body: torchvision ResNet (C3-C5) + 3-level FPN, unshared per-level heads, local backbone weights."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.ops import FeaturePyramidNetwork

from effteacher.errors import CheckpointError
from effteacher.models.blocks import Conv

_RESNETS = {"resnet18": (resnet18, [128, 256, 512]), "resnet50": (resnet50, [512, 1024, 2048])}


class RetinaBody(nn.Module):
    """ResNet C3/C4/C5 (strides 8/16/32) -> FPN P3-P5 with ``out_channels`` each.

    forward: (B, 3, H, W), H, W multiples of 32 -> [P3 (B, C, H/8, W/8), P4, P5].
    """

    def __init__(self, arch: str = "resnet18", out_channels: int = 256) -> None:
        super().__init__()
        if arch not in _RESNETS:
            raise ValueError(f"unknown backbone '{arch}', allowed: {', '.join(_RESNETS)}")
        ctor, in_ch = _RESNETS[arch]
        self.arch = arch
        self.backbone = ctor(weights=None)
        self.backbone.fc = nn.Identity()  # classifier is unused; its keys are skipped when loading
        self.fpn = FeaturePyramidNetwork(in_ch, out_channels)
        self.out_channels = [out_channels] * 3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        r = self.backbone
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        c2 = r.layer1(x)
        c3 = r.layer2(c2)
        c4 = r.layer3(c3)
        c5 = r.layer4(c4)
        out = self.fpn(OrderedDict([("p3", c3), ("p4", c4), ("p5", c5)]))
        return list(out.values())


def retina_head(c: int, na: int, no: int, n_convs: int = 2) -> nn.Sequential:
    """One level's head (not shared): n_convs x Conv3x3-BN-SiLU then a 1x1 conv to na*no channels."""
    layers: list[nn.Module] = [Conv(c, c, 3) for _ in range(n_convs)]
    layers.append(nn.Conv2d(c, na * no, 1))
    return nn.Sequential(*layers)


def load_backbone_weights(body: RetinaBody, path: str | Path) -> None:
    """Load a torchvision ResNet state_dict saved with ``torch.save(resnetXX().state_dict())``.

    The file is read with ``weights_only=True``; ``fc.*`` keys are ignored; a missing file, a file
    that is not a state_dict, or keys/shapes that do not match the backbone raise CheckpointError.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: backbone weights file not found; pass a torchvision ResNet state_dict saved with torch.save")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"{p}: cannot read backbone weights ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{p}: not a ResNet state_dict (expected a dict of tensors from model.state_dict())")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.removeprefix("module.").startswith("fc.")}
    try:
        body.backbone.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{p}: weights do not match the {body.arch} backbone of this variant "
            f"(use resnet18 weights for retina-r18, resnet50 for retina-r50): {' '.join(first[:3])[:300]}"
        ) from e
