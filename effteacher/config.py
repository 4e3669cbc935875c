"""Typed configuration: every hyperparameter in one place, with strict YAML/dict round-trips."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from effteacher.errors import ConfigError
from effteacher.utils.yaml_io import read_yaml


@dataclass(frozen=True)
class AugmentConfig:
    """Labeled-view and unlabeled strong-view augmentation (YOLOv5 defaults for the labeled view)."""

    hsv_h: float = 0.015  # hue gain (fraction)
    hsv_s: float = 0.7  # saturation gain (fraction)
    hsv_v: float = 0.4  # value gain (fraction)
    degrees: float = 0.0  # rotation (+/- deg)
    translate: float = 0.1  # translation (+/- fraction)
    scale: float = 0.5  # scale gain (+/-)
    shear: float = 0.0  # shear (+/- deg)
    perspective: float = 0.0  # perspective (+/- fraction), 0 keeps the transform affine
    flipud: float = 0.0  # vertical flip probability
    fliplr: float = 0.5  # horizontal flip probability
    mosaic: float = 1.0  # mosaic probability
    mixup: float = 0.0  # mixup probability
    close_mosaic: int = 0  # turn mosaic off for the last N epochs
    # Strong view of unlabeled images (student input). Never reads unlabeled labels.
    strong_degrees: float = 0.0
    strong_translate: float = 0.1
    strong_scale: float = 0.5
    strong_shear: float = 0.0
    strong_fliplr: float = 0.5
    cutout: float = 0.5  # probability of cutout (random erasing) on the strong view
    blur: float = 0.1  # probability of blur on the strong view
    noise: float = 0.1  # probability of gaussian noise on the strong view
    color_jitter: float = 0.8  # probability of colour jitter on the strong view
    weak_fliplr: float = 0.5  # flip probability of the weak (teacher) view


@dataclass(frozen=True)
class LossConfig:
    """Supervised loss gains and options (docs/method.md section 2)."""

    box: float = 0.05
    obj: float = 1.0  # scaled by (imgsz/640)^2 at build time
    cls: float = 0.5  # scaled by nc/80 at build time
    anchor_t: float = 4.0
    balance: tuple[float, float, float] = (4.0, 1.0, 0.4)
    iou_type: Literal["ciou", "giou"] = "ciou"
    focal_gamma: float = 0.0  # >0 turns on focal loss (RetinaNet option: 2.0)
    focal_alpha: float = 0.25
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and LR schedule (YOLOv5 defaults)."""

    optimizer: Literal["auto", "sgd", "adamw"] = "auto"  # auto: AdamW below 10k planned iterations, else SGD
    lr0: float = 0.0  # 0 = auto: 0.01 for SGD, 0.002 for AdamW
    lrf: float = 0.01  # final LR = lr0 * lrf
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    cos_lr: bool = False
    nbs: int = 64  # nominal batch size: gradients are accumulated up to it
    ema_decay: float = 0.9999  # largest decay of the model EMA (YOLOv5's); the window scales with the run
    ema_window: int = 0  # EMA averaging window in iterations; 0 = auto (10% of the run, 20% of the burn-in patience)


