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


# torchvision's ImageNet weights expect RGB 0-1 input normalised with these (per channel).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RetinaBody(nn.Module):
    """ResNet C3/C4/C5 (strides 8/16/32) -> FPN P3-P5 with ``out_channels`` each.

    forward: (B, 3, H, W) RGB 0-1, H, W multiples of 32 -> [P3 (B, C, H/8, W/8), P4, P5]. The ImageNet
    normalisation torchvision backbones were trained with is applied first, inside the model (buffers
    ``input_mean``/``input_std`` in the state_dict), so exported models need no extra preprocessing.
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
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
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


def is_resnet_state_dict(obj: object) -> bool:
    """True for a torchvision ResNet ``state_dict()`` (optionally under 'state_dict', keys optionally 'module.')."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return False
    keys = {str(k).removeprefix("module.") for k in obj}
    return {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer4.0.conv1.weight"} <= keys


def load_backbone_state(body: RetinaBody, sd: object, source: str) -> int:
    """Load a torchvision ResNet state_dict (already read) into ``body.backbone``; returns tensors loaded.

    ``fc.*`` keys are ignored; keys/shapes that do not match raise CheckpointError naming ``source``.
    """
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source}: not a ResNet state_dict (expected a dict of tensors from model.state_dict())")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.removeprefix("module.").startswith("fc.")}
    try:
        body.backbone.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{source}: weights do not match the {body.arch} backbone of this variant "
            f"(use resnet18 weights for retina-r18, resnet50 for retina-r50): {' '.join(first[:3])[:300]}"
        ) from e
    return len(sd)


def load_backbone_weights(body: RetinaBody, path: str | Path) -> int:
    """Load a torchvision ResNet state_dict file saved with ``torch.save(resnetXX().state_dict())``.

    The file is read with ``weights_only=True``; a missing file, a file that is not a state_dict, or
    keys/shapes that do not match the backbone raise CheckpointError. Returns the tensors loaded.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: backbone weights file not found; pass a torchvision ResNet state_dict saved with torch.save")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"{p}: cannot read backbone weights ({type(e).__name__}: {e})") from e
    return load_backbone_state(body, sd, str(p))
