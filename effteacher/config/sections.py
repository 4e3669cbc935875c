"""The nested sections of TrainConfig (aug, loss, optim, ssod, sched), each setting with its help and range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from effteacher.config.fields import DECAY, FRACTION, GAIN, PROB, Range, count, setting

_SHEAR = Range(0.0, 90.0, hi_strict=True)
_OPEN_FRACTION = Range(0.0, 1.0, hi_strict=True)


@dataclass(frozen=True)
class AugmentConfig:
    """Labeled-view and unlabeled strong-view augmentation (YOLOv5 defaults for the labeled view)."""

    hsv_h: float = setting(0.015, "Hue gain (fraction).", FRACTION)
    hsv_s: float = setting(0.7, "Saturation gain (fraction).", FRACTION)
    hsv_v: float = setting(0.4, "Value gain (fraction).", FRACTION)
    degrees: float = setting(0.0, "Rotation (+/- degrees).", Range(0.0, 180.0))
    translate: float = setting(0.1, "Translation (+/- fraction).", _OPEN_FRACTION)
    scale: float = setting(0.5, "Scale gain (+/-).", _OPEN_FRACTION)
    shear: float = setting(0.0, "Shear (+/- degrees).", _SHEAR)
    perspective: float = setting(0.0, "Perspective (+/- fraction); 0 keeps the transform affine.", Range(0.0, 0.001))
    flipud: float = setting(0.0, "Vertical flip probability.", PROB)
    fliplr: float = setting(0.5, "Horizontal flip probability.", PROB)
    mosaic: float = setting(1.0, "Mosaic probability.", PROB)
    mixup: float = setting(0.0, "Mixup probability.", PROB)
    close_mosaic: int = setting(0, "Turn mosaic off for the last N epochs.", count(0))
    # the strong view of unlabeled images (student input) never reads unlabeled labels
    strong_degrees: float = setting(0.0, "Strong (unlabeled) view: rotation (+/- degrees).", Range(0.0, 180.0))
    strong_translate: float = setting(0.1, "Strong view: translation (+/- fraction).", _OPEN_FRACTION)
    strong_scale: float = setting(0.5, "Strong view: scale gain (+/-).", _OPEN_FRACTION)
    strong_shear: float = setting(0.0, "Strong view: shear (+/- degrees).", _SHEAR)
    strong_fliplr: float = setting(0.5, "Strong view: horizontal flip probability.", PROB)
    cutout: float = setting(0.5, "Strong view: probability of cutout (random erasing).", PROB)
    blur: float = setting(0.1, "Strong view: probability of blur.", PROB)
    noise: float = setting(0.1, "Strong view: probability of gaussian noise.", PROB)
    color_jitter: float = setting(0.8, "Strong view: probability of colour jitter.", PROB)
    weak_fliplr: float = setting(0.5, "Flip probability of the weak (teacher) view.", PROB)
    unlabeled_mosaic: float = setting(0.0, "Probability that the weak (teacher) view of an unlabeled image is a "
                                           "4-image mosaic with 3 other unlabeled images and the labeled mosaic's "
                                           "affine (Efficient Teacher); the strong view is made from it; 0 = off.",
                                   PROB)
    unlabeled_mixup: float = setting(0.0, "Probability that an unlabeled strong view is blended with another of its "
                                          "batch (Beta(32, 32) ratio), taking that view's pseudo labels too; "
                                          "0 = off.", PROB)


@dataclass(frozen=True)
class LossConfig:
    """Supervised loss gains and options (docs/method.md section 2)."""

    box: float = setting(0.05, "Box loss gain.", GAIN)
    obj: float = setting(1.0, "Objectness loss gain; scaled by (imgsz/640)^2 at build time.", GAIN)
    cls: float = setting(0.5, "Class loss gain; scaled by nc/80 at build time.", GAIN)
    anchor_t: float = setting(4.0, "Anchor matching: largest anchor/box size ratio.",
                              Range(lo=1.0, lo_strict=True, hint="the anchor/box size ratio limit, 4.0 by default"))
    balance: tuple[float, float, float] = setting((4.0, 1.0, 0.4), "Objectness weights of the P3, P4, P5 outputs.",
                                                  Range(lo=0.0, lo_strict=True))
    iou_type: Literal["ciou", "giou"] = setting("ciou", "Box IoU of the box loss.")
    focal_gamma: float = setting(0.0, "Focal loss gamma; > 0 turns focal loss on (RetinaNet option: 2.0).", GAIN)
    focal_alpha: float = setting(0.25, "Focal loss alpha.", FRACTION)
    label_smoothing: float = setting(0.0, "Label smoothing epsilon of the class targets.", _OPEN_FRACTION)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and LR schedule (YOLOv5 defaults)."""

    optimizer: Literal["auto", "sgd", "adamw"] = setting(
        "auto", "Optimizer; auto: AdamW below 10k planned iterations, else SGD.")
    lr0: float = setting(0.0, "Initial learning rate; 0 = auto: 0.01 for SGD, 0.002 for AdamW.",
                         Range(0.0, 1.0, hint="0 = auto: 0.01 for SGD, 0.002 for AdamW"))
    lrf: float = setting(0.01, "Final learning rate = lr0 * lrf.",
                         Range(0.0, 1.0, lo_strict=True, hint="the final LR is lr0 * lrf"))
    momentum: float = setting(0.937, "SGD momentum / Adam beta1.", _OPEN_FRACTION)
    weight_decay: float = setting(5e-4, "Weight decay.", _OPEN_FRACTION)
    warmup_epochs: float = setting(3.0, "Warmup epochs (fractions allowed).", GAIN)
    warmup_momentum: float = setting(0.8, "Initial warmup momentum.", _OPEN_FRACTION)
    warmup_bias_lr: float = setting(0.1, "Initial warmup learning rate of the biases.", GAIN)
    cos_lr: bool = setting(False, "Cosine LR schedule (else linear).")
    nbs: int = setting(64, "Nominal batch size: gradients are accumulated up to it.", count(1))
    ema_decay: float = setting(0.9999, "Largest decay of the model EMA (YOLOv5's); the window scales with the run.",
                               DECAY)
    ema_window: int = setting(0, "EMA averaging window in iterations; 0 = auto (10% of the run, 20% of the burn-in "
                                 "patience).", count(0, "0 = auto"))


