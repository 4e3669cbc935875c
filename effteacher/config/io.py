"""Config round-trips: dicts, YAML files, dotted overrides, and the defaults a dataset YAML gives a run."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from effteacher.config.sections import AugmentConfig, LossConfig, OptimConfig, SchedConfig, SSODConfig
from effteacher.config.train import TrainConfig
from effteacher.errors import ConfigError
from effteacher.utils.yaml_io import read_yaml

BUNDLED = ("sample", "sample-large", "demo")  # the generated datasets --data names; their YAMLs ship in effteacher/data/
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data"


def bundled_yaml(name: str) -> Path:
    """The shipped YAML of a bundled dataset (``generate:`` plus its ``defaults:`` profile)."""
    return BUNDLED_DIR / f"{name}.yaml"


def dataset_yaml(data: str | None) -> Path | None:
    """The YAML a ``--data`` value names (a bundled name or a path), None when there is no such file."""
    data = "sample" if data is None else str(data)
    path = bundled_yaml(data) if data in BUNDLED else Path(data).expanduser()
    return path if path.is_file() else None


def dataset_defaults(data: str | None) -> dict[str, Any]:
    """The ``defaults:`` block of a dataset YAML (nested TrainConfig keys, like args.yaml); {} when it has none.

    A missing or unreadable dataset YAML gives {}: the dataset checks report it with the dataset's own message."""
    path = dataset_yaml(data)
    if path is None:
        return {}
    try:
        d = read_yaml(path, ConfigError, "dataset YAML")
    except ConfigError:
        return {}
    block = d.get("defaults") if isinstance(d, dict) else None
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: 'defaults' must be a mapping of config keys (like args.yaml), got a "
                          f"{type(block).__name__}")
    return block


def defaults_for(data: str | None) -> TrainConfig:
    """TrainConfig defaults for a dataset: TrainConfig's own, under the ``defaults:`` block of its YAML.

    data: a dataset YAML path or a bundled name ('sample', 'sample-large'); None = 'sample'."""
    block = dataset_defaults(data)
    if not block:
        return TrainConfig()
    try:
        return from_dict(_merge(to_dict(TrainConfig()), block))
    except ConfigError as e:
        raise ConfigError(f"{dataset_yaml(data)}: defaults: {e}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``, section by section (a partial section keeps the base's other keys)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out[k], **v} if k in _NESTED and isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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
    """args.yaml: every key of ``cfg``, nested sections as mappings."""
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
    """``--cfg``: the YAML's keys over the defaults of the dataset (its YAML's ``defaults:`` block).

    data: the dataset given on the command line; None uses the YAML's own ``data`` (else 'sample').
    A partial YAML (e.g. only ``ssod: {soft_cls: true}``) keeps every other default of that profile.
    """
    d = _read_mapping(path)
    base = to_dict(defaults_for(data if data is not None else d.get("data", "sample")))
    try:
        return from_dict(_merge(base, d))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
