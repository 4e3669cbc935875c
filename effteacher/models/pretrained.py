"""Start from pretrained weights: effteacher or official YOLOv5 checkpoints (across class sets), torchvision ResNets.

Also `effteacher convert`: an official YOLOv5 .pt -> an effteacher checkpoint file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from torch import nn

from effteacher.errors import CheckpointError
from effteacher.models.checkpoint import (
    FORMAT,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    yolov5_checkpoint,
)
from effteacher.models.retina import RetinaBody, is_resnet_state_dict, load_backbone_state
from effteacher.models.transfer import transfer_state
from effteacher.utils.console import info


def _resnet_arch(sd: dict[str, Any]) -> str | None:
    """'resnet18' / 'resnet50' from a torchvision ResNet state_dict's block counts, None for other depths."""
    keys = {str(k).removeprefix("module.") for k in sd}
    blocks = []
    for layer in range(1, 5):
        idx = {int(m.group(1)) for k in keys if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        blocks.append(max(idx) + 1 if idx else 0)
    bottleneck = any(k.endswith(".conv3.weight") for k in keys)
    if blocks == [2, 2, 2, 2] and not bottleneck:
        return "resnet18"
    if blocks == [3, 4, 6, 3] and bottleneck:
        return "resnet50"
    return None


def read_weights(path: str | Path) -> tuple[str, dict[str, Any]]:
    """("resnet", state_dict) for a torchvision ResNet state_dict, else ("checkpoint", ckpt).

    ckpt is an effteacher checkpoint, or an official YOLOv5 file converted in memory (see
    :func:`effteacher.models.checkpoint.load_checkpoint`); CheckpointError for anything else.
    """
    p = Path(path)
    if p.is_file():
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - not a plain tensor file: load_checkpoint says what it is
            obj = None
        if is_resnet_state_dict(obj):
            sd = obj["state_dict"] if "state_dict" in obj else obj
            return "resnet", sd
    return "checkpoint", load_checkpoint(p)


def weights_variant(path: str | Path) -> str | None:
    """The model variant that ``--weights`` holds (retina-r18/r50 for ImageNet ResNets), None if unknown."""
    kind, obj = read_weights(path)
    if kind == "resnet":
        arch = _resnet_arch(obj)
        return {"resnet18": "retina-r18", "resnet50": "retina-r50"}.get(arch or "")
    variant = obj["model"].get("variant")
    return str(variant) if variant else None


def init_from_weights(model: nn.Module, path: str | Path, names: list[str]) -> int:
    """Initialise ``model`` (classes ``names``) from ``path``; returns the tensors loaded and prints "transferred N/M".

    - effteacher or YOLOv5 checkpoint: same-shape tensors are copied; in the last head convs box and
      objectness rows are copied and class rows only for class names present in both (see
      :func:`effteacher.models.transfer.transfer_state`), so a different class set keeps backbone and neck.
    - torchvision ResNet state_dict: the backbone of a retina model (ImageNet normalisation is inside it).
    """
    kind, obj = read_weights(path)
    variant = getattr(model, "variant", "?")
    total = len(model.state_dict())
    if kind == "resnet":
        body = getattr(model, "body", None)
        if not isinstance(body, RetinaBody):
            raise CheckpointError(f"{path}: a torchvision ResNet state_dict (an ImageNet backbone); it initialises "
                                  f"--model retina-r18 or retina-r50, not '{variant}'")
        n = load_backbone_state(body, obj, str(path))
        info(f"transferred {n}/{total} tensors from {escape(str(path))} (ImageNet {body.arch} backbone; FPN and heads start fresh)")
        return n
    meta = obj["model"]
    src_variant = meta.get("variant")
    t = transfer_state(obj["state_dict"], [str(n) for n in meta.get("names") or []], model, list(names))
    if not any(k not in ("anchors", "stride") for k in t.state):  # only the anchor buffers would fit
        raise CheckpointError(f"{path}: no tensor fits model '{variant}' (the weights hold a '{src_variant}' model); "
                              f"pass --model {src_variant}")
    model.load_state_dict(t.state, strict=False)
    note = f" (weights of a '{src_variant}' model into '{variant}')" if src_variant != variant else ""
    info(f"{t.summary()} from {escape(str(path))}{note}")
    return t.n


def convert(weights: str | Path, output: str | Path | None = None) -> Path:
    """`effteacher convert`: write an official YOLOv5 .pt as an effteacher checkpoint; returns its path.

    The output (default ``<stem>-effteacher.pt`` next to the input) is read back with
    ``torch.load(weights_only=True)`` and must give the same outputs as the converted model.
    """
    src = Path(weights)
    try:
        plain = torch.load(src, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - pickled objects (YOLOv5) or a bad file: yolov5_checkpoint says which
        plain = None
    if isinstance(plain, dict) and plain.get("format") == FORMAT:
        raise CheckpointError(f"{src}: already an effteacher checkpoint; use it with --weights as it is")
    ckpt = yolov5_checkpoint(src)
    out = Path(output) if output else src.with_name(f"{src.stem}-effteacher.pt")
    if out.resolve() == src.resolve():
        raise CheckpointError(f"{out}: the output would overwrite the YOLOv5 file; pass another -o path")
    save_checkpoint(out, ckpt)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model_from_checkpoint(ckpt)(x), model_from_checkpoint(load_checkpoint(out))(x)
    if not all(torch.equal(u, v) for u, v in zip(a, b)):
        raise CheckpointError(f"{out}: the written checkpoint does not reproduce the converted model; not usable")
    m = ckpt["model"]
    info(escape(f"Converted {src} -> {out} (model {m['variant']}, nc={m['nc']}, imgsz {m['imgsz']}); "
                f"use it with --weights {out}"))
    return out