@dataclass(frozen=True)
class SSODConfig:
    """Mean teacher, Pseudo Label Assigner and Epoch Adaptor (docs/method.md sections 3-5)."""

    lambda_u: float = setting(1.0, "Unlabeled loss weight (3.0 on COCO-like data).", GAIN)
    unsup_box: float = setting(0.05, "Unlabeled box loss gain.", GAIN)
    unsup_obj: float = setting(0.7, "Unlabeled objectness loss gain.", GAIN)
    unsup_cls: float = setting(0.3, "Unlabeled class loss gain.", GAIN)
    # both unlabeled box and class losses are means over targets: a few pseudo boxes would otherwise weigh as
    # much as a whole labeled batch (and their errors with them)
    density_norm: bool = setting(True, "Scale the unlabeled box and class losses by min(1, pseudo targets / boxes "
                                       "a labeled batch of that size holds).")
    soft_cls: bool = setting(False, "Reliable pseudo boxes train the class head on the teacher's class "
                                    "probabilities instead of its argmax one-hot (for teachers that localise well "
                                    "but misclassify).")
    score: Literal["joint", "obj"] = setting(
        "joint", "What the thresholds split: joint = objectness x class probability (docs/method.md section 3); "
                 "obj = objectness alone decides reliable / uncertain / background and the class probability gates "
                 "only the class loss (cls_thres).")
    cls_thres: float = setting(0.0, "A reliable box trains the class head only where the teacher's class "
                                    "probability is at least this.", FRACTION)
    cls_thres_mode: Literal["fixed", "adaptive"] = setting(
        "fixed", "fixed: cls_thres for every class; adaptive: per class cls_thres * p_c / max p (FreeMatch-style, "
                 "p_c the teacher's objectness-weighted class confidence of the last SSOD epoch).")
    agnostic_nms: bool = setting(False, "Class-agnostic teacher NMS (one box per object instead of one per class).")
    dense_topk: float = setting(0.0, "Dense soft pseudo labels (Dense Teacher style): > 0 trains the student's "
                                     "unlabeled objectness and class on the teacher's dense maps, this fraction of "
                                     "cells (top by teacher objectness) as soft positives; 0 = off.", FRACTION)
    tau1: float = setting(0.1, "Low threshold (fixed strategy, and the start value of the others).", FRACTION)
    tau2: float = setting(0.6, "High threshold.", FRACTION)
    nms_iou: float = setting(0.65, "Teacher NMS IoU threshold.", Range(0.0, 1.0, lo_strict=True))
    obj_box_thres: float = setting(0.99, "Uncertain boxes get a box loss only above this teacher objectness.",
                                   FRACTION)
    thresholds: Literal["adaptor", "fixed", "gmm"] = setting(
        "adaptor", "Pseudo-label thresholds: adaptor, fixed or gmm.", flag="--thresholds")
    threshold_pass: bool = setting(True, "Before the first SSOD epoch, one teacher pass over the unlabeled images "
                                          "(weak views, no training) sets the adaptor/gmm thresholds from the "
                                          "teacher's own scores instead of the start values tau1/tau2.")
    ea_alpha: float = setting(0.6, "Epoch Adaptor: tau2 keeps the top alpha of the expected boxes.",
                              Range(0.0, 1.0, lo_strict=True))
    domain_adapt: bool = setting(False, "A domain discriminator pulls labeled and unlabeled features together "
                                        "(no gain in docs/benchmarks.md).")
    lambda_da: float = setting(0.1, "Domain loss weight.", GAIN)
    da_rampup: int = setting(500, "SSOD iterations over which the domain loss weight ramps from 0 to lambda_da.",
                             count(0))
    teacher_decay: float = setting(0.0, "EMA decay of the teacher after burn-in; 0 = auto (0.99-0.999 by SSOD "
                                        "length).", Range(0.0, 1.0, hi_strict=True, hint="0 = auto"))
    flip_teacher: bool = setting(False, "Humble Teacher flip ensemble.")
    unlabeled_ratio: int = setting(1, "Unlabeled images per labeled image in a batch.", count(1))


