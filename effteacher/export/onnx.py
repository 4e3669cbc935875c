"""ONNX export of a deploy model (optionally with in-graph NMS), its metadata, and reading it back."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effteacher.errors import ExportError
from effteacher.export.nms import DeployWithNMS
from effteacher.utils.console import info, warn

INPUT_NAME = "images"
OUTPUT_NAME = "output0"
JSON_KEYS = ("names", "imgsz")  # metadata values stored as JSON text (the others as plain strings)
INT_KEYS = ("stride", "nc", "nms", "batch", "dynamic")


def metadata_to_props(metadata: dict[str, Any]) -> dict[str, str]:
    """Plain metadata -> ONNX metadata_props strings: lists as JSON, booleans as "0"/"1", the rest str()."""
    out = {}
    for k, v in metadata.items():
        if isinstance(v, bool):
            out[k] = "1" if v else "0"
        elif isinstance(v, (list, tuple, dict)):
            out[k] = json.dumps(v)
        else:
            out[k] = str(v)
    return out


def props_to_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`metadata_to_props` for the known keys (names, imgsz -> lists; stride, nc, nms, ... -> int)."""
    out: dict[str, Any] = dict(props)
    for k in JSON_KEYS:
        if k in out:
            out[k] = json.loads(out[k])
    for k in INT_KEYS:
        if k in out:
            out[k] = int(out[k])
    return out


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata dict written by :func:`export_onnx` (names list, imgsz [h, w], stride, variant, nc, nms, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return props_to_metadata({p.key: p.value for p in model.metadata_props})


def _simplify(path: Path) -> str:
    """Simplify the ONNX file in place with onnxslim (or onnxsim); returns a one-line note of what happened."""
    import onnx

    tool = next((t for t in ("onnxslim", "onnxsim") if importlib.util.find_spec(t) is not None), None)
    if tool is None:
        return "--simplify skipped: neither onnxslim nor onnxsim is installed (pip install onnxslim)"
    try:
        if tool == "onnxslim":
            import onnxslim  # type: ignore[import-not-found]

            model = onnxslim.slim(onnx.load(str(path)))
        else:
            import onnxsim  # type: ignore[import-not-found]

            model, ok = onnxsim.simplify(onnx.load(str(path)))
            if not ok:
                return "--simplify: onnxsim could not validate the simplified model; kept the original"
    except Exception as e:  # noqa: BLE001 - a simplifier failure must not lose the export
        return f"--simplify: {tool} failed ({str(e).splitlines()[0][:120]}); kept the original"
    onnx.save(model, str(path))
    return f"simplified with {tool}"


def export_onnx(
    model: nn.Module,
    path: str | Path,
    imgsz: int | tuple[int, int],
    batch: int = 1,
    dynamic: bool = False,
    opset: int = 17,
    nms: bool = False,
    max_det: int = 100,
    iou: float = 0.45,
    conf: float = 0.25,
    simplify: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` (x (B, 3, H, W) 0-1 -> decoded (B, A, 5+nc)) to ONNX.

    Input ``images`` (batch, 3, h, w) float (dtype/device of the model's parameters); output
    ``output0`` (batch, A, 5+nc), or (batch, max_det, 6) ``x1 y1 x2 y2 score cls`` with ``nms``.
    ``dynamic`` makes batch, height and width (and A) symbolic. ``metadata`` goes to
    metadata_props (see :func:`metadata_to_props`). The file is checked with onnx.checker.
    ``simplify`` without onnxslim/onnxsim installed prints a warning and keeps the graph as is.
    Uses the TorchScript-based exporter (``dynamo=False``, still in torch 2.x): it keeps opset 17
    and maps the NMS to one ONNX NonMaxSuppression node.
    """
    import onnx

    path = Path(path)
    if opset < 11:
        raise ExportError(f"--opset {opset} is too old; use 11 or newer (default 17)")
    net = DeployWithNMS(model, max_det, iou, conf).eval() if nms else model.eval()
    p = next(model.parameters())
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    x = torch.zeros(batch, 3, h, w, dtype=p.dtype, device=p.device)
    axes = None
    if dynamic:
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        axes[OUTPUT_NAME] = {0: "batch"} if nms else {0: "batch", 1: "anchors"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo; it is the one that keeps opset 17 clean
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net, (x,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True,
            )
        except Exception as e:  # noqa: BLE001 - any exporter failure becomes one clear line
            raise ExportError(f"ONNX export to {path} failed at opset {opset}: {str(e).splitlines()[0][:200]}") from e
    if simplify:
        note = _simplify(path)
        (info if note.startswith("simplified") else warn)(note)
    proto = onnx.load(str(path))
    for k, v in metadata_to_props(metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path}: exported ONNX fails onnx.checker: {str(e).splitlines()[0][:200]}") from None
    onnx.save(proto, str(path))
    return path


def onnx_session(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """An onnxruntime InferenceSession for ``path`` (CUDA provider first when the device is CUDA)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def onnx_runner(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """A function x (B, 3, H, W) tensor -> output tensor on x's device, running the ONNX file in onnxruntime."""
    session = onnx_session(path, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    return run
