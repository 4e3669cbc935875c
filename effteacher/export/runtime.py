"""One inference interface over every weights format: .pt, .onnx, .torchscript, OpenVINO folders and .engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from effteacher.errors import CheckpointError, ExportError
from effteacher.export.backend import Backend
from effteacher.export.onnx import onnx_session, read_onnx_metadata
from effteacher.export.openvino import OpenVINOBackend, is_openvino
from effteacher.export.torchscript import load_torchscript
from effteacher.models.blocks import fuse_conv_bn
from effteacher.models.checkpoint import first_line, load_checkpoint, model_from_checkpoint
from effteacher.models.head import DeployModel
from effteacher.utils.dist import select_device

SUFFIXES = (".pt", ".onnx", ".torchscript", ".engine")


class TorchBackend(Backend):
    """An effteacher .pt checkpoint (or a Detector already in memory) run as DeployModel."""

    format = "pytorch"

    def __init__(self, model: torch.nn.Module, names: list[str], imgsz: int | tuple[int, int],
                 device: torch.device, half: bool = False, fuse: bool = False) -> None:
        """fuse: fold BatchNorm into the convolutions (``models.blocks.fuse_conv_bn``), in place: only for a model
        the backend owns (one it loaded from a file), never one a caller trains on."""
        size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
        stride = int(model.stride.max()) if hasattr(model, "stride") else 32
        super().__init__(names, size, stride, device)
        self.model = DeployModel(model).to(self.device).eval()
        if fuse:
            fuse_conv_bn(self.model)
        self.half = bool(half and self.device.type == "cuda")
        if self.half:
            self.model.half()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float16 if self.half else torch.float32)
        return self.model(x).float()


class OnnxBackend(Backend):
    """An .onnx file in onnxruntime (CUDA provider on a CUDA device when installed)."""

    format = "onnx"

    def __init__(self, path: Path, device: torch.device) -> None:
        try:
            meta = read_onnx_metadata(path)
            self.session = onnx_session(path, device)
        except Exception as e:  # noqa: BLE001 - onnx/onnxruntime raise many types for bad files
            raise CheckpointError(f"{path}: cannot load ONNX model ({first_line(e)}); "
                                  "re-export it with `effteacher export --format onnx`") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.input_half = "float16" in inp.type
        batch, _, h, w = inp.shape
        fixed_shape = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        names, imgsz, stride, has_nms = _parse_meta(meta, path, fixed_shape)
        super().__init__(names, imgsz, stride, device, fixed_batch=batch if isinstance(batch, int) else None,
                         fixed_shape=fixed_shape, has_nms=has_nms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float16 if self.input_half else torch.float32).numpy()
        out = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(out).float().to(x.device)


class TorchScriptBackend(Backend):
    """A .torchscript file (torch.jit) with metadata in its ``config.json`` extra file."""

    format = "torchscript"

    def __init__(self, path: Path, device: torch.device) -> None:
        try:
            self.model, meta = load_torchscript(path, device)
        except Exception as e:  # noqa: BLE001 - torch.jit raises RuntimeError/ValueError for bad files
            raise CheckpointError(f"{path}: cannot load TorchScript model ({first_line(e)}); "
                                  "re-export it with `effteacher export --format torchscript`") from None
        dynamic = bool(int(meta.get("dynamic", 0)))
        imgsz = meta.get("imgsz")
        fixed_shape = None if dynamic or imgsz is None else _hw(imgsz)
        names, size, stride, has_nms = _parse_meta(meta, path, fixed_shape)
        fixed_batch = None if dynamic or "batch" not in meta else int(meta["batch"])
        super().__init__(names, size, stride, device, fixed_batch=fixed_batch, fixed_shape=fixed_shape,
                         has_nms=has_nms)
        p = next(iter(self.model.parameters()), None)
        self.dtype = p.dtype if p is not None else torch.float32

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device, self.dtype)).float()


def _hw(imgsz: Any) -> tuple[int, int]:
    if isinstance(imgsz, (int, float)):
        return int(imgsz), int(imgsz)
    return int(imgsz[0]), int(imgsz[1])


def _parse_meta(meta: dict[str, Any], path: Path, fixed_shape: tuple[int, int] | None
                ) -> tuple[list[str], tuple[int, int], int, bool]:
    """names, imgsz, stride, has_nms from export metadata (CheckpointError when names are missing)."""
    names = meta.get("names")
    if isinstance(names, str):
        names = json.loads(names)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not names:
        raise CheckpointError(f"{path}: exported model has no class names in its metadata; "
                              "re-export it with `effteacher export` from an effteacher checkpoint")
    imgsz = meta.get("imgsz")
    if isinstance(imgsz, str):
        imgsz = json.loads(imgsz)
    size = _hw(imgsz) if imgsz is not None else (fixed_shape or (640, 640))
    return list(names), size, int(meta.get("stride", 32)), bool(int(meta.get("nms", 0)))


def load_backend(weights: str | Path, device: str | torch.device = "cpu", half: bool = False) -> Backend:
    """Open ``weights`` by its suffix (.pt, .onnx, .torchscript, .engine) or as an OpenVINO export (its
    ``*_openvino_model`` folder or .xml) on ``device``.

    Raises CheckpointError for a missing file or an unknown suffix, DeviceError for a bad device,
    ExportError when a TensorRT engine cannot run here.
    """
    dev = device if isinstance(device, torch.device) else select_device(str(device))
    path = Path(weights)
    suffix = path.suffix.lower()
    if is_openvino(path):
        if not path.exists():
            raise CheckpointError(f"{path}: OpenVINO model not found; check the path (e.g. "
                                  "runs/train/exp/weights/best_openvino_model)")
        return OpenVINOBackend(path, dev)
    if suffix not in SUFFIXES:
        raise CheckpointError(f"{path}: unknown weights format '{suffix or path.name}'; "
                              f"use one of {', '.join(SUFFIXES)} or an OpenVINO *_openvino_model folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found; check the path "
                              "(e.g. runs/train/exp/weights/best.pt or an exported .onnx)")
    if suffix == ".pt":
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt, dev)
        return TorchBackend(model, list(ckpt["model"]["names"]), int(ckpt["model"]["imgsz"]), dev, half=half,
                            fuse=True)
    if suffix == ".onnx":
        return OnnxBackend(path, dev)
    if suffix == ".torchscript":
        return TorchScriptBackend(path, dev)
    try:
        from effteacher.export.tensorrt import TensorRTBackend
    except ImportError as e:
        raise ExportError(f"{path}: cannot run a TensorRT engine here ({e}); it needs a CUDA GPU and the "
                          "tensorrt package, or use the .onnx export instead") from None
    return TensorRTBackend(path, dev)


def as_backend(model: Any, names: list[str], imgsz: int | tuple[int, int], device: torch.device | None = None
               ) -> Backend:
    """A Backend as is, or an in-memory Detector (nn.Module) wrapped without copying its weights."""
    if isinstance(model, Backend):
        return model
    if isinstance(model, torch.nn.Module):
        dev = device or next(model.parameters()).device
        return TorchBackend(model, names, imgsz, dev)
    raise TypeError(f"expected a Detector or a Backend, got {type(model).__name__}")
