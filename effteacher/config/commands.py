"""Options of the val, predict, pseudo, rank, export and split commands (and train's --nproc): each option's default,
help, range and flag written once; the CLI's options and the range checks are generated from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from effteacher.config.fields import BATCH, FRACTION, IMGSZ, MAX_PROCS, SEED, WORKERS, Range, count, setting
from effteacher.errors import ConfigError

T = TypeVar("T")


# One constructor per option shared by several commands: its help, range and flag; the default is the command's.
def _project(command: str) -> Any:
    return setting(f"runs/{command}", "Parent folder of the run.", flag="--project")


def _name() -> Any:
    return setting("exp", "Run name (incremented unless --exist-ok).", flag="--name")


def _exist_ok() -> Any:
    return setting(False, "Reuse an existing run folder.", flag="--exist-ok")


def _data() -> Any:
    return setting("sample", "Dataset YAML or 'sample'.", flag="--data")


def _imgsz() -> Any:
    return setting(None, "Image size (default: from the weights).", IMGSZ, flag="--imgsz")


def _batch(default: int) -> Any:
    return setting(default, "Batch size.", BATCH, flag="--batch")


def _device() -> Any:
    return setting("cpu", "cpu or a CUDA index.", flag="--device")


def _workers() -> Any:
    return setting(2, "Dataloader workers.", WORKERS, flag="--workers")


def _conf(default: float | None, help: str = "Confidence threshold.", flag: str | None = "--conf") -> Any:
    return setting(default, help, FRACTION, flag=flag)


def _iou(default: float | None, help: str = "NMS IoU threshold.", flag: str | None = "--iou") -> Any:
    return setting(default, help, Range(0.0, 1.0, lo_strict=True), flag=flag)


def _max_det(default: int, help: str = "Most boxes kept per image.") -> Any:
    return setting(default, help, count(1, "boxes per image"), flag="--max-det")


def _flip(help: str) -> Any:
    return setting(False, help, flag="--flip")


@dataclass(frozen=True)
class ValOptions:
    """Scoring thresholds for mAP (a low conf keeps the whole precision-recall curve)."""

    data: str = _data()
    imgsz: int | None = _imgsz()
    batch: int = _batch(16)
    conf: float = _conf(0.001)
    iou: float = _iou(0.6)
    split: str = setting("val", "val or test.", flag="--split")
    device: str = _device()
    workers: int = _workers()
    project: str = _project("val")
    name: str = _name()
    exist_ok: bool = _exist_ok()
    half: bool = setting(False, "FP16 inference (CUDA).")


def parse_classes(text: str) -> tuple[int, ...]:
    """--classes: class indices separated by commas or spaces ('0,2' or '0 2'); ConfigError for anything else."""
    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--classes {text!r}: expected class indices (whole numbers >= 0), e.g. --classes 0,2")
    return tuple(sorted({int(p) for p in parts}))


@dataclass(frozen=True)
class PredictOptions:
    """Deployment thresholds, what to read and what to write."""

    conf: float = _conf(0.25)
    iou: float = _iou(0.45)
    max_det: int = _max_det(300)
    classes: tuple[int, ...] | None = setting(None, "Keep only these class indices, e.g. --classes 0,2 (default: all).",
                                              flag="--classes", parse=parse_classes)
    imgsz: int | None = _imgsz()
    batch: int = setting(1, "Images (or video frames) per inference batch.", BATCH, flag="--batch")
    vid_stride: int = setting(1, "Read every N-th frame of videos and streams.",
                              count(1, "frames, e.g. --vid-stride 2 reads every second frame"), flag="--vid-stride")
    device: str = _device()
    save_txt: bool = setting(False, "Write labels/<stem>.txt (videos: <stem>_<frame>.txt): cls cx cy w h [conf].",
                             flag="--save-txt")
    save_conf: bool = setting(True, "Write the conf column in the --save-txt files (--no-save-conf: the 5 columns "
                                    "of YOLO training labels).", flag="--save-conf/--no-save-conf")
    save_json: bool = setting(False, "Write predictions.json (COCO format).", flag="--save-json")
    save_crop: bool = setting(False, "Write each box's crop to crops/<class>/<stem>.jpg.", flag="--save-crop")
    save_images: bool = setting(True, "Write each image (video: an .mp4) with its boxes drawn.",
                                flag="--save-images/--no-save-images")
    line_width: int | None = setting(None, "Box line width in pixels (default: from the image size).",
                                     count(1, "pixels"), flag="--line-width")
    hide_labels: bool = setting(False, "Draw boxes without class names.", flag="--hide-labels")
    hide_conf: bool = setting(False, "Draw class names without scores.", flag="--hide-conf")
    project: str = _project("predict")
    name: str = _name()
    exist_ok: bool = _exist_ok()


@dataclass(frozen=True)
class PseudoOptions:
    """Thresholds default to the training's own (per-class tau2, teacher NMS)."""

    conf: float | None = _conf(None, "Reliable threshold for every class (default: the training's per-class tau2).")
    flip: bool = _flip("Average each image's and its mirror image's predictions (flip ensemble).")
    save_to_dataset: bool = setting(False, "Also write each label beside its image (images/ -> labels/); never "
                                           "overwrites.", flag="--save-to-dataset")
    format: str = setting("coco", "Files for labeling tools: coco (pseudo_labels.json), yolo (obj.data/obj.names/"
                                  "train.txt: CVAT YOLO 1.1), labelstudio (tasks with scored predictions); "
                                  "comma-separated, or all.", flag="--format")
    imgsz: int | None = _imgsz()
    iou: float | None = _iou(None, "NMS IoU threshold (default: the training's teacher NMS, 0.65).")
    max_det: int = _max_det(300)
    batch: int = _batch(16)
    device: str = _device()
    workers: int = _workers()
    project: str = _project("pseudo")
    name: str = _name()
    exist_ok: bool = _exist_ok()