@dataclass(frozen=True)
class SSODConfig:
    """Mean teacher, Pseudo Label Assigner and Epoch Adaptor (docs/method.md sections 3-5)."""

    lambda_u: float = 1.0  # unlabeled loss weight (3.0 on COCO-like data)
    unsup_box: float = 0.05
    unsup_obj: float = 0.7
    unsup_cls: float = 0.3
    # Scale the unlabeled box and class losses by min(1, pseudo targets / boxes a labeled batch of that
    # size holds): both are means over targets, so a few pseudo boxes would otherwise weigh as much as
    # a whole labeled batch (and their errors with them).
    density_norm: bool = True
    # Reliable pseudo boxes train the class head on the teacher's class probabilities instead of its
    # argmax one-hot (off = the hard targets of docs/method.md section 3); for teachers that localise well but misclassify.
    soft_cls: bool = False
    # What the thresholds split: "joint" = obj x class probability (docs/method.md section 3), "obj" = the teacher's
    # objectness alone decides reliable / uncertain / background, and the class probability gates only
    # the class loss (cls_thres). For teachers that find objects before they name them right.
    score: Literal["joint", "obj"] = "joint"
    cls_thres: float = 0.0  # a reliable box trains the class head only where the teacher's class probability >= this
    # "fixed": cls_thres for every class; "adaptive": per class cls_thres * p_c / max p (FreeMatch-style, p_c the
    # teacher's objectness-weighted class confidence of last SSOD epoch; effteacher/ssod/class_gate.py)
    cls_thres_mode: Literal["fixed", "adaptive"] = "fixed"
    agnostic_nms: bool = False  # class-agnostic teacher NMS (one box per object instead of one per class)
    # Dense soft pseudo labels (Dense Teacher style): > 0 = the student's unlabeled objectness and class are
    # trained on the teacher's dense maps warped to the strong view, this fraction of cells (top by teacher
    # objectness) as soft positives, the rest background; the box loss stays on reliable pseudo boxes. 0 = off.
    dense_topk: float = 0.0
    tau1: float = 0.1  # low threshold (fixed strategy, and the start value of the others)
    tau2: float = 0.6  # high threshold
    nms_iou: float = 0.65
    obj_box_thres: float = 0.99  # uncertain boxes get a box loss only above this teacher objectness
    thresholds: Literal["adaptor", "fixed", "gmm"] = "adaptor"
    ea_alpha: float = 0.6  # Epoch Adaptor: tau2 keeps the top alpha of the expected boxes
    domain_adapt: bool = False  # a domain discriminator pulls L and U features together (off: no gain in docs/benchmarks.md)
    lambda_da: float = 0.1
    da_rampup: int = 500  # SSOD iterations over which the domain loss weight ramps linearly from 0 to lambda_da
    teacher_decay: float = 0.0  # EMA decay of the teacher after burn-in; 0 = auto (0.99-0.999 by SSOD length)
    flip_teacher: bool = False  # Humble Teacher flip ensemble
    unlabeled_ratio: int = 1  # unlabeled images per labeled image in a batch


@dataclass(frozen=True)
class SchedConfig:
    """Schedules in iterations (labeled batches in burn-in), used by ``burn_in: auto`` and ``epochs: 0``."""

    min_steps: int = 500  # auto burn-in: at least this many iterations
    max_steps: int = 20000  # ... and at most this many
    patience_steps: int = 1000  # hand over once validation fitness has not improved for this many iterations
    val_steps: int = 100  # validate about every this many iterations during an auto burn-in
    ssod_factor: float = 2.0  # epochs: 0 -> the SSOD phase runs this many times the burn-in's iterations


@dataclass(frozen=True)
class TrainConfig:
    """Everything `effteacher train` needs; written to args.yaml and stored in checkpoints."""

    data: str = "sample"
    model: str = "n"
    labeled: str = "10%"
    supervised: bool = False
    epochs: int = 0  # 0 = auto: burn-in to a plateau, then ssod_factor x as long in SSOD (supervised: to the plateau)
    burn_in: int | str = "auto"  # supervised epochs before SSOD, or 'auto' (until validation plateaus)
    imgsz: int = 640
    batch: int = 16
    device: str = "cpu"
    weights: str | None = None
    resume: str | None = None
    seed: int = 0
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    workers: int = 2
    amp: bool = True
    patience: int = 100
    cache: bool = False  # RAM cache of resized images
    val_every: int = 1  # validate every N epochs (always: SSOD epochs, the last burn-in epoch, the last epoch)
    verbose: bool = False  # per-class validation and threshold tables after every validation (else at the end only)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ssod: SSODConfig = field(default_factory=SSODConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)


def sample_profile() -> dict[str, Any]:
    """Defaults for the bundled sample dataset, sized so a from-scratch n model learns on 2 CPU cores in minutes.

    Small images, AdamW (learns faster than SGD from scratch in a few hundred steps), no gradient
    accumulation (few labeled images make few batches), no flips (digits are not mirror-symmetric),
    a burn-in long enough that the teacher has learned something before it teaches, and a teacher
    EMA decay of 0.99 (time constant ~100 steps): the paper's 0.999 suits 100k-step runs, and over
    the few hundred SSOD steps of a CPU run it leaves the teacher mostly at its burn-in weights.
    """
    return {
        "imgsz": 256, "batch": 16, "epochs": 160, "burn_in": 150, "val_every": 10,
        "optim.optimizer": "adamw", "optim.lr0": 0.002, "optim.nbs": 16, "optim.warmup_epochs": 2.0,
        "optim.warmup_bias_lr": 0.0, "ssod.teacher_decay": 0.99,
        "aug.fliplr": 0.0, "aug.weak_fliplr": 0.0, "aug.strong_fliplr": 0.0,
    }


