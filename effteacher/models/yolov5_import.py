"""Official YOLOv5 checkpoints (release v4.0-v7.0, P5 n/s/m/l/x) -> our Detector, read without running their code.

A YOLOv5 ``.pt`` pickles the whole ``models.yolo.Model``/``DetectionModel``. It is unpickled with
:func:`effteacher.utils.safe_pickle.load_inert` into inert records; the layer list is checked against
the two layouts our YOLOBody builds (types, ``from`` indices, conv/pool/upsample settings, BatchNorm eps,
SiLU, residual flags), the variant is picked by the yaml's depth/width multiples, and ``model.{i}.*``
is copied to ``body.layers.{i}.*``, ``model.24.m.{j}.*`` to ``head.{j}.*``. The Detect anchors
(stored in stride units) become pixels. Release v4.0/v5.0 files map exactly too: the Focus stem is
the same function as a 6x6 stride-2 conv (weights rearranged) and SPP(5, 9, 13) equals SPPF(5).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effteacher.errors import CheckpointError
from effteacher.models.blocks import Bottleneck
from effteacher.models.build import VARIANTS, build_model
from effteacher.models.head import Detector
from effteacher.utils.safe_pickle import NotATorchZip, Record, RefusedGlobal, load_inert

_HEAD = ["Conv", "Upsample", "Concat", "C3", "Conv", "Upsample", "Concat", "C3",
         "Conv", "Concat", "C3", "Conv", "Concat", "C3", "Detect"]
# layer types per layout of YOLOBody, and the YOLOv5 releases that use it
LAYER_TYPES = {
    "v6": ["Conv", "Conv", "C3", "Conv", "C3", "Conv", "C3", "Conv", "C3", "SPPF"] + _HEAD,
    "v5": ["Focus", "Conv", "C3", "Conv", "C3", "Conv", "C3", "Conv", "SPP", "C3"] + _HEAD,
}
RELEASES = {"v6": "v6.0-v7.0", "v5": "v4.0-v5.0"}
DETECT = 24  # index of the Detect layer in a P5 model
SUPPORTED = "official YOLOv5 P5 detection models n/s/m/l/x of release v4.0 to v7.0 (yolov5s.pt ...)"


@dataclass
class ImportedYOLOv5:
    """What :func:`import_yolov5` found: our model (float32, eval) and where it came from."""

    model: Detector
    names: list[str]
    release: str  # "v6.0-v7.0" | "v4.0-v5.0"
    source_key: str  # "ema" | "model": which weights of the file were used
    dtype: str  # dtype the weights were stored in, e.g. "torch.float16"
    imgsz: int  # training image size stored in the file (640 when absent)
    epoch: int | None


def read_yolov5(path: str | Path) -> Any:
    """The unpickled checkpoint (dict of records), or CheckpointError with one line naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: weights file not found; check the path")
    try:
        return load_inert(p)
    except RefusedGlobal as e:
        if e.module.split(".")[0] == "ultralytics":
            raise CheckpointError(
                f"{p}: an ultralytics 8.x checkpoint (YOLOv8/YOLO11, or an anchor-free YOLOv5u '*u.pt'), which "
                "effteacher's anchor-based detector cannot use; pass an official YOLOv5 file (e.g. yolov5s.pt, "
                "release v4.0-v7.0, not yolov5su.pt) or train from scratch"
            ) from None
        raise CheckpointError(
            f"{p}: refused: the file asks to import or call {e.module}.{e.name}, which no YOLOv5 or effteacher "
            "checkpoint does; effteacher never runs code from a weights file. Use a checkpoint written by "
            "`effteacher train`/`convert` or an official YOLOv5 .pt"
        ) from None
    except NotATorchZip as e:
        raise CheckpointError(f"{p}: not a checkpoint effteacher can read: {e}") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, OSError) as e:
        raise CheckpointError(f"{p}: cannot read weights file (truncated or corrupt: {type(e).__name__}: "
                              f"{str(e).strip()[:120]})") from None


