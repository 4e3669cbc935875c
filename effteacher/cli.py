"""Typer command line: parse and validate options, then call one command function. No logic here."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from typer.core import TyperCommand

from effteacher.config import Leaf, TrainConfig, defaults_for, leaves, load_overrides, replace
from effteacher.config.commands import (
    ExportOptions, LaunchOptions, PredictOptions, PseudoOptions, RankOptions, SplitOptions, ValOptions,
)
from effteacher.config.fields import show

T = TypeVar("T")


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


def _cli_type(tp: Any) -> Any:
    """The annotation typer reads for a setting's type: bool, int, float, else text; Optional when it may be None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if len(args) == 1 and typing.get_args(tp) else tp
    base = base if base in (bool, int, float) else str
    return Optional[base] if base is not tp else base


def _option_params(cls: type) -> list[inspect.Parameter]:
    """One typer option per setting of ``cls`` with a flag, with the setting's default and help."""
    out = []
    for leaf in leaves(cls):
        if leaf.meta.flag:
            option = typer.Option(leaf.default, leaf.meta.flag, help=leaf.meta.help)
            out.append(inspect.Parameter(_param_name(leaf.meta.flag), inspect.Parameter.KEYWORD_ONLY, default=option,
                                         annotation=_cli_type(leaf.type)))
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
_CTX = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
_signature(train, [
    _CTX,
    *_flag_params(_TRAIN_FLAGS),
    *_option_params(LaunchOptions),
    inspect.Parameter("cfg", _KW, annotation=Optional[Path], default=typer.Option(
        None, help="YAML with any TrainConfig keys (the args.yaml format) over the dataset's defaults.")),
])
app.command(cls=_Command)(train)


_WEIGHTS_ANY = "Weights: .pt (effteacher or official YOLOv5), .onnx, .torchscript, *_openvino_model/ or .engine."
_WEIGHTS_PT = "An effteacher .pt checkpoint (weights/best.pt)."


def _options(cls: type[T], flags: dict[str, Any]) -> T:
    """The command's options object from its parsed flags: text read by the setting's ``parse`` (``--classes
    0,2``), ``labeled`` checked and ``imgsz`` rounded up to a multiple of the largest stride (the ranges were checked
    in _call)."""
    from effteacher.options import check_options

    values = {leaf.key: flags[leaf.key] for leaf in leaves(cls) if leaf.meta.flag}
    for leaf in leaves(cls):
        if leaf.meta.parse and isinstance(values.get(leaf.key), str):
            values[leaf.key] = leaf.meta.parse(values[leaf.key])
    values.update(check_options(**{k: v for k, v in values.items() if k in ("imgsz", "labeled")}))
    return cls(**values)


def val(ctx: typer.Context, weights: str, **flags: Any) -> None:
    """Evaluate weights on a dataset split (pycocotools mAP)."""

    def run() -> Any:
        from effteacher.val.evaluator import run_val

        return run_val(weights, options=_options(ValOptions, flags))

    _call(ctx, run)


def predict(ctx: typer.Context, source: str, weights: str, **flags: Any) -> None:
    """Run a detector on images, videos, webcams and streams."""

    def run() -> Any:
        from effteacher.predict.command import run_predict

        return run_predict(source, weights, options=_options(PredictOptions, flags))

    _call(ctx, run)


def pseudo(ctx: typer.Context, source: str, weights: str, **flags: Any) -> None:
    """Pseudo-label images for review: YOLO txt (reliable boxes), COCO JSON (reliable + uncertain), review.csv."""

    def run() -> Any:
        from effteacher.labeling.pseudo_export import run_pseudo

        return run_pseudo(source, weights, options=_options(PseudoOptions, flags))

    _call(ctx, run)


def rank(ctx: typer.Context, weights: str, **flags: Any) -> None:
    """Choose which unlabeled images to label next: to_label.txt (best first) and rank.csv (every score)."""

    def run() -> Any:
        from effteacher.labeling.rank import run_rank

        return run_rank(weights, options=_options(RankOptions, flags))

    _call(ctx, run)


def export(ctx: typer.Context, weights: str, **flags: Any) -> None:
    """Export a checkpoint to ONNX, TorchScript or TensorRT, checked against PyTorch."""

    def run() -> Any:
        from effteacher.export.api import run_export

        return run_export(weights, options=_options(ExportOptions, flags))

    _call(ctx, run)


def split(ctx: typer.Context, **flags: Any) -> None:
    """Write the seeded labeled/unlabeled split manifest only."""

    def run() -> Any:
        from effteacher.data.split import run_split

        return run_split(options=_options(SplitOptions, flags))

    _call(ctx, run)


def _source(help: str) -> inspect.Parameter:
    return inspect.Parameter("source", _KW, annotation=str, default=typer.Argument(..., help=help))


def _weights(help: str) -> inspect.Parameter:
    return inspect.Parameter("weights", _KW, annotation=str, default=typer.Option(..., help=help))


_IMAGES = "Image or video file, folder, glob, .txt list, webcam index (0) or rtsp/rtmp/http(s) stream URL."
for _fn, _cls, _required in [
    (val, ValOptions, [_weights(_WEIGHTS_ANY)]),
    (predict, PredictOptions, [_source(_IMAGES), _weights(_WEIGHTS_ANY)]),
    (pseudo, PseudoOptions, [_source("Images: folder, glob, .txt list, image file, or a dataset YAML (its "
                                     "'unlabeled')."), _weights(_WEIGHTS_PT)]),
    (rank, RankOptions, [_weights(_WEIGHTS_PT)]),
    (export, ExportOptions, [_weights("An effteacher .pt checkpoint or an official YOLOv5 .pt.")]),
]:
    _signature(_fn, [_CTX, *_required, *_option_params(_cls)])
    app.command(cls=_Command)(_fn)


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


_signature(split, [_CTX, *_option_params(SplitOptions)])
app.command(cls=_Command)(split)


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
