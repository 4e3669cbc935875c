"""Option checks before any work: types and ranges of every TrainConfig value and command option.

Called before a run folder is made or a dataset scanned. Each problem is one line naming the option the
user typed (``--batch``) or the config key (``cfg optim.lr0``), the value, the allowed range and what
to do; all problems of a command come in one ConfigError.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from effteacher.config import TrainConfig, leaves, replace
from effteacher.config.commands import COMMAND_OPTIONS
from effteacher.config.fields import Range
from effteacher.data.split import is_list_spec, parse_labeled
from effteacher.errors import ConfigError, DatasetError
from effteacher.utils.console import warn

MAX_STRIDE = 32  # largest stride of every model variant (P5); input sizes are rounded up to a multiple of it

_LEAVES = leaves(TrainConfig)
# views of the TrainConfig field metadata (the single source): ranges of numeric keys, flags of keys with an option
TRAIN_RANGES: dict[str, Range] = {leaf.key: leaf.meta.range for leaf in _LEAVES if leaf.meta.range}
_FLAGS: dict[str, str] = {leaf.key: leaf.meta.flag for leaf in _LEAVES if leaf.meta.flag}


def _command_ranges() -> dict[str, Range]:
    """Ranges of the numeric options of every command, by parameter name: the train flags' and those of the option
    dataclasses of the other commands. One name has one range in every command (ValueError otherwise)."""
    out = {key: rng for key, rng in TRAIN_RANGES.items() if key in _FLAGS}
    for cls in COMMAND_OPTIONS.values():
        for leaf in leaves(cls):
            rng = leaf.meta.range
            if rng is None or leaf.meta.flag is None:
                continue
            if out.setdefault(leaf.key, rng) != rng:
                raise ValueError(f"option --{leaf.key} has two ranges: {out[leaf.key]} and {rng}")
    return out


# The CLI checks each numeric option a command has against this table before it runs (cli._call); an option
# without a rule is a programming error (tests walk them all).
OPTION_RANGES: dict[str, Range] = _command_ranges()


def _flag(key: str) -> str:
    return _FLAGS.get(key, f"cfg {key}")


def _fmt(v: Any) -> str:
    """A value for a message: strings quoted, a very long number shortened to its first digits."""
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (tuple, list)):
        inner = ", ".join(map(_fmt, v))
        return f"({inner})" if isinstance(v, tuple) else f"[{inner}]"
    text = str(v)
    return f"{text[:12]}...({len(text)} digits)" if isinstance(v, int) and len(text) > 24 else text


def _type_problem(key: str, value: Any, tp: Any) -> str | None:
    """A line if ``value`` is not of the annotated type ``tp`` (bool, int, float, str, Literal, unions, tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        if value not in args:
            return f"{_flag(key)} {_fmt(value)}: use one of {', '.join(map(str, args))}"
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(key, value, a) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is tuple:
        if not isinstance(value, (tuple, list)) or len(value) != len(args):
            return f"{_flag(key)} {_fmt(value)}: expected a list of {len(args)} numbers"
        return next((p for v, a in zip(value, args) if (p := _type_problem(key, v, a))), None)
    if tp is bool:
        return None if isinstance(value, bool) else f"{_flag(key)} {_fmt(value)}: expected true or false"
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{_flag(key)} {_fmt(value)}: expected a whole number"
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"{_flag(key)} {_fmt(value)}: expected a number"
    if tp is str:
        return None if isinstance(value, str) else f"{_flag(key)} {_fmt(value)}: expected text"
    return None


def _range_problem(flag: str, value: Any, rng: Range) -> str | None:
    vals = list(value) if isinstance(value, (tuple, list)) else [value]
    if all(rng.ok(v) for v in vals):
        return None
    hint = f" ({rng.hint})" if rng.hint else ""
    low = [v for v in vals if not rng.ok(v)][:1]
    return f"{flag} {_fmt(value)}: must be {rng.describe(low[0] if low else None)}{hint}"


def _fields(obj: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, annotated type) of every leaf setting of a TrainConfig."""
    return [(leaf.key, _get(obj, leaf.key), leaf.type) for leaf in _LEAVES]


def _get(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _labeled_problem(labeled: str) -> str | None:
    """The syntax of --labeled ('10%', '0.1', '200'); the count against the dataset is checked after the scan."""
    text = str(labeled).strip()
    path = Path(text).expanduser()
    if is_list_spec(text) and path.is_file():
        return None  # a list of images (with or without an extension): read after the scan
    if path.suffix.lower() in (".txt", ".csv", ".lst") or "/" in text or "\\" in text:
        return (f"--labeled {labeled}: file not found; give an existing file listing the labeled images "
                "(one path per line) or a percentage like '10%'")
    try:
        parse_labeled(labeled, 2**62)
    except DatasetError as e:
        return str(e)
    return None


def round_imgsz(imgsz: int, flag: str = "--imgsz") -> int:
    """``imgsz`` rounded up to a multiple of the models' largest stride (32), saying so when it changes."""
    new = max(math.ceil(imgsz / MAX_STRIDE), 1) * MAX_STRIDE
    if new != imgsz:
        warn(f"{flag} {imgsz} is not a multiple of the largest model stride {MAX_STRIDE}; using {new}")
    return new


def train_config_problems(cfg: TrainConfig) -> list[str]:
    """Every problem of ``cfg``, one line each ([] when it is usable)."""
    problems: list[str] = []
    numeric: dict[str, Any] = {}
    for key, value, tp in _fields(cfg):
        p = _type_problem(key, value, tp)
        if p:
            problems.append(p)
        elif key in TRAIN_RANGES:
            numeric[key] = value
            p = _range_problem(_flag(key), value, TRAIN_RANGES[key])
            if p:
                problems.append(p)
    b = cfg.burn_in
    if cfg.resume is not None:
        return problems  # the run's own config comes from its last.pt (setup.finished_run checks --epochs)
    if isinstance(b, str) and b != "auto":
        problems.append(f"--burn-in {b!r}: use 'auto' or a whole number of epochs (e.g. --burn-in 50)")
    elif isinstance(b, int) and not isinstance(b, bool):
        if b < 0:
            problems.append(f"--burn-in {b}: must be a whole number >= 0 or 'auto'")
        elif not cfg.supervised and isinstance(cfg.epochs, int) and cfg.epochs > 0 and b >= cfg.epochs:
            problems.append(
                f"--burn-in {b} with --epochs {cfg.epochs} leaves no semi-supervised epoch (--epochs counts the "
                f"burn-in too): use --epochs above {b}, --burn-in auto, or --supervised for a supervised run")
    if not problems and cfg.ssod.tau1 > cfg.ssod.tau2:
        problems.append(f"cfg ssod.tau1 {cfg.ssod.tau1:g} is above ssod.tau2 {cfg.ssod.tau2:g}: the low threshold "
                        "must not exceed the high one")
    if not problems and cfg.sched.min_steps > cfg.sched.max_steps:
        problems.append(f"cfg sched.min_steps {cfg.sched.min_steps} is above sched.max_steps {cfg.sched.max_steps}")
    if isinstance(cfg.labeled, str):
        p = _labeled_problem(cfg.labeled)
        if p:
            problems.append(p)
    return problems


def check_train_config(cfg: TrainConfig, nproc: int = 1) -> TrainConfig:
    """Raise one ConfigError listing every problem of ``cfg`` (and ``--nproc``); returns ``cfg`` with imgsz
    rounded up to a multiple of the largest stride (with a message when it changes)."""
    problems = train_config_problems(cfg)
    p = _range_problem("--nproc", nproc, OPTION_RANGES["nproc"]) if isinstance(nproc, int) else None
    if p:
        problems.append(p)
    if problems:
        raise ConfigError("\n".join(problems))
    if cfg.ssod.flip_teacher and not cfg.supervised and cfg.resume is None and cfg.aug.fliplr == 0:
        warn("cfg ssod.flip_teacher averages the teacher over mirror images, but aug.fliplr is 0 (data that is not "
             "mirror-symmetric, e.g. digits or text): the teacher never saw mirrored objects and its pseudo labels get "
             "worse; set ssod.flip_teacher: false, or aug.fliplr above 0 if "
             "your objects may appear mirrored")
    new = round_imgsz(cfg.imgsz)
    return cfg if new == cfg.imgsz else replace(cfg, imgsz=new)


def option_problems(**options: Any) -> list[str]:
    """Every problem of command options given by name (``labeled`` or a key of OPTION_RANGES; None = not given),
    one line each. ValueError for an option without a rule."""
    problems = []
    for name, value in options.items():
        if value is None:
            continue
        if name == "labeled":
            p = _labeled_problem(value)
        elif name in OPTION_RANGES:
            p = _range_problem(f"--{name.replace('_', '-')}", value, OPTION_RANGES[name])
        else:
            raise ValueError(f"no rule for option {name!r}")
        if p:
            problems.append(p)
    return problems


def check_numeric_options(params: Mapping[str, Any]) -> None:
    """Range-check every number among a command's parsed parameters (``ctx.params``; bools and None skipped), so
    a new numeric option is checked as soon as OPTION_RANGES has its rule. Raises one ConfigError for all."""
    numbers = {k: v for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    problems = option_problems(**numbers)
    if problems:
        raise ConfigError("\n".join(problems))


def check_options(**options: Any) -> dict[str, Any]:
    """Check command options by name (see option_problems). Raises one ConfigError for all problems; returns the
    options with ``imgsz`` rounded up to a multiple of the largest stride."""
    problems = option_problems(**options)
    if problems:
        raise ConfigError("\n".join(problems))
    out = dict(options)
    if out.get("imgsz") is not None:
        out["imgsz"] = round_imgsz(int(out["imgsz"]))
    return out
