"""OpenVINO IR export (converted from the ONNX export) and running it on the CPU (the optional ``openvino`` package).

An export is a folder ``<stem>_openvino_model/`` holding ``<stem>.xml`` (graph), ``<stem>.bin`` (weights) and
``metadata.yaml`` (names, imgsz, stride, ...), the layout ultralytics uses.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from effteacher.errors import CheckpointError, DeviceError, ExportError
from effteacher.export.backend import Backend
from effteacher.utils.files import umask

METADATA_FILE = "metadata.yaml"
FOLDER_SUFFIX = "_openvino_model"
MISSING = "the openvino package is not installed (pip install openvino, or pip install 'effteacher[openvino]')"


def import_openvino() -> Any:
    """The ``openvino`` module, or one clear ExportError saying how to get it."""
    try:
        import openvino as ov  # type: ignore[import-not-found]
    except ImportError:
        raise ExportError(f"OpenVINO models need {MISSING}; or use --format onnx") from None
    return ov


def openvino_folder(weights: Path) -> Path:
    """Where the export of ``weights`` goes: best.pt -> best_openvino_model/ beside it."""
    return weights.with_name(weights.stem + FOLDER_SUFFIX)


def is_openvino(path: Path) -> bool:
    """True for an OpenVINO export: its folder (``*_openvino_model`` or any folder with an .xml) or its .xml file."""
    if path.suffix.lower() == ".xml":
        return True
    return path.name.endswith(FOLDER_SUFFIX) or (path.is_dir() and any(path.glob("*.xml")))


def export_openvino(onnx_path: Path, folder: Path, half: bool, metadata: dict[str, Any]) -> Path:
    """Convert ``onnx_path`` to OpenVINO IR in ``folder`` (replaced if it exists); returns the folder.

    half: weights stored as fp16 (``compress_to_fp16``); the CPU plugin computes in fp32 either way.
    ``metadata`` goes to ``metadata.yaml`` with names as {index: name}, as ultralytics writes it.
    The folder is built beside its final place and moved there whole, so a failure leaves none.
    """
    ov = import_openvino()
    folder.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        try:
            model = ov.convert_model(str(onnx_path))
            ov.save_model(model, str(build / f"{folder.name.removesuffix(FOLDER_SUFFIX)}.xml"), compress_to_fp16=half)
        except Exception as e:  # noqa: BLE001 - any converter failure becomes one clear line
            raise ExportError(f"OpenVINO conversion of {onnx_path} failed: {str(e).splitlines()[0][:200]}") from None
        meta = {**metadata, "names": dict(enumerate(metadata.get("names", []))), "half": int(bool(half))}
        (build / METADATA_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        build.chmod(0o777 & ~umask())  # a folder of its own, not mkdtemp's 0700
        if folder.exists():
            shutil.rmtree(folder)
        build.rename(folder)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return folder


def _xml_file(path: Path) -> Path:
    """The model .xml of an export folder (or ``path`` itself when it is the .xml)."""
    if path.is_file():
        return path
    xmls = sorted(path.glob("*.xml"))
    if len(xmls) != 1:
        raise CheckpointError(f"{path}: expected one OpenVINO .xml model in the folder, found {len(xmls)}; "
                              "re-export it with `effteacher export --format openvino`")
    return xmls[0]


def read_openvino_metadata(path: Path) -> dict[str, Any]:
    """The ``metadata.yaml`` beside the model .xml (CheckpointError when it is missing or unreadable)."""
    meta_file = _xml_file(path).parent / METADATA_FILE
    try:
        meta = yaml.safe_load(meta_file.read_text())
    except (OSError, yaml.YAMLError):
        raise CheckpointError(f"{path}: no readable {METADATA_FILE} beside the model; re-export it with "
                              "`effteacher export --format openvino`") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_file}: expected a mapping of export metadata; re-export the model")
    return meta


class OpenVINOBackend(Backend):
    """An OpenVINO export run by the CPU plugin in fp32 (``INFERENCE_PRECISION_HINT`` f32, so CPUs with bf16
    units give the same numbers), with as many threads as torch uses."""

    format = "openvino"

    def __init__(self, path: str | Path, device: torch.device) -> None:
        path = Path(path)
        if torch.device(device).type != "cpu":
            raise DeviceError(f"{path}: OpenVINO models run on the CPU here; use --device cpu")
        try:
            import openvino as ov  # type: ignore[import-not-found]
        except ImportError:
            raise CheckpointError(f"{path}: cannot run an OpenVINO model: {MISSING}") from None
        xml = _xml_file(path)
        meta = read_openvino_metadata(path)
        try:
            core = ov.Core()
            config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
            self.compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
        except Exception as e:  # noqa: BLE001 - openvino raises RuntimeError subclasses for bad files
            raise CheckpointError(f"{xml}: cannot load OpenVINO model ({str(e).splitlines()[0][:160]}); "
                                  "re-export it with `effteacher export --format openvino`") from None
        self.request = self.compiled.create_infer_request()
        shape = self.compiled.inputs[0].partial_shape
        batch, h, w = shape[0], shape[2], shape[3]
        fixed_shape = (h.get_length(), w.get_length()) if h.is_static and w.is_static else None
        names = meta.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names, key=int)]
        if not names:
            raise CheckpointError(f"{path}: the export metadata has no class names; re-export it with `effteacher "
                                  "export --format openvino` from an effteacher checkpoint")
        imgsz = meta.get("imgsz") or fixed_shape or (640, 640)
        imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        super().__init__(list(names), (int(imgsz[0]), int(imgsz[1])), int(meta.get("stride", 32)), device,
                         fixed_batch=batch.get_length() if batch.is_static else None, fixed_shape=fixed_shape,
                         has_nms=bool(int(meta.get("nms", 0))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) 0-1 -> the model's output (copied out of the request's buffer) on x's device."""
        self.request.infer({0: x.detach().to("cpu", torch.float32).numpy()})
        out = self.request.get_output_tensor(0).data.copy()
        return torch.from_numpy(out).float().to(x.device)
