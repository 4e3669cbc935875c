"""Checkpoint files: build, save atomically, load safely (weights_only) and rebuild the model."""

from __future__ import annotations

import dataclasses
import pickle
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from effteacher.errors import CheckpointError
from effteacher.models.build import build_model
from effteacher.models.yolov5_import import import_yolov5
from effteacher.utils.console import info
from effteacher.utils.files import atomic_write
from effteacher.version import __version__

FORMAT = "effteacher"
FORMAT_VERSION = 1
WHICH = ("teacher", "student", "ema", "model")


def _plain(value: Any, where: str) -> Any:
    """Recursively convert to types that ``torch.load(weights_only=True)`` accepts.

    Tuples become lists, Paths become str, numpy scalars/arrays become python numbers/tensors.
    Anything else (objects, functions) raises a TypeError naming ``where``.
    """
    if value is None:
        return None
    for t in (bool, int, float, str):  # exact types: subclasses (TorchVersion, IntEnum) are not loadable
        if isinstance(value, t):
            return t(value)
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k, f"{where} key"): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), where)
    raise TypeError(f"checkpoint value {where} has type {type(value).__name__}; only plain types and tensors")


def versions() -> dict[str, str]:
    """Versions of effteacher, torch and python (stored in every checkpoint)."""
    return {"effteacher": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP / DataParallel wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def make_checkpoint(
    model: nn.Module,
    names: list[str],
    imgsz: int,
    which: str,
    epoch: int,
    metrics: dict[str, Any] | None,
    args: Any,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint dict (format in docs/architecture.md) holding only plain types and CPU tensors.

    model: a Detector (DDP-wrapped is fine) with ``meta()``; names: class names (len == model.nc);
    which: "teacher" | "student" | "ema" | "model" (which weights ``state_dict`` holds);
    args: a TrainConfig (dataclass) or its dict; extra: trainer extras (optimizer, scaler, ...).
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    model = unwrap(model)
    meta = dict(model.meta()) if hasattr(model, "meta") else {}
    nc = meta.get("nc")
    if nc is not None and len(names) != nc:
        raise ValueError(f"{len(names)} names for a model with nc={nc}")
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": _plain({**meta, "names": list(names), "imgsz": int(imgsz)}, "model"),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
        "which": which,
        "epoch": int(epoch),
        "metrics": _plain(dict(metrics or {}), "metrics"),
        "args": _plain(args if args is not None else {}, "args"),
        "versions": versions(),
    }
    for k, v in (extra or {}).items():
        if k in ckpt:
            raise ValueError(f"extra key {k!r} would overwrite a checkpoint field")
        ckpt[k] = _plain(v, k)
    return ckpt


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temp file + fsync + rename); returns the path."""
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
    return path


def first_line(e: BaseException, limit: int = 120) -> str:
    """The first line of an exception message (its type name when empty), at most ``limit`` characters:
    a longer line ends at its first sentence if that fits, else at a word boundary with '...' (never mid-word)."""
    lines = str(e).strip().splitlines()
    line = lines[0] if lines else ""
    line = line if any(ch.isalpha() for ch in line) else f"{type(e).__name__} {line}".strip()
    if len(line) <= limit:
        return line
    end = line.find(". ")
    if 0 < end < limit:
        return line[:end]
    cut = line.rfind(" ", 0, limit - 3)
    return line[:cut if cut > 0 else limit - 3].rstrip(" ,;:") + "..."


def _describe_foreign(obj: Any) -> str:
    """A short guess of what a non-effteacher file holds."""
    if isinstance(obj, dict):
        keys = list(obj.keys())
        if keys and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return f"a plain state_dict ({len(keys)} tensors, e.g. {keys[0]!r})"
        if "model" in obj and ("train_args" in obj or "ema" in obj or "optimizer" in obj):
            return "an ultralytics/YOLOv5-style training checkpoint"
        return f"a dict with keys {sorted(map(str, keys))[:6]}"
    return f"a {type(obj).__name__}"


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format (a zip archive)
SIBLINGS = ("best.pt", "last.pt", "burn_in.pt")  # checkpoints a run folder's weights/ may hold


def _kind(head: bytes) -> str:
    """What the first bytes of a file say it is: 'empty', 'zip' (torch.save), 'pickle' (legacy torch.save) or
    'unknown'."""
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "unknown"


def _what_to_do(path: Path) -> str:
    """For a broken ``path``: the other checkpoints beside it (never ``path`` itself), else re-copy / re-train."""
    others = [p for p in (path.parent / n for n in SIBLINGS) if p.is_file() and p.resolve() != path.resolve()]
    if others:
        return f"use {' or '.join(str(p) for p in others)} instead, or re-copy or re-train it"
    return "re-copy it or re-train"


def unreadable_message(path: Path, e: BaseException) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused with ``e``: what the file is and what to do.

    Told apart by the file's first bytes (not by torch's message, which is long and version-dependent): an
    empty file, a truncated or damaged archive, pickled Python objects (ultralytics/YOLOv5 .pt files, refused
    because loading them could run code) and files that are not PyTorch files at all.
    """
    with open(path, "rb") as f:
        head = f.read(8)
    size = path.stat().st_size
    kind = _kind(head)
    retrain = _what_to_do(path)
    if kind == "empty":
        return f"{path}: the file is empty (0 bytes), e.g. a copy or download that failed; {retrain}"
    if isinstance(e, pickle.UnpicklingError) and kind in ("zip", "pickle"):
        text = str(e)
        hint = ""
        if "models.yolo" in text or "ultralytics" in text or "models.common" in text:
            hint = " It looks like an ultralytics/YOLOv5 checkpoint (a pickled model object)."
        return (f"{path}: not an effteacher checkpoint: it contains pickled Python objects that cannot be loaded "
                f"safely.{hint} Pass a checkpoint written by `effteacher train` (weights/best.pt or last.pt)")
    if kind in ("zip", "pickle"):
        return (f"{path}: the PyTorch file is truncated or corrupt ({size} bytes; it ends early or is damaged, "
                f"e.g. an interrupted copy); {retrain}")
    return (f"{path}: not a PyTorch checkpoint (its {size} bytes are neither a torch.save archive nor a pickle); "
            "pass a checkpoint written by `effteacher train` (weights/best.pt or last.pt)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an effteacher checkpoint with ``torch.load(weights_only=True)``.

    An official YOLOv5 checkpoint (a pickled model) is converted in memory by :func:`yolov5_checkpoint`
    without running code from it. Raises CheckpointError (one clear line naming the file and what to
    do) for a missing file, a truncated/corrupt file, a file that is neither (ultralytics 8.x pickles,
    plain state_dicts, pickles that would run code ...) and a checkpoint from a newer effteacher format.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found; check the path (e.g. runs/train/exp/weights/best.pt)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass a .pt file such as {path}/weights/best.pt")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # Pickled Python objects in a torch.save archive: an official YOLOv5 file is read without running its
        # code, anything else is refused with a line saying what it is (see models.yolov5_import).
        with open(path, "rb") as f:
            if _kind(f.read(8)) != "zip":
                raise CheckpointError(unreadable_message(path, e)) from None
        return yolov5_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types (KeyError, EOFError, ...) for junk
        raise CheckpointError(unreadable_message(path, e)) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an effteacher checkpoint (it holds {_describe_foreign(obj)}); "
            "pass a checkpoint written by `effteacher train` (weights/best.pt or last.pt)"
        )
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is newer than this effteacher supports "
            f"({FORMAT_VERSION}); upgrade effteacher (`pip install -U effteacher`)"
        )
    for key in ("model", "state_dict"):
        if key not in obj:
            raise CheckpointError(f"{path}: effteacher checkpoint without {key!r}; the file is damaged, use another")
    problem = metadata_problem(obj)
    if problem:
        raise CheckpointError(f"{path}: damaged effteacher checkpoint: {problem}; use another checkpoint "
                              "(weights/best.pt or last.pt) or re-train")
    return obj


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_numbers(v: Any) -> bool:
    """A (nested) list of numbers, or a tensor."""
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, list):
        return all(_is_numbers(x) for x in v)
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metadata_problem(obj: dict[str, Any]) -> str | None:
    """What is wrong with the types of an effteacher checkpoint's metadata (None when every field that commands
    read has the type make_checkpoint writes): the loaders index into it without further checks."""
    m = obj.get("model")
    if not isinstance(m, dict):
        return f"'model' is a {type(m).__name__}, not the model description (variant, nc, names, imgsz)"
    if not isinstance(m.get("variant"), str):
        return f"model.variant is {m.get('variant')!r}, not a model name"
    if not _is_int(m.get("nc")) or m["nc"] < 1:
        return f"model.nc is {m.get('nc')!r}, not a class count"
    names = m.get("names")
    if not isinstance(names, list) or len(names) != m["nc"] or not all(isinstance(n, (str, int)) for n in names):
        return f"model.names is not a list of {m['nc']} class names"
    if not _is_int(m.get("imgsz")) or m["imgsz"] < 1:
        return f"model.imgsz is {m.get('imgsz')!r}, not an image size"
    for key in ("anchors", "stride"):
        if m.get(key) is not None and not _is_numbers(m[key]):
            return f"model.{key} is not a list of numbers"
    sd = obj.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        return "'state_dict' is not a mapping of parameter names to tensors"
    for key in ("args", "metrics", "pseudo_thresholds"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            return f"{key!r} is a {type(obj[key]).__name__}, not a mapping"
    args = obj.get("args") or {}
    if args.get("ssod") is not None and not isinstance(args["ssod"], dict):
        return "args.ssod is not a mapping"
    pt = obj.get("pseudo_thresholds")
    if pt is not None and not all(_is_numbers(pt.get(k)) for k in ("tau1", "tau2")):
        return "pseudo_thresholds.tau1/tau2 are not lists of numbers"
    if obj.get("epoch") is not None and not _is_int(obj["epoch"]):
        return f"epoch is {obj['epoch']!r}, not a whole number"
    if obj.get("which") is not None and obj["which"] not in WHICH:
        return f"which is {obj['which']!r}, not one of {', '.join(WHICH)}"
    return None


def yolov5_checkpoint(path: str | Path) -> dict[str, Any]:
    """An official YOLOv5 .pt as an in-memory effteacher checkpoint (``which`` "model", ``source`` says from where).

    The file is read by :func:`effteacher.models.yolov5_import.import_yolov5`, which imports and runs
    nothing from it; CheckpointError (naming the file) when it is not a YOLOv5 model we can map.
    """
    path = Path(path)
    imp = import_yolov5(path)
    m = imp.model
    info(f"{escape(str(path))}: YOLOv5 release {imp.release} checkpoint read without running its code: model "
         f"{m.variant}, nc={m.nc}, '{imp.source_key}' weights ({imp.dtype.removeprefix('torch.')})")
    source = {"format": "yolov5", "file": str(path), "release": imp.release, "weights": imp.source_key,
              "dtype": imp.dtype}
    return make_checkpoint(m, imp.names, imp.imgsz, "model", max(imp.epoch or 0, 0), {}, {}, extra={"source": source})


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the Detector stored in ``ckpt`` (variant, nc, anchors), load its weights, eval mode."""
    meta = ckpt["model"]
    try:
        model = build_model(meta["variant"], nc=int(meta["nc"]), anchors=meta.get("anchors"))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint does not match model {meta.get('variant')!r} nc={meta.get('nc')}: "
            f"{first_line(e)}; the file may come from another effteacher version"
        ) from None
    return model.float().to(device).eval()
