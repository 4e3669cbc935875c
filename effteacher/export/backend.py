"""The Backend base class: the interface every runtime (PyTorch, ONNX, TorchScript, TensorRT) implements.

Its own module so that ``export.runtime`` (which opens any format) and ``export.tensorrt`` (one
format) both build on it without importing each other.
"""

from __future__ import annotations

import torch

from effteacher.errors import ExportError


class Backend:
    """Runs a detector: ``__call__(x float (B, 3, H, W) 0-1) -> Tensor``.

    The output is decoded predictions (B, A, 5+nc) [cx, cy, w, h, obj, cls...] in input pixels,
    or, when ``has_nms``, (B, max_det, 6) [x1, y1, x2, y2, score, cls] padded with zero rows.
    Attributes: ``names`` (list[str]), ``imgsz`` ((h, w) the model was made for), ``stride`` (int),
    ``fixed_batch`` (int | None: the model only accepts this batch size), ``fixed_shape``
    ((h, w) | None: the model only accepts this input size), ``has_nms``, ``device``, ``format``.
    """

    format = "base"

    def __init__(self, names: list[str], imgsz: tuple[int, int], stride: int, device: torch.device,
                 fixed_batch: int | None = None, fixed_shape: tuple[int, int] | None = None,
                 has_nms: bool = False) -> None:
        self.names = [str(n) for n in names]
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.stride = int(stride)
        self.device = torch.device(device)
        self.fixed_batch = fixed_batch
        self.fixed_shape = fixed_shape
        self.has_nms = has_nms

    @property
    def nc(self) -> int:
        return len(self.names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) float 0-1 -> (B, A, 5+nc) or (B, max_det, 6); static batches padded/split."""
        if self.fixed_shape is not None and tuple(x.shape[2:]) != tuple(self.fixed_shape):
            raise ExportError(
                f"this {self.format} model only accepts input {tuple(self.fixed_shape)}, got {tuple(x.shape[2:])}; "
                "letterbox to that size or re-export with --dynamic"
            )
        fb = self.fixed_batch
        if fb is None or x.shape[0] == fb:
            return self.forward(x)
        outs = []
        for chunk in x.split(fb):
            n = chunk.shape[0]
            if n < fb:
                chunk = torch.cat([chunk, chunk.new_zeros((fb - n, *chunk.shape[1:]))])
            outs.append(self.forward(chunk)[:n])
        return torch.cat(outs)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(nc={self.nc}, imgsz={self.imgsz}, stride={self.stride}, "
                f"fixed_batch={self.fixed_batch}, fixed_shape={self.fixed_shape}, has_nms={self.has_nms})")
