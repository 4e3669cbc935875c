"""YOLOv5 (v6+) CSPDarknet backbone + PAN neck, scaled by depth/width multiples; returns P3-P5 features."""

from __future__ import annotations

import math

import torch
from torch import nn

from effteacher.models.blocks import C3, SPPF, Concat, Conv


def scale_depth(n: int, gd: float) -> int:
    """Number of repeats of a block after the depth multiple (YOLOv5 rounding, at least 1)."""
    return max(round(n * gd), 1) if n > 1 else n


def scale_width(c: int, gw: float, divisor: int = 8) -> int:
    """Channels after the width multiple, rounded up to a multiple of ``divisor``."""
    return int(math.ceil(c * gw / divisor) * divisor)


LAYOUTS = ("v6", "v5")


class YOLOBody(nn.Module):
    """CSPDarknet + PAN as a flat list of 24 layers in YOLOv5's order (layer i = ultralytics model.i).

    layout "v6": YOLOv5 release v6.0-v7.0 (6x6 stem conv, C3 x 3/6/9/3, SPPF last in the backbone);
    "v5": the release v4.0-v5.0 backbone (C3 x 3/9/9, SPP before a shortcut-free C3), with its Focus
    stem written as the equivalent 6x6 stride-2 conv and SPP(5, 9, 13) as the equivalent SPPF(5).
    forward: (B, 3, H, W) with H, W multiples of 32 -> [P3 (B, C3, H/8, W/8), P4 (H/16), P5 (H/32)].
    """

    def __init__(self, depth: float, width: float, layout: str = "v6") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown YOLO layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
        d = lambda n: scale_depth(n, depth)  # noqa: E731
        w = lambda c: scale_width(c, width)  # noqa: E731
        v5 = layout == "v5"
        # (from, module); "from" = -1 (previous layer) or a list of earlier layer indices.
        spec: list[tuple[int | list[int], nn.Module]] = [
            (-1, Conv(3, w(64), 6, 2, 2)),  # 0  P1/2
            (-1, Conv(w(64), w(128), 3, 2)),  # 1  P2/4
            (-1, C3(w(128), w(128), d(3))),  # 2
            (-1, Conv(w(128), w(256), 3, 2)),  # 3  P3/8
            (-1, C3(w(256), w(256), d(9 if v5 else 6))),  # 4
            (-1, Conv(w(256), w(512), 3, 2)),  # 5  P4/16
            (-1, C3(w(512), w(512), d(9))),  # 6
            (-1, Conv(w(512), w(1024), 3, 2)),  # 7  P5/32
            *(
                [(-1, SPPF(w(1024), w(1024), 5)), (-1, C3(w(1024), w(1024), d(3), shortcut=False))]  # 8, 9 (v5)
                if v5 else [(-1, C3(w(1024), w(1024), d(3))), (-1, SPPF(w(1024), w(1024), 5))]  # 8, 9
            ),
            # PAN neck: top-down
            (-1, Conv(w(1024), w(512), 1, 1)),  # 10
            (-1, nn.Upsample(scale_factor=2.0, mode="nearest")),  # 11
            ([-1, 6], Concat()),  # 12
            (-1, C3(w(1024), w(512), d(3), shortcut=False)),  # 13
            (-1, Conv(w(512), w(256), 1, 1)),  # 14
            (-1, nn.Upsample(scale_factor=2.0, mode="nearest")),  # 15
            ([-1, 4], Concat()),  # 16
            (-1, C3(w(512), w(256), d(3), shortcut=False)),  # 17 out P3
            # bottom-up
            (-1, Conv(w(256), w(256), 3, 2)),  # 18
            ([-1, 14], Concat()),  # 19
            (-1, C3(w(512), w(512), d(3), shortcut=False)),  # 20 out P4
            (-1, Conv(w(512), w(512), 3, 2)),  # 21
            ([-1, 10], Concat()),  # 22
            (-1, C3(w(1024), w(1024), d(3), shortcut=False)),  # 23 out P5
        ]
        self.sources = [f for f, _ in spec]
        self.layers = nn.ModuleList(m for _, m in spec)
        self.out_indices = (17, 20, 23)
        self.out_channels = [w(256), w(512), w(1024)]
        self._keep = {i for f in self.sources if isinstance(f, list) for i in f if i >= 0} | set(self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        for i, (src, layer) in enumerate(zip(self.sources, self.layers)):
            if isinstance(src, list):
                x = layer([x if j == -1 else saved[j] for j in src])
            else:
                x = layer(x)
            if i in self._keep:
                saved[i] = x
        return [saved[i] for i in self.out_indices]
