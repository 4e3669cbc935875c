"""TorchScript export (torch.jit.trace) of a deploy model with its metadata, and reading it back."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effteacher.errors import ExportError

CONFIG_FILE = "config.json"


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    imgsz: int | tuple[int, int],
    batch: int = 1,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Trace ``model`` (x (B, 3, H, W) 0-1 -> decoded (B, A, 5+nc)) and save it to ``path``.

    The example input is (batch, 3, h, w) with the dtype/device of the model's parameters. The
    metadata dict is stored as ``config.json`` in the archive's extra files (plain JSON types:
    names list, imgsz [h, w], stride int, variant, nc int, nms 0/1, effteacher_version).
    """
    path = Path(path)
    p = next(model.parameters())
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    x = torch.zeros(batch, 3, h, w, dtype=p.dtype, device=p.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints from shapes are expected
        try:
            traced = torch.jit.trace(model.eval(), x, strict=False, check_trace=False)
        except Exception as e:  # noqa: BLE001 - any tracer failure becomes one clear line
            raise ExportError(f"TorchScript trace for {path} failed: {str(e).splitlines()[0][:200]}") from e
    traced.save(str(path), _extra_files={CONFIG_FILE: json.dumps(metadata or {})})
    return path


def load_torchscript(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load a file written by :func:`export_torchscript`: (module in eval mode, metadata dict)."""
    extra = {CONFIG_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still the portable format
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    meta = json.loads(extra[CONFIG_FILE]) if extra[CONFIG_FILE] else {}
    return module.eval(), meta