@dataclass(frozen=True)
class SchedConfig:
    """Schedules in iterations (labeled batches in burn-in), used by ``burn_in: auto`` and ``epochs: 0``."""

    min_steps: int = setting(500, "Auto burn-in: at least this many iterations.", count(1))
    max_steps: int = setting(20000, "Auto burn-in: at most this many iterations.", count(1))
    patience_steps: int = setting(1000, "Hand over once validation fitness has not improved for this many "
                                        "iterations.", count(1))
    val_steps: int = setting(100, "Validate about every this many iterations during an auto burn-in.", count(1))
    ssod_factor: float = setting(2.0, "epochs: 0 -> the SSOD phase runs this many times the burn-in's iterations.",
                                 Range(lo=0.0, lo_strict=True))
    polish_factor: float = setting(1.0, "Supervised auto schedule (--supervised, epochs: 0): after the validation "
                                        "plateau, train this many times its iterations more with the LR decaying to "
                                        "lrf, as the SSOD phase does (--patience does not cut it); 0 = stop at the "
                                        "plateau.", Range(lo=0.0))
    polish_teacher_ema: bool = setting(True, "Supervised polishing averages its EMA like the SSOD teacher (decay "
                                              "0.99-0.999 by the polishing length, or ssod.teacher_decay) where that "
                                              "is longer than the supervised EMA's window; the student keeps its "
                                              "weights.")
    polish_handover: bool = setting(False, "Supervised polishing starts from the EMA weights and averages its EMA "
                                           "like the SSOD teacher (decay 0.99-0.999 by the polishing length, or "
                                           "ssod.teacher_decay), as the lambda_u = 0 control does; a longer "
                                           "supervised EMA window is kept.")
