"""`effteacher export`: load a checkpoint's deploy model, export it, check it against PyTorch, report."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from effteacher.config.commands import ExportOptions, with_overrides
from effteacher.errors import ExportError
from effteacher.export.nms import DeployWithNMS
from effteacher.export.onnx import export_onnx, onnx_runner
from effteacher.export.openvino import (OpenVINOBackend, export_openvino, import_openvino, is_openvino,
                                        openvino_folder)
from effteacher.export.tensorrt import TensorRTBackend, export_engine, import_tensorrt, require_cuda
from effteacher.export.torchscript import export_torchscript, load_torchscript
from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint
from effteacher.models.head import DeployModel
from effteacher.utils.console import info, warn
from effteacher.utils.dist import select_device
from effteacher.version import __version__

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "openvino": "_openvino_model", "engine": ".engine"}
NMS_TOP = 10  # rows of each image compared for --nms exports (the highest-scoring detections)


def output_diffs(ref: Tensor, out: Tensor, nms: bool = False, top: int = NMS_TOP) -> tuple[float, float]:
    """Max |diff| of (boxes, scores) between two outputs of the same export.

    Raw outputs (B, A, 5+nc): boxes = columns 0-3 (pixels), scores = columns 4+ (obj and class
    probabilities), row by row. NMS outputs (B, max_det, 6) sorted by score: the first ``top`` rows
    of each image, compared as sets so that equal scores in another order do not count: scores
    are compared sorted, and each box against the nearest box of the same class among the other
    output's rows (inf when there is none). Shapes must match.
    """
    if ref.shape != out.shape:
        raise ExportError(f"exported model output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}")
    ref, out = ref.detach().float().cpu(), out.detach().float().cpu()
    if not nms:
        return _maxabs(ref[..., :4] - out[..., :4]), _maxabs(ref[..., 4:] - out[..., 4:])
    ref, out = ref[:, :top], out[:, :top]
    scores = _maxabs(ref[..., 4].sort(-1)[0] - out[..., 4].sort(-1)[0])
    dist = (ref[:, :, None, :4] - out[:, None, :, :4]).abs().amax(-1)  # (B, top, top)
    same_cls = ref[:, :, None, 5] == out[:, None, :, 5]
    nearest = dist.masked_fill(~same_cls, math.inf).amin(-1)  # (B, top)
    return (float(nearest.max()) if nearest.numel() else 0.0), scores


def tolerances(low_precision: bool, imgsz: tuple[int, int]) -> tuple[float, float]:
    """Parity tolerances (boxes in input pixels, scores 0-1).

    fp32: 1e-3 px and 1e-4. fp16 (and TensorRT engines, which may use TF32 kernels): fp16 spaces
    values 256-1024 by 0.25-0.5 px, so boxes get 0.5% of the image side and scores 2e-2.
    """
    if low_precision:
        return 5e-3 * max(imgsz), 2e-2
    return 1e-3, 1e-4


def _maxabs(t: Tensor) -> float:
    v = float(t.abs().max()) if t.numel() else 0.0
    return v if math.isfinite(v) else math.inf


def check_parity(
    torch_fn: Callable[[Tensor], Tensor],
    runtime_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    atol: float = 1e-3,
    score_atol: float = 1e-4,
    nms: bool = False,
    what: str = "export",
) -> tuple[float, float]:
    """Run ``x`` (B, 3, H, W) through PyTorch and the exported runtime; returns max |diff| (boxes, scores).

    Raises ExportError when boxes differ by more than ``atol`` pixels or scores by more than
    ``score_atol`` (or are not finite). ``nms``: outputs are (B, max_det, 6) detections, see
    :func:`output_diffs`.
    """
    with torch.inference_mode():
        ref = torch_fn(x)
    out = runtime_fn(x)
    box, score = output_diffs(ref, out, nms)
    if not (box <= atol and score <= score_atol):
        raise ExportError(
            f"{what} does not match PyTorch: max |diff| boxes {box:.3g} (tolerance {atol:g}), scores {score:.3g} "
            f"(tolerance {score_atol:g}); try another --opset, or report it with the checkpoint"
        )
    return box, score


def export_metadata(
    ckpt: dict[str, Any], imgsz: tuple[int, int], stride: int, nms: bool, batch: int = 1, dynamic: bool = False
) -> dict[str, Any]:
    """Plain metadata written into every export.

    names, imgsz [h, w], stride (max), variant, nc, nms (0/1), effteacher_version, plus batch and
    dynamic (0/1) so runtimes know whether the input shape is fixed.
    """
    meta = ckpt["model"]
    return {
        "names": list(meta["names"]),
        "imgsz": [int(imgsz[0]), int(imgsz[1])],
        "stride": int(stride),
        "variant": str(meta["variant"]),
        "nc": int(meta["nc"]),
        "nms": int(bool(nms)),
        "effteacher_version": __version__,
        "batch": int(batch),
        "dynamic": int(bool(dynamic)),
    }


def _export_size(imgsz: int | None, ckpt: dict[str, Any], stride: int) -> tuple[int, int]:
    """The (h, w) to export at: ``imgsz`` or the checkpoint's, rounded up to a multiple of the stride."""
    size = int(imgsz if imgsz is not None else ckpt["model"].get("imgsz", 640))
    if size < 1:
        raise ExportError(f"--imgsz {size} must be positive")
    rounded = max(stride, math.ceil(size / stride) * stride)
    if rounded != size:
        warn(f"--imgsz {size} is not a multiple of the stride {stride}; exporting at {rounded}")
    return rounded, rounded


