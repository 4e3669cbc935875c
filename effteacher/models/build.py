"""The variant table and ``build_model``: every detector (YOLOv5 n-x, retina-r18/r50) is built here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from effteacher.errors import ConfigError
from effteacher.models.head import Detector, init_head_biases
from effteacher.models.retina import RetinaBody, load_backbone_weights, retina_head
from effteacher.models.yolo import YOLOBody

# Default anchors, pixels at 640 (docs/method.md section 2): P3, P4, P5, 3 (w, h) pairs each.
DEFAULT_ANCHORS: tuple[tuple[float, ...], ...] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)
STRIDES = (8.0, 16.0, 32.0)


@dataclass(frozen=True)
class Variant:
    """One row of the variant table."""

    family: str  # "yolo" | "retina"
    depth: float = 1.0  # YOLO depth multiple
    width: float = 1.0  # YOLO width multiple
    backbone: str = ""  # retina: torchvision resnet name
    fpn_channels: int = 256  # retina: FPN / head channels
    layout: str = "v6"  # YOLO: "v6" (YOLOv5 release v6.0+) or "v5" (release v4.0-v5.0 backbone, see YOLOBody)


VARIANTS: dict[str, Variant] = {
    "n": Variant("yolo", depth=0.33, width=0.25),
    "s": Variant("yolo", depth=0.33, width=0.50),
    "m": Variant("yolo", depth=0.67, width=0.75),
    "l": Variant("yolo", depth=1.00, width=1.00),
    "x": Variant("yolo", depth=1.33, width=1.25),
    # The YOLOv5 release v5.0 backbone, for weights imported from v4.0/v5.0 files (there was no n then).
    "s-v5.0": Variant("yolo", depth=0.33, width=0.50, layout="v5"),
    "m-v5.0": Variant("yolo", depth=0.67, width=0.75, layout="v5"),
    "l-v5.0": Variant("yolo", depth=1.00, width=1.00, layout="v5"),
    "x-v5.0": Variant("yolo", depth=1.33, width=1.25, layout="v5"),
    "retina-r18": Variant("retina", backbone="resnet18"),
    "retina-r50": Variant("retina", backbone="resnet50"),
}


def parse_anchors(anchors: Any, nl: int = 3, na: int = 3) -> torch.Tensor:
    """Anchors as YOLOv5 yaml rows ``[[w,h,w,h,w,h], ...]`` or nested (nl, na, 2) -> tensor (nl, na, 2) pixels."""
    try:
        t = torch.as_tensor(anchors, dtype=torch.float32).reshape(nl, na, 2)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"anchors must hold {nl} levels x {na} (w, h) pairs in pixels, got {anchors!r}") from e
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ConfigError(f"anchors must be positive pixel sizes, got {t.tolist()}")
    return t


def build_model(name: str, nc: int, anchors: Any = None, backbone_weights: str | None = None) -> Detector:
    """Build a detector from :data:`VARIANTS`.

    name: a key of VARIANTS; nc: number of classes (>= 1); anchors: optional pixels (see
    :func:`parse_anchors`), default the YOLOv5 anchors; backbone_weights: retina only, a local
    torchvision ResNet state_dict file. Heads get the YOLOv5 obj/cls bias prior.
    """
    if name not in VARIANTS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(VARIANTS)}")
    if int(nc) < 1:
        raise ConfigError(f"nc must be >= 1, got {nc}")
    v = VARIANTS[name]
    anc = parse_anchors(DEFAULT_ANCHORS if anchors is None else anchors)
    nl, na = anc.shape[:2]
    no = 5 + nc
    if v.family == "yolo":
        if backbone_weights is not None:
            raise ConfigError(f"backbone_weights is only for retina variants, not '{name}'")
        body: nn.Module = YOLOBody(v.depth, v.width, v.layout)
        chans = list(body.out_channels)
        head = nn.ModuleList(nn.Conv2d(c, na * no, 1) for c in chans)
    else:
        body = RetinaBody(v.backbone, v.fpn_channels)
        chans = list(body.out_channels)
        head = nn.ModuleList(retina_head(c, na, no) for c in chans)
    for h, s in zip(head, STRIDES):
        last = h if isinstance(h, nn.Conv2d) else h[-1]
        init_head_biases(last, na, nc, s)
    model = Detector(name, nc, body, head, chans, anc, STRIDES)
    if backbone_weights is not None:
        load_backbone_weights(model.body, backbone_weights)
    return model


__all__ = ["VARIANTS", "Variant", "Detector", "build_model", "parse_anchors", "DEFAULT_ANCHORS", "STRIDES"]
