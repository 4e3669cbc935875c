"""The Detector module shared by both families (body + unshared per-level heads), the pure decode and DeployModel."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def init_head_biases(conv: nn.Conv2d, na: int, nc: int, stride: float, imgsz: int = 640) -> None:
    """YOLOv5 prior on the last 1x1 conv: obj ~ 8 objects per 640 image, cls ~ 0.6/nc.

    Bias layout (na * (5 + nc),), anchor-major. Modifies ``conv.bias`` in place.
    """
    if conv.bias is None:
        raise ValueError("head conv needs a bias")
    with torch.no_grad():
        b = conv.bias.view(na, -1)
        b[:, 4] += math.log(8 / (imgsz / stride) ** 2)
        if nc > 0:
            b[:, 5 : 5 + nc] += math.log(0.6 / (nc - 0.99))


class Detector(nn.Module):
    """A dense one-stage detector: ``body`` gives 3 feature maps, ``head[i]`` maps level i to na*(5+nc) channels.

    Buffers ``stride`` (nl,) and ``anchors`` (nl, na, 2) in input pixels travel with the state_dict.
    """

    def __init__(
        self,
        variant: str,
        nc: int,
        body: nn.Module,
        head: nn.ModuleList,
        feature_channels: list[int],
        anchors: torch.Tensor,
        strides: tuple[float, ...] = (8.0, 16.0, 32.0),
    ) -> None:
        super().__init__()
        self.variant = variant
        self.nc = nc
        self.no = 5 + nc
        self.nl, self.na = int(anchors.shape[0]), int(anchors.shape[1])
        self.body = body
        self.head = head
        self.feature_channels = list(feature_channels)
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))
        self.register_buffer("anchors", anchors.detach().clone().float())

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x (B, 3, H, W) float 0-1 -> raw logits per level (B, na, H_i, W_i, 5+nc) [, neck feats (B, C_i, H_i, W_i)]."""
        feats = self.body(x)
        raw = []
        for f, h in zip(feats, self.head):
            y = h(f)
            b, _, ny, nx = y.shape
            raw.append(y.view(b, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return (raw, feats) if return_features else raw

    def meta(self) -> dict[str, Any]:
        """Plain-python description to rebuild the model: variant, nc, anchors (nl, na, 2) pixels, stride."""
        return {
            "variant": self.variant,
            "nc": self.nc,
            "anchors": self.anchors.detach().cpu().tolist(),
            "stride": self.stride.detach().cpu().tolist(),
        }


def decode(raw: list[torch.Tensor], anchors: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """Raw per-level logits -> (B, A, 5+nc): cx, cy, w, h in input pixels, then obj and class probabilities.

    raw[i]: (B, na, H_i, W_i, 5+nc); anchors: (nl, na, 2) pixels; stride: (nl,). A = sum na*H_i*W_i,
    ordered level, anchor, row, column. xy = (2*sig - 0.5 + grid) * stride, wh = (2*sig)^2 * anchor.
    The grid is built from each tensor's shape, so dynamic H/W export to ONNX.
    """
    out = []
    for i, r in enumerate(raw):
        b, na, ny, nx, no = r.shape
        y = r.sigmoid()
        # the grid is made in fp32 and cast: ONNX Range has no fp16, and the TorchScript exporter fails on it
        f32 = dict(device=r.device, dtype=torch.float32)
        gy = torch.arange(ny, **f32).to(y.dtype).view(1, 1, ny, 1).expand(1, 1, ny, nx)
        gx = torch.arange(nx, **f32).to(y.dtype).view(1, 1, 1, nx).expand(1, 1, ny, nx)
        grid = torch.stack((gx, gy), -1)  # (1, 1, ny, nx, 2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * stride[i].to(y.dtype)
        wh = (y[..., 2:4] * 2) ** 2 * anchors[i].to(y.dtype).view(1, na, 1, 1, 2)
        out.append(torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, no))
    return torch.cat(out, 1)


class DeployModel(nn.Module):
    """What gets exported: image (B, 3, H, W) 0-1 -> decoded (B, A, 5+nc) via :func:`decode`.

    Construction puts the wrapper (and so the detector) in eval mode: exporters restore the
    wrapper's own mode afterwards, and a train-mode wrapper would bring BatchNorm back to batch stats.
    """

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.detector(x)
        return decode(raw, self.detector.anchors, self.detector.stride)
