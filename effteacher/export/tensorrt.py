"""TensorRT engines: build one from an exported ONNX file and run it (TensorRT 10 Python API, CUDA only)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from effteacher.errors import DeviceError, ExportError
from effteacher.export.backend import Backend

# File layout: 4-byte little-endian length, that many bytes of UTF-8 JSON metadata, then the
# serialized engine. TensorRT engines have no metadata field, and a sidecar file gets lost.
_HEADER = struct.Struct("<I")


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or one clear ExportError saying how to get it."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise ExportError(
            "--format engine needs the tensorrt Python package (pip install tensorrt) on a machine with a "
            "CUDA GPU; export --format onnx instead to run on CPU"
        ) from None
    return trt


def require_cuda(device: torch.device) -> None:
    """Raise ExportError unless ``device`` is an available CUDA device (TensorRT runs on GPUs only)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ExportError(
            "--format engine needs a CUDA GPU (TensorRT runs on NVIDIA GPUs only); use --device 0 on a GPU "
            "machine, or export --format onnx to run on CPU"
        )


def write_engine_file(path: Path, engine_bytes: bytes, metadata: dict[str, Any]) -> None:
    """Write ``[len][metadata JSON][engine]`` to ``path`` (see module comment)."""
    meta = json.dumps(metadata).encode()
    with open(path, "wb") as f:
        f.write(_HEADER.pack(len(meta)))
        f.write(meta)
        f.write(engine_bytes)


def read_engine_file(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`write_engine_file`: (metadata dict, serialized engine bytes)."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise ExportError(f"{path}: truncated engine file; export it again with --format engine")
    (n,) = _HEADER.unpack_from(data)
    try:
        meta = json.loads(data[_HEADER.size : _HEADER.size + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ExportError(f"{path}: not an effteacher engine (no metadata header); export it with effteacher") from None
    return meta, data[_HEADER.size + n :]


def export_engine(
    onnx_path: str | Path,
    path: str | Path,
    half: bool = False,
    dynamic: bool = False,
    imgsz: tuple[int, int] = (640, 640),
    batch: int = 1,
    workspace: float = 4.0,
    metadata: dict[str, Any] | None = None,
    min_size: int = 32,
) -> Path:
    """Build a TensorRT engine from ``onnx_path`` (fp32 ONNX) and write it with its metadata to ``path``.

    half: FP16 kernels allowed (BuilderFlag.FP16). dynamic: one optimisation profile for the
    ``images`` input, min (1, 3, min_size, min_size), opt (batch, 3, h, w), max (max(batch, 16), 3, h, w);
    otherwise the ONNX static shape is used. workspace: GiB for the builder's workspace pool.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace * (1 << 30)))
    if half:
        config.set_flag(trt.BuilderFlag.FP16)
    if dynamic:
        h, w = imgsz
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, (1, 3, min_size, min_size), (batch, 3, h, w), (max(batch, 16), 3, h, w))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    path = Path(path)
    write_engine_file(path, bytes(serialized), dict(metadata or {}))
    return path


def _dtypes() -> dict[str, torch.dtype]:
    """TensorRT DataType names -> torch dtypes."""
    return {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
            "BOOL": torch.bool, "INT8": torch.int8}


class TensorRTBackend(Backend):
    """Runs an engine written by :func:`export_engine` on CUDA, as a ``runtime.Backend``.

    ``backend(x (B, 3, H, W) 0-1) -> output0`` ((B, A, 5+nc), or (B, max_det, 6) with in-graph NMS).
    names/imgsz/stride/has_nms come from the engine file's metadata; fixed_batch/fixed_shape from
    the engine's input shape (-1 = dynamic). Inputs are cast to the engine's input dtype.
    """

    format = "engine"

    def __init__(self, path: str | Path, device: str | torch.device = "cuda:0") -> None:
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            raise DeviceError(f"{path}: a TensorRT engine runs on a CUDA GPU only; use --device 0 or an .onnx file")
        trt = import_tensorrt()
        meta, engine_bytes = read_engine_file(path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(device):
            self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise ExportError(
                    f"{path}: TensorRT cannot load this engine (built with another TensorRT version or GPU?); "
                    "export it again on this machine"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.metadata = meta
        self.input_dtype = _dtypes()[self.engine.get_tensor_dtype(self.inputs[0]).name]
        b, _, h, w = tuple(self.engine.get_tensor_shape(self.inputs[0]))
        imgsz = meta.get("imgsz") or [h, w]
        super().__init__(
            list(meta.get("names") or [str(i) for i in range(int(meta.get("nc", 0)))]),
            (int(imgsz[0]), int(imgsz[1])),
            int(meta.get("stride", 32)),
            device,
            fixed_batch=int(b) if b > 0 else None,
            fixed_shape=(int(h), int(w)) if h > 0 and w > 0 else None,
            has_nms=bool(int(meta.get("nms", 0))),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) 0-1 -> the engine's first output as float32 on the backend's device."""
        x = x.to(self.device, self.input_dtype).contiguous()
        self.context.set_input_shape(self.inputs[0], tuple(x.shape))
        self.context.set_tensor_address(self.inputs[0], x.data_ptr())
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _dtypes()[self.engine.get_tensor_dtype(name).name]
            out = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed; see the TensorRT log above")
        stream.synchronize()
        return outs[0].float()
