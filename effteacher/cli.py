"""Typer command line: parse and validate options, then call one command function. No logic here."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typer.core import TyperCommand

from effteacher.config import Leaf, TrainConfig, defaults_for, leaves, load_overrides, replace
from effteacher.config.fields import show


class _Command(TyperCommand):
    """A command whose unusable option values (``--batch abc``) are one ERROR line and exit code 1, like every
    other bad value; a malformed command line (an unknown or missing option) stays a usage error (exit code 2)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from typer._click.exceptions import BadParameter, MissingParameter

        typed = list(args)  # the parser consumes ``args``
        try:
            return super().parse_args(ctx, args)
        except BadParameter as e:
            root = ctx.find_root()
            if isinstance(e, MissingParameter) or e.param is None or (root.obj or {}).get("verbose"):
                raise
            from effteacher.utils.console import error

            error(_bad_value(e.param, typed, e))
            raise typer.Exit(1) from None


def _bad_value(param: Any, args: list[str], e: Exception) -> str:
    """One line for an option value that does not convert: the option, the value typed and what it takes."""
    opts = list(getattr(param, "opts", []) or [param.name])
    typed = None
    for i, a in enumerate(args):
        if a in opts and i + 1 < len(args):
            typed = args[i + 1]
        elif "=" in a and a.split("=", 1)[0] in opts:
            typed = a.split("=", 1)[1]
    flag = opts[0] if opts[0].startswith("-") else param.name.upper()
    kind = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    default = getattr(param, "default", None)
    example = f" (e.g. {flag} {default})" if isinstance(default, (int, float)) and not isinstance(default, bool) else ""
    if kind is int:
        what = f"expected a whole number{example}"
    elif kind is float:
        what = f"expected a number{example}"
    else:
        what = " ".join(e.format_message().split()) if hasattr(e, "format_message") else " ".join(str(e).split())
    return f"{flag} {typed!r}: {what}" if typed is not None else f"{flag}: {what}"