def _module_state(rec: Record, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """The state_dict of a pickled nn.Module record: parameters, persistent buffers, submodules."""
    for k, v in (rec.get("_parameters") or {}).items():
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v
    skip = rec.get("_non_persistent_buffers_set") or set()
    for k, v in (rec.get("_buffers") or {}).items():
        if isinstance(v, torch.Tensor) and k not in skip:
            out[prefix + k] = v
    for k, sub in (rec.get("_modules") or {}).items():
        if isinstance(sub, Record):
            _module_state(sub, f"{prefix}{k}.", out)


def _child(rec: Record | None, path: str) -> Record | None:
    for part in path.split("."):
        if not isinstance(rec, Record):
            return None
        rec = (rec.get("_modules") or {}).get(part)
    return rec if isinstance(rec, Record) else None


def focus_to_conv6(w: torch.Tensor) -> torch.Tensor:
    """Focus conv weight (c2, 4*c1, 3, 3) -> the equivalent 6x6 stride-2 padding-2 conv weight (c2, c1, 6, 6).

    Focus stacks x[::2, ::2], x[1::2, ::2], x[::2, 1::2], x[1::2, 1::2] (row offset dy, column offset dx)
    and applies a 3x3 stride-1 conv; tap (a, b) of group (dy, dx) reads input pixel (2(i+a-1)+dy,
    2(j+b-1)+dx), which is tap (2a+dy, 2b+dx) of a 6x6 conv at stride 2 with padding 2.
    """
    c2, c4, kh, kw = w.shape
    if (kh, kw) != (3, 3) or c4 % 4:
        raise ValueError(f"Focus conv weight must be (c2, 4*c1, 3, 3), got {tuple(w.shape)}")
    c1 = c4 // 4
    out = w.new_zeros(c2, c1, 6, 6)
    for g, (dy, dx) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        out[:, :, dy::2, dx::2] = w[:, g * c1:(g + 1) * c1]
    return out


def _pair(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _check_module(ours: nn.Module, rec: Record | None, where: str) -> str | None:
    """None when the pickled module ``rec`` computes what ``ours`` does, else why not."""
    if rec is None:
        return f"{where}: missing"
    t = rec.type_name
    if isinstance(ours, nn.Conv2d):
        if t != "Conv2d":
            return f"{where}: {t}, expected Conv2d"
        for a in ("kernel_size", "stride", "padding", "dilation"):
            if _pair(rec.get(a)) != _pair(getattr(ours, a)):
                return f"{where}: {a} {rec.get(a)}, expected {getattr(ours, a)}"
        if rec.get("groups", 1) != ours.groups or rec.get("padding_mode", "zeros") != "zeros":
            return f"{where}: grouped or non-zero-padded conv"
    elif isinstance(ours, nn.BatchNorm2d):
        if t != "BatchNorm2d" or abs(float(rec.get("eps", 0.0)) - ours.eps) > 1e-9:
            return f"{where}: {t} eps {rec.get('eps')}, expected BatchNorm2d eps {ours.eps}"
    elif isinstance(ours, nn.SiLU):
        if t != "SiLU":
            return f"{where}: activation {t}, expected SiLU"
    elif isinstance(ours, nn.MaxPool2d):
        if t != "MaxPool2d" or any(_pair(rec.get(a)) != _pair(getattr(ours, a)) for a in ("kernel_size", "stride", "padding")):
            return f"{where}: {t} {rec.get('kernel_size')}, expected MaxPool2d {ours.kernel_size}"
    elif isinstance(ours, nn.Upsample):
        if t != "Upsample" or rec.get("mode") != ours.mode or float(rec.get("scale_factor") or 0) != float(ours.scale_factor):
            return f"{where}: {t} {rec.get('mode')} x{rec.get('scale_factor')}, expected nearest x2"
    elif isinstance(ours, Bottleneck):
        if t != "Bottleneck" or bool(rec.get("add")) != ours.add:
            return f"{where}: {t} residual {rec.get('add')}, expected {ours.add}"
    return None


def _check_spp(rec: Record | None) -> str | None:
    """Release v5.0's SPP(5, 9, 13): three parallel stride-1 'same' max-pools (= SPPF(5))."""
    pools = [_child(rec, f"m.{i}") for i in range(3)]
    ks = [_pair(p.get("kernel_size"))[0] if p else None for p in pools]
    ok = ks == [5, 9, 13] and all(_pair(p.get("stride"))[0] == 1 and _pair(p.get("padding"))[0] == k // 2
                                  for p, k in zip(pools, ks))
    return None if ok else f"model.8: SPP kernels {ks}, expected (5, 9, 13)"


def _check_focus_conv(rec: Record | None) -> str | None:
    """Release v5.0's Focus conv must be 3x3, stride 1, padding 1, ungrouped (the 6x6 conv equivalence needs it)."""
    ok = rec is not None and rec.get("groups", 1) == 1 and all(
        _pair(rec.get(a)) == v for a, v in (("kernel_size", (3, 3)), ("stride", (1, 1)), ("padding", (1, 1))))
    return None if ok else "model.0: Focus conv is not 3x3 stride 1 padding 1"


def _pickled_path(name: str, layout: str) -> str | None:
    """Path in the pickled ``model.model`` of our module ``name``; None for modules without a counterpart."""
    if name.startswith("head."):
        return f"{DETECT}.m.{name[len('head.'):]}"
    if not name.startswith("body.layers."):
        return None
    rest = name[len("body.layers."):]
    if layout == "v5" and (rest == "0" or rest.startswith("0.")):
        return "0.conv" + rest[1:]  # Focus wraps the Conv that is our layer 0
    return rest


_CHECKED = (nn.Conv2d, nn.BatchNorm2d, nn.SiLU, nn.MaxPool2d, nn.Upsample, Bottleneck)


def _check_structure(model: Detector, layers: Record, layout: str) -> None:
    """Raise ValueError when a pickled layer differs from ours in anything the state_dict does not show."""
    for name, mod in model.named_modules():
        path = _pickled_path(name, layout)
        if path is None or not isinstance(mod, _CHECKED):
            continue
        if layout == "v5" and path == "0.conv.conv":
            bad = _check_focus_conv(_child(layers, path))  # our 6x6 stride-2 conv replaces it
        elif layout == "v5" and path == "8.m":
            bad = _check_spp(_child(layers, "8"))  # our one SPPF pool replaces SPP's three
        else:
            bad = _check_module(mod, _child(layers, path), f"model.{path}")
        if bad:
            raise ValueError(bad)


def _layout(types: list[str], detect: Record) -> str:
    """Our layout name for the pickled layer types, or ValueError saying what the model is."""
    for layout, expected in LAYER_TYPES.items():
        if types == expected:
            return layout
    nl = detect.get("nl") if detect.type_name in ("Detect", "Segment") else None
    if detect.type_name == "Segment":
        raise ValueError("a YOLOv5 segmentation model (yolov5*-seg.pt); use the detection model (yolov5s.pt)")
    stride = detect.get("stride")
    strides = [float(v) for v in stride.tolist()] if isinstance(stride, torch.Tensor) else []
    if nl == 4 and strides == [8.0, 16.0, 32.0, 64.0]:
        raise ValueError("a YOLOv5 P6 model (4 output levels, e.g. yolov5s6.pt); effteacher builds P5 models: "
                         "use yolov5n/s/m/l/x.pt")
    if "BottleneckCSP" in types:
        raise ValueError("a YOLOv5 release v1.0-v3.1 model (BottleneckCSP layers); use a release v4.0 or later file")
    raise ValueError(f"a custom YOLOv5 architecture ({len(types)} layers: {', '.join(types[:12])}"
                     f"{' ...' if len(types) > 12 else ''}); effteacher maps only the {SUPPORTED}")


def _variant(yaml: dict[str, Any], layout: str) -> str:
    d, w = float(yaml.get("depth_multiple", -1)), float(yaml.get("width_multiple", -1))
    for name, v in VARIANTS.items():
        if v.family == "yolo" and v.layout == layout and abs(v.depth - d) < 1e-6 and abs(v.width - w) < 1e-6:
            return name
    known = ", ".join(f"{k} ({v.depth}, {v.width})" for k, v in VARIANTS.items() if v.family == "yolo" and v.layout == layout)
    raise ValueError(f"depth/width multiples ({d}, {w}) match no effteacher variant; known: {known}")


def _names(raw: Any, nc: int) -> list[str]:
    if isinstance(raw, dict):
        raw = [raw.get(i, raw.get(str(i))) for i in range(nc)]
    if isinstance(raw, (list, tuple)) and len(raw) == nc and all(isinstance(n, (str, int)) for n in raw):
        return [str(n) for n in raw]
    return [str(i) for i in range(nc)]


def _imgsz(ckpt: dict[str, Any]) -> int:
    opt = ckpt.get("opt")
    opt = opt.attrs() if isinstance(opt, Record) else opt  # argparse.Namespace in some versions
    if isinstance(opt, dict):
        v = opt.get("imgsz", opt.get("img_size"))
        if isinstance(v, (list, tuple)) and v:
            v = v[0]
        if isinstance(v, int) and v > 0:
            return v
    return 640


def _convert(rec: Record) -> tuple[Detector, list[str], str, str]:
    """(model, names, layout, stored dtype) from a pickled DetectionModel record; ValueError if unmappable."""
    seq = _child(rec, "model")
    mods = (seq.get("_modules") or {}) if seq is not None else {}
    layers = [mods[k] for k in mods if isinstance(mods[k], Record)]
    if not layers:
        raise ValueError("no layer list ('model.model') in the pickled model")
    types = [r.type_name for r in layers]
    layout = _layout(types, layers[-1])
    detect = layers[DETECT]
    yaml = rec.get("yaml") if isinstance(rec.get("yaml"), dict) else {}
    variant = _variant(yaml, layout)
    nc, na = int(detect.get("nc")), int(detect.get("na", 3))
    stride = detect.get("stride")
    if not isinstance(stride, torch.Tensor) or stride.numel() != 3:
        raise ValueError("the Detect layer has no strides (was the model built by YOLOv5's Model class?)")
    stride = stride.float()
    if stride.tolist() != [8.0, 16.0, 32.0]:
        raise ValueError(f"strides {stride.tolist()}, expected [8, 16, 32]")
    src: dict[str, torch.Tensor] = {}
    _module_state(seq, "", src)
    anchors = src.pop(f"{DETECT}.anchors", None)
    if anchors is None or tuple(anchors.shape) != (3, na, 2) or na != 3:
        raise ValueError("the Detect layer must hold 3 levels x 3 anchors")
    from_ = [r.get("f") for r in layers]
    model = build_model(variant, nc, anchors=(anchors.float() * stride.view(-1, 1, 1)))
    expected = [*model.body.sources, [17, 20, 23]]
    if [f if isinstance(f, int) else list(f) for f in from_] != expected:
        raise ValueError(f"layer inputs ('from') {from_} differ from the standard model's {expected}")
    _check_structure(model, seq, layout)
    dtype = str(next(iter(src.values())).dtype)
    ours: dict[str, torch.Tensor] = {"anchors": model.anchors.clone(), "stride": stride}
    for k, v in src.items():
        i, _, rest = k.partition(".")
        if int(i) == DETECT:
            if rest.startswith("m."):
                ours[f"head.{rest[2:]}"] = v.float()
            continue  # v4.0/v5.0 anchor_grid: derived from anchors
        if layout == "v5" and i == "0":
            rest = rest.removeprefix("conv.")  # Focus.conv (a Conv) is our layer 0
            if rest == "conv.weight":
                v = focus_to_conv6(v.float())
        ours[f"body.layers.{i}.{rest}"] = v.float() if v.is_floating_point() else v
    model.load_state_dict(ours, strict=True)
    return model.float().eval(), _names(rec.get("names"), nc), layout, dtype


def import_yolov5(path: str | Path) -> ImportedYOLOv5:
    """Read an official YOLOv5 checkpoint into our Detector; CheckpointError (one line, naming the file) otherwise.

    Uses the file's ``ema`` weights when present, else ``model`` (as YOLOv5's own loader does).
    """
    p = Path(path)
    ckpt = read_yolov5(p)
    if isinstance(ckpt, Record):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{p}: not an effteacher checkpoint nor a YOLOv5 one (no 'model' entry); "
                              f"pass a checkpoint from `effteacher train` or an {SUPPORTED}")
    key = "ema" if isinstance(ckpt.get("ema"), Record) else "model"
    rec = ckpt[key]
    kind = rec.qualname if isinstance(rec, Record) else type(rec).__name__
    if isinstance(rec, Record) and rec.type_name in ("SegmentationModel", "ClassificationModel"):
        what = "segmentation" if rec.type_name.startswith("Seg") else "classification"
        raise CheckpointError(f"{p}: a YOLOv5 {what} model ({kind}); effteacher imports the {SUPPORTED}")
    if not isinstance(rec, Record) or rec.type_name not in ("Model", "DetectionModel"):
        raise CheckpointError(f"{p}: not an effteacher checkpoint nor a YOLOv5 one ('{key}' holds {kind}); "
                              f"pass a checkpoint from `effteacher train` or an {SUPPORTED}")
    try:
        model, names, layout, dtype = _convert(rec)
    except (ValueError, RuntimeError, TypeError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{p}: cannot map this YOLOv5 model: {msg[:300]}") from None
    epoch = ckpt.get("epoch")
    return ImportedYOLOv5(model, names, RELEASES[layout], key, dtype, _imgsz(ckpt),
                          int(epoch) if isinstance(epoch, int) else None)
