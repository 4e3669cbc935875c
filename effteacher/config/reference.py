"""The configuration reference (docs/configuration.md), generated from the config field metadata."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from effteacher.config.commands import COMMAND_OPTIONS
from effteacher.config.fields import Leaf, leaves, meta, show
from effteacher.config.train import TrainConfig

REGENERATE = "python -m effteacher.config > docs/configuration.md"


def _type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(map(str, args))
    if origin is tuple and args[-1] is Ellipsis:
        return f"list of {_type(args[0])}s"
    if origin is tuple:
        return f"list of {len(args)} {_type(args[0])}s"
    if args:
        return " or ".join("null" if a is type(None) else _type(a) for a in args)
    return {bool: "bool", int: "int", float: "float", str: "text"}.get(tp, str(tp))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") if "\\|" not in c else c for c in cells) + " |"


def reference_markdown() -> str:
    """Every TrainConfig key (type, default, range, flag, help), section by section, then every command's options,
    as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        f"<!-- generated from the config field metadata by `{REGENERATE}`; do not edit by hand -->",
        "",
        "Every key of `effteacher train`: the keys of `--cfg` YAML files and of `args.yaml`, nested by section "
        "(`optim: {lr0: 0.002}`). A dataset YAML may give its own defaults in a `defaults:` block of the same "
        "form (the bundled `sample` and `sample-large` do); `--cfg` overrides those, and flags override both.",
    ]
    top = [f for f in dataclasses.fields(TrainConfig)]
    groups: list[tuple[str, str, str]] = [("", "Run", "Top-level keys.")]
    groups += [(f"{f.name}.", f"`{f.name}`", meta(f).help) for f in top if dataclasses.is_dataclass(f.default_factory)]
    for prefix, title, about in groups:
        lines += ["", f"## {title}", "", about, "", "| key | type | default | range | flag | description |",
                  "|---|---|---|---|---|---|"]
        for leaf in leaves(TrainConfig):
            rest = leaf.key[len(prefix):]
            if not leaf.key.startswith(prefix) or "." in rest:
                continue
            lines.append(_leaf_row(leaf, rest))
    lines += ["", "## Command options", "",
              "The options of the other commands (and train's launch options), from the same metadata. Settings "
              "without a flag are keyword arguments of the command's Python function only (`run_export(w, "
              "workspace=8.0)`)."]
    for command, cls in COMMAND_OPTIONS.items():
        lines += ["", f"### `effteacher {command}`", "", cls.__doc__ or "", "",
                  "| option | type | default | range | flag | description |", "|---|---|---|---|---|---|"]
        lines += [_leaf_row(leaf, leaf.key) for leaf in leaves(cls)]
    return "\n".join(lines) + "\n"


def _leaf_row(leaf: Leaf, key: str) -> str:
    m = leaf.meta
    rng = (m.range.describe() + (f" ({m.range.hint})" if m.range.hint else "")) if m.range else ""
    return _row([f"`{key}`", _type(leaf.type), f"`{show(leaf.default)}`", rng, f"`{m.flag}`" if m.flag else "",
                 m.help])