def _load_deploy_model(weights: Path, device: torch.device, half: bool) -> tuple[nn.Module, dict[str, Any], int]:
    """(DeployModel of the checkpoint's ``state_dict`` weights in eval mode, checkpoint dict, max stride)."""
    ckpt = load_checkpoint(weights)
    detector = model_from_checkpoint(ckpt, device)
    model = DeployModel(detector).to(device).eval()
    if half:
        model.half()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ckpt, int(detector.stride.max())


def _dynamic_probe(x: Tensor, stride: int) -> Tensor:
    """A second parity input for --dynamic exports: one more image and about half the height."""
    b, c, h, w = x.shape
    h2 = max(stride, (h // 2) // stride * stride)
    return torch.rand(b + 1, c, h2, w, generator=torch.Generator().manual_seed(1)).to(x)


def run_export(weights: str | Path, *, options: ExportOptions | None = None, **overrides: Any) -> Path:
    """Export the checkpoint ``weights`` next to it (best.pt -> best.onnx / best.torchscript /
    best_openvino_model/ / best.engine).

    Exports the deploy model only (the Detector in the checkpoint's ``state_dict``, decoded output),
    checks it against PyTorch on a random input (and on a second shape when ``dynamic``), prints the
    file, the parity line and the size, and returns the written path. ``iou``/``conf`` are the
    in-graph NMS thresholds (``nms``). Raises ExportError / CheckpointError / DeviceError with a
    one-line message for user mistakes.
    """
    o = with_overrides(ExportOptions, options, overrides)
    fmt = str(o.format).lower().lstrip(".")
    if fmt not in FORMATS:
        raise ExportError(f"--format {o.format!r} is not supported; choose one of: {', '.join(FORMATS)}")
    if o.batch < 1 or o.max_det < 1:
        raise ExportError(f"--batch ({o.batch}) and --max-det ({o.max_det}) must be >= 1")

    dev = select_device(o.device)
    if fmt == "openvino":
        import_openvino()
        if dev.type != "cpu":
            raise ExportError("--format openvino exports and checks on the CPU; use --device cpu")
    elif o.half and dev.type != "cuda":
        raise ExportError("--half needs a CUDA device; use --device 0 (or --format openvino for fp16 weights on CPU)")
    if o.nms and fmt == "torchscript":
        raise ExportError("--nms puts NMS in ONNX/TensorRT graphs only; drop --nms for --format torchscript")
    if fmt == "engine":
        require_cuda(dev)
        import_tensorrt()
    weights = Path(weights)
    if weights.suffix in (".onnx", ".torchscript", ".engine") or is_openvino(weights):
        raise ExportError(f"{weights}: is already an exported model; pass the .pt checkpoint it came from")

    # TensorRT and OpenVINO convert to FP16 themselves (a builder flag, fp16 weights), so their ONNX stays fp32
    model, ckpt, stride = _load_deploy_model(weights, dev, o.half and fmt not in ("engine", "openvino"))
    hw = _export_size(o.imgsz, ckpt, stride)
    meta = export_metadata(ckpt, hw, stride, o.nms, o.batch, o.dynamic)
    dtype = next(model.parameters()).dtype
    x = torch.rand(o.batch, 3, *hw, generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    probes = [x, _dynamic_probe(x, stride)] if o.dynamic else [x]
    torch_fn: Callable[[Tensor], Tensor] = model
    if o.nms:
        torch_fn = DeployWithNMS(model, o.max_det, o.iou, o.conf).eval()
    # TensorRT may run fp32 layers in TF32, so engines get the fp16 tolerances (as do fp16 OpenVINO weights)
    atol, score_atol = tolerances(dtype == torch.float16 or fmt == "engine" or (o.half and fmt == "openvino"), hw)

    info(f"Exporting {weights} ({meta['variant']}, nc={meta['nc']}) to {fmt} at {hw[0]}x{hw[1]}, batch {o.batch}"
         f"{', dynamic' if o.dynamic else ''}{', fp16' if o.half else ''}{', NMS in graph' if o.nms else ''}")
    if fmt == "torchscript":
        path = export_torchscript(model, weights.with_suffix(FORMATS[fmt]), hw, o.batch, meta)
        runtime_fn: Callable[[Tensor], Tensor] = load_torchscript(path, dev)[0]
        what = "TorchScript"
    elif fmt == "openvino":
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(model, Path(tmp) / f"{weights.stem}.onnx", hw, o.batch, o.dynamic, o.opset, o.nms,
                                    o.max_det, o.iou, o.conf, o.simplify, meta)
            path = export_openvino(onnx_path, openvino_folder(weights), o.half, meta)
        runtime_fn, what = OpenVINOBackend(path, dev), "OpenVINO"
    else:
        onnx_path = export_onnx(model, weights.with_suffix(".onnx"), hw, o.batch, o.dynamic, o.opset, o.nms, o.max_det,
                                o.iou, o.conf, o.simplify, meta)
        path, what = onnx_path, "onnxruntime"
        if fmt == "engine":
            engine_path = weights.with_suffix(FORMATS[fmt])
            path = export_engine(onnx_path, engine_path, o.half, o.dynamic, hw, o.batch, o.workspace, meta)
            runtime_fn, what = TensorRTBackend(path, dev), "TensorRT"
        else:
            runtime_fn = onnx_runner(path, dev)
    diffs = [check_parity(torch_fn, runtime_fn, p, atol, score_atol, o.nms, what) for p in probes]
    box, score = max(d[0] for d in diffs), max(d[1] for d in diffs)
    shapes = " and ".join("x".join(map(str, p.shape)) for p in probes)
    info(f"parity: max |diff| boxes {box:.2e}, scores {score:.2e} ({what} vs PyTorch, input {shapes})")
    size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
    info(f"Saved {path} ({size / 1e6:.1f} MB)")
    return path