def sample_large_profile() -> dict[str, Any]:
    """Defaults for the generated ``sample-large`` set: its native 128 px, no flips (digits); schedules auto."""
    return {"imgsz": 128, "batch": 16, "aug.fliplr": 0.0, "aug.weak_fliplr": 0.0, "aug.strong_fliplr": 0.0}


def defaults_for(data: str | None) -> "TrainConfig":
    """TrainConfig defaults for a dataset: the profile of a bundled dataset, YOLOv5's (auto schedules) otherwise."""
    cfg = TrainConfig()
    if data in (None, "sample"):
        cfg = replace(cfg, **sample_profile())
    elif data == "sample-large":
        cfg = replace(cfg, **sample_large_profile())
    return cfg


_NESTED = {"aug": AugmentConfig, "loss": LossConfig, "optim": OptimConfig, "ssod": SSODConfig, "sched": SchedConfig}


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML and checkpoints."""
    out = dataclasses.asdict(cfg)

    def fix(v: Any) -> Any:
        if isinstance(v, tuple):
            return list(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return fix(out)


def _check_keys(cls: type, d: dict[str, Any], where: str) -> None:
    allowed = [f.name for f in fields(cls)]
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Allowed: {', '.join(allowed)}."
            raise ConfigError(f"unknown config key '{where}{key}'.{hint}")


def _build(cls: type, d: dict[str, Any], where: str = "") -> Any:
    _check_keys(cls, d, where)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name in _NESTED and cls is TrainConfig:
            if not isinstance(v, dict):
                raise ConfigError(f"config key '{f.name}' must be a mapping")
            v = _build(_NESTED[f.name], v, f"{f.name}.")
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig; unknown keys raise ConfigError with a suggestion."""
    return _build(TrainConfig, d)


def replace(cfg: Any, **changes: Any) -> Any:
    """dataclasses.replace that also accepts dotted nested keys, e.g. ``{'ssod.tau2': 0.5}``."""
    flat = {k: v for k, v in changes.items() if "." not in k}
    nested: dict[str, dict[str, Any]] = {}
    for k, v in changes.items():
        if "." in k:
            head, tail = k.split(".", 1)
            nested.setdefault(head, {})[tail] = v
    for head, sub in nested.items():
        if head not in _NESTED:
            raise ConfigError(f"unknown config section '{head}'")
        _check_keys(_NESTED[head], sub, f"{head}.")
        flat[head] = dataclasses.replace(getattr(cfg, head), **sub)
    _check_keys(type(cfg), flat, "")
    return dataclasses.replace(cfg, **flat)


def save_yaml(cfg: Any, path: Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _read_mapping(path: Path) -> dict[str, Any]:
    """The YAML mapping at ``path``; ConfigError (one line naming the file) when it is missing, unreadable,
    not valid YAML or not a mapping."""
    d = read_yaml(path, ConfigError, "config YAML") or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys (key: value lines), got a {type(d).__name__}")
    return d


def load_yaml(path: Path) -> TrainConfig:
    """A complete config (args.yaml); keys it lacks take TrainConfig's plain defaults."""
    return from_dict(_read_mapping(path))


def load_overrides(path: Path, data: str | None = None) -> TrainConfig:
    """``--cfg``: the YAML's keys over the defaults of the dataset (the sample profile for 'sample').

    data: the dataset given on the command line; None uses the YAML's own ``data`` (else 'sample').
    A partial YAML (e.g. only ``ssod: {soft_cls: true}``) keeps every other default of that profile.
    """
    d = _read_mapping(path)
    base = to_dict(defaults_for(data if data is not None else d.get("data", "sample")))
    for k, v in d.items():
        if k in _NESTED and isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    try:
        return from_dict(base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