@dataclass(frozen=True)
class RankOptions:
    """How many unlabeled images to choose, against which labeled list."""

    data: str = _data()
    budget: int = setting(100, "How many images to choose.", count(1, "images to choose"), flag="--budget")
    labeled: str | None = setting(None, "Labeled list (file, or run folder with split/labeled.txt); default: the "
                                        "weights' run split.", flag="--labeled")
    flip: bool = _flip("Score the flip-ensemble detections (disagreement always uses both views).")
    imgsz: int | None = _imgsz()
    batch: int = _batch(16)
    device: str = _device()
    workers: int = _workers()
    project: str = _project("rank")
    name: str = _name()
    exist_ok: bool = _exist_ok()


OPSET = 17


@dataclass(frozen=True)
class ExportOptions:
    """Format, input shape and what the exported graph holds."""

    format: str = setting("onnx", "onnx|torchscript|openvino|engine", flag="--format")
    imgsz: int | None = setting(None, "Export image size (default: from the weights).", IMGSZ, flag="--imgsz")
    batch: int = _batch(1)
    dynamic: bool = setting(False, "Dynamic batch/height/width.", flag="--dynamic")
    half: bool = setting(False, "FP16 (CUDA; openvino: fp16 weights, on CPU).", flag="--half")
    opset: int = setting(OPSET, "ONNX opset.", count(11, f"ONNX opset, {OPSET} by default"), flag="--opset")
    nms: bool = setting(False, "Put NMS in the graph: output (N, max_det, 6).", flag="--nms")
    max_det: int = _max_det(100, "Most boxes per image of the in-graph NMS.")
    simplify: bool = setting(False, "Simplify with onnxslim/onnxsim if installed.", flag="--simplify")
    device: str = _device()
    iou: float = _iou(0.45, "IoU threshold of the in-graph NMS.", flag=None)
    conf: float = _conf(0.25, "Confidence threshold of the in-graph NMS.", flag=None)
    workspace: float = setting(4.0, "TensorRT builder workspace in GiB.", Range(lo=0.0, lo_strict=True))


@dataclass(frozen=True)
class SplitOptions:
    """The seeded labeled/unlabeled split of a dataset's train images."""

    data: str = _data()
    labeled: str = setting("10%", "'10%', '0.1', a count '200', or a file listing the labeled images.",
                           flag="--labeled")
    seed: int = setting(0, "Seed of the split.", SEED, flag="--seed")
    project: str = _project("split")
    name: str = _name()
    exist_ok: bool = _exist_ok()


@dataclass(frozen=True)
class LaunchOptions:
    """How `effteacher train` is launched (not part of the run's config)."""

    nproc: int = setting(1, "Processes for DDP on CPU (gloo), e.g. --device cpu --nproc 2.",
                         count(1, "processes for DDP on CPU", hi=MAX_PROCS), flag="--nproc")


COMMAND_OPTIONS: dict[str, type] = {
    "val": ValOptions, "predict": PredictOptions, "pseudo": PseudoOptions, "rank": RankOptions,
    "export": ExportOptions, "split": SplitOptions, "train": LaunchOptions,
}


def with_overrides(cls: type[T], options: T | None, overrides: Mapping[str, Any]) -> T:
    """``options`` (default: ``cls()``) with the keyword ``overrides`` of a ``run_*`` call; TypeError for a name that
    is not an option of ``cls``."""
    return dataclasses.replace(options if options is not None else cls(), **overrides)  # type: ignore[type-var]