app = typer.Typer(
    name="effteacher",
    help="Semi-supervised object detection (Efficient Teacher) with a YOLO-style workflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _call(ctx: typer.Context, fn: Callable[[], Any]) -> Any:
    """Run a command; user errors become one red line and exit code 1 (traceback with --verbose)."""
    from effteacher.errors import EffTeacherError
    from effteacher.options import check_numeric_options

    verbose = bool(ctx.obj and ctx.obj.get("verbose"))
    try:
        check_numeric_options(ctx.params)  # every numeric option of every command, before anything is created
        return fn()
    except EffTeacherError as e:
        if verbose:
            raise
        from effteacher.utils.console import error

        for line in str(e).splitlines() or [type(e).__name__]:
            error(line)  # one ERROR line per problem
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        from effteacher.utils.console import error

        error("interrupted; a training run resumes with --resume")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        from effteacher.version import __version__

        typer.echo(f"effteacher {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    ctx.obj = {"verbose": verbose}


def _checked(**options: Any) -> dict[str, Any]:
    from effteacher.options import check_options

    return check_options(**options)


_CLI_TYPES = {bool: Optional[bool], int: Optional[int], float: Optional[float]}


def _param_name(flag: str) -> str:
    return flag.split("/")[0].lstrip("-").replace("-", "_")


def _flag_params(leaves: list[Leaf]) -> list[inspect.Parameter]:
    """One typer option per setting with a flag, from its field metadata: every option defaults to None (= not
    given: the config's value stands), its help ends with the config's default."""
    out = []
    for leaf in leaves:
        m = leaf.meta
        assert m.flag is not None
        text = m.help if leaf.default is None else f"{m.help} (default: {show(leaf.default)})"
        option = typer.Option(None, m.flag, help=text, show_default=False)
        out.append(inspect.Parameter(_param_name(m.flag), inspect.Parameter.KEYWORD_ONLY, default=option,
                                     annotation=_CLI_TYPES.get(leaf.type, Optional[str])))
    return out


_TRAIN_FLAGS = [leaf for leaf in leaves(TrainConfig) if leaf.meta.flag]


def train(ctx: typer.Context, nproc: int, cfg: Optional[Path], **flags: Any) -> None:
    """Train a detector, semi-supervised by default (supervised with --supervised)."""

    def run() -> Any:
        from effteacher.train.trainer import train as train_fn

        data = flags["data"]
        base = load_overrides(cfg, data) if cfg else defaults_for(data)
        changes: dict[str, Any] = {}
        for leaf in _TRAIN_FLAGS:
            value = flags[_param_name(leaf.meta.flag or "")]
            if value is not None:
                parse = leaf.meta.parse
                changes[leaf.key] = parse(value) if parse and isinstance(value, str) else value
        if flags["weights"] is not None and flags["model"] is None:
            from effteacher.models.pretrained import weights_variant

            changes["model"] = weights_variant(flags["weights"]) or base.model
        if flags["resume"] is not None and flags["epochs"] is None:
            changes["epochs"] = 0  # 0 = keep the resumed run's own epoch count
        return train_fn(replace(base, **changes), nproc=nproc)

    _call(ctx, run)


def _signature(fn: Callable[..., Any], params: list[inspect.Parameter]) -> None:
    """Give ``fn`` the parameters typer reads (its signature and type hints)."""
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params}


_KW = inspect.Parameter.KEYWORD_ONLY
_signature(train, [
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    *_flag_params(_TRAIN_FLAGS),
    inspect.Parameter("nproc", _KW, annotation=int,
                      default=typer.Option(1, help="Processes for DDP on CPU (gloo), e.g. --device cpu --nproc 2.")),
    inspect.Parameter("cfg", _KW, annotation=Optional[Path], default=typer.Option(
        None, help="YAML with any TrainConfig keys (the args.yaml format) over the dataset's defaults.")),
])
app.command(cls=_Command)(train)


@app.command(cls=_Command)
def val(
    ctx: typer.Context,
    weights: str = typer.Option(..., help="Weights: .pt (effteacher or official YOLOv5), .onnx, .torchscript or .engine."),
    data: str = typer.Option("sample", help="Dataset YAML or 'sample'."),
    imgsz: Optional[int] = typer.Option(None, help="Image size (default: from the weights)."),
    batch: int = typer.Option(16, help="Batch size."),
    conf: float = typer.Option(0.001, help="Confidence threshold."),
    iou: float = typer.Option(0.6, help="NMS IoU threshold."),
    split: str = typer.Option("val", help="val or test."),
    device: str = typer.Option("cpu", help="cpu or a CUDA index."),
    workers: int = typer.Option(2, help="Dataloader workers."),
    project: str = typer.Option("runs/val"),
    name: str = typer.Option("exp"),
    exist_ok: bool = typer.Option(False, "--exist-ok"),
) -> None:
    """Evaluate weights on a dataset split (pycocotools mAP)."""

    def run() -> Any:
        from effteacher.val.evaluator import run_val

        o = _checked(imgsz=imgsz, batch=batch, conf=conf, iou=iou, workers=workers)
        return run_val(weights=weights, data=data, imgsz=o["imgsz"], batch=batch, conf=conf, iou=iou, split=split,
                       device=device, workers=workers, project=project, name=name, exist_ok=exist_ok)

    _call(ctx, run)


@app.command(cls=_Command)
def predict(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Image file, folder, glob or .txt list."),
    weights: str = typer.Option(..., help="Weights: .pt (effteacher or official YOLOv5), .onnx, .torchscript or .engine."),
    conf: float = typer.Option(0.25),
    iou: float = typer.Option(0.45),
    max_det: int = typer.Option(300, "--max-det"),
    imgsz: Optional[int] = typer.Option(None, help="Image size (default: from the weights)."),
    device: str = typer.Option("cpu"),
    save_txt: bool = typer.Option(False, "--save-txt", help="Write labels/<stem>.txt (cls cx cy w h conf)."),
    save_json: bool = typer.Option(False, "--save-json", help="Write predictions.json (COCO format)."),
    save_images: bool = typer.Option(True, "--save-images/--no-save-images"),
    project: str = typer.Option("runs/predict"),
    name: str = typer.Option("exp"),
    exist_ok: bool = typer.Option(False, "--exist-ok"),
) -> None:
    """Run a detector on images."""

    def run() -> Any:
        from effteacher.predict.predictor import run_predict

        imgsz_ = _checked(imgsz=imgsz, conf=conf, iou=iou, max_det=max_det)["imgsz"]
        return run_predict(source=source, weights=weights, conf=conf, iou=iou, max_det=max_det, imgsz=imgsz_,
                           device=device, save_txt=save_txt, save_json=save_json, save_images=save_images,
                           project=project, name=name, exist_ok=exist_ok)

    _call(ctx, run)


@app.command(cls=_Command)
def pseudo(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Images: folder, glob, .txt list, image file, or a dataset YAML (its 'unlabeled')."),
    weights: str = typer.Option(..., help="An effteacher .pt checkpoint (weights/best.pt)."),
    conf: Optional[float] = typer.Option(None, help="Reliable threshold for every class (default: the training's per-class tau2)."),
    flip: bool = typer.Option(False, "--flip", help="Average each image's and its mirror image's predictions (flip ensemble)."),
    save_to_dataset: bool = typer.Option(False, "--save-to-dataset", help="Also write each label beside its image (images/ -> labels/); never overwrites."),
    imgsz: Optional[int] = typer.Option(None, help="Image size (default: from the weights)."),
    iou: Optional[float] = typer.Option(None, help="NMS IoU threshold (default: the training's teacher NMS, 0.65)."),
    max_det: int = typer.Option(300, "--max-det"),
    batch: int = typer.Option(16, help="Batch size."),
    device: str = typer.Option("cpu", help="cpu or a CUDA index."),
    workers: int = typer.Option(2, help="Dataloader workers."),
    project: str = typer.Option("runs/pseudo"),
    name: str = typer.Option("exp"),
    exist_ok: bool = typer.Option(False, "--exist-ok"),
) -> None:
    """Pseudo-label images for review: YOLO txt (reliable boxes), COCO JSON (reliable + uncertain), review.csv."""

    def run() -> Any:
        from effteacher.labeling.pseudo_export import run_pseudo

        imgsz_ = _checked(imgsz=imgsz)["imgsz"]
        return run_pseudo(source=source, weights=weights, conf=conf, flip=flip, save_to_dataset=save_to_dataset,
                          imgsz=imgsz_, iou=iou, max_det=max_det, batch=batch, device=device, workers=workers,
                          project=project, name=name, exist_ok=exist_ok)

    _call(ctx, run)


@app.command(cls=_Command)
def rank(
    ctx: typer.Context,
    weights: str = typer.Option(..., help="An effteacher .pt checkpoint (weights/best.pt)."),
    data: str = typer.Option("sample", help="Dataset YAML or 'sample'."),
    budget: int = typer.Option(100, help="How many images to choose."),
    labeled: Optional[str] = typer.Option(None, help="Labeled list (file, or run folder with split/labeled.txt); default: the weights' run split."),
    flip: bool = typer.Option(False, "--flip", help="Score the flip-ensemble detections (disagreement always uses both views)."),
    imgsz: Optional[int] = typer.Option(None, help="Image size (default: from the weights)."),
    batch: int = typer.Option(16, help="Batch size."),
    device: str = typer.Option("cpu", help="cpu or a CUDA index."),
    workers: int = typer.Option(2, help="Dataloader workers."),
    project: str = typer.Option("runs/rank"),
    name: str = typer.Option("exp"),
    exist_ok: bool = typer.Option(False, "--exist-ok"),
) -> None:
    """Choose which unlabeled images to label next: to_label.txt (best first) and rank.csv (every score)."""

    def run() -> Any:
        from effteacher.labeling.rank import run_rank

        imgsz_ = _checked(imgsz=imgsz)["imgsz"]
        return run_rank(weights=weights, data=data, budget=budget, labeled=labeled, flip=flip, imgsz=imgsz_,
                        batch=batch, device=device, workers=workers, project=project, name=name, exist_ok=exist_ok)

    _call(ctx, run)


@app.command(cls=_Command)
def export(
    ctx: typer.Context,
    weights: str = typer.Option(..., help="An effteacher .pt checkpoint or an official YOLOv5 .pt."),
    format: str = typer.Option("onnx", help="onnx|torchscript|engine"),
    imgsz: Optional[int] = typer.Option(None, help="Export image size (default: from the weights)."),
    batch: int = typer.Option(1),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch/height/width."),
    half: bool = typer.Option(False, "--half", help="FP16 (CUDA only)."),
    opset: int = typer.Option(17),
    nms: bool = typer.Option(False, "--nms", help="Put NMS in the graph: output (N, max_det, 6)."),
    max_det: int = typer.Option(100, "--max-det"),
    simplify: bool = typer.Option(False, "--simplify", help="Simplify with onnxslim/onnxsim if installed."),
    device: str = typer.Option("cpu"),
) -> None:
    """Export a checkpoint to ONNX, TorchScript or TensorRT, checked against PyTorch."""

    def run() -> Any:
        from effteacher.export.api import run_export

        o = _checked(imgsz=imgsz, batch=batch, opset=opset, max_det=max_det)
        return run_export(weights=weights, format=format, imgsz=o["imgsz"], batch=batch, dynamic=dynamic, half=half,
                          opset=opset, nms=nms, max_det=max_det, simplify=simplify, device=device)

    _call(ctx, run)


@app.command(cls=_Command)
def convert(
    ctx: typer.Context,
    weights: str = typer.Argument(..., help="An official YOLOv5 .pt: release v4.0-v7.0, P5 n/s/m/l/x (yolov5s.pt ...)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Output .pt (default: <name>-effteacher.pt beside it)."),
) -> None:
    """Convert an official YOLOv5 checkpoint to an effteacher one, reading it without running its code."""

    def run() -> Any:
        from effteacher.models.pretrained import convert as convert_fn

        return convert_fn(weights, output)

    _call(ctx, run)


@app.command(cls=_Command)
def split(
    ctx: typer.Context,
    data: str = typer.Option("sample", help="Dataset YAML or 'sample'."),
    labeled: str = typer.Option("10%", help="'10%', '0.1', a count '200', or a file listing the labeled images."),
    seed: int = typer.Option(0),
    project: str = typer.Option("runs/split"),
    name: str = typer.Option("exp"),
    exist_ok: bool = typer.Option(False, "--exist-ok"),
) -> None:
    """Write the seeded labeled/unlabeled split manifest only."""

    def run() -> Any:
        from effteacher.data.split import run_split

        _checked(labeled=labeled, seed=seed)
        return run_split(data=data, labeled=labeled, seed=seed, project=project, name=name, exist_ok=exist_ok)

    _call(ctx, run)


@app.command(cls=_Command)
def check(
    ctx: typer.Context,
    data: str = typer.Option("sample", help="Dataset YAML or 'sample'."),
) -> None:
    """Validate a dataset and print a report."""

    def run() -> Any:
        from effteacher.data.report import run_check

        return run_check(data=data)

    _call(ctx, run)


def main() -> None:
    app()
