"""Reading user YAML files (dataset YAMLs, --cfg) with one-line errors that name the file, line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from effteacher.errors import EffTeacherError


def yaml_problem(path: str | Path, e: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: ``FILE: not valid YAML at line L, column C: <problem>; ...``, never the
    parser's multi-line excerpt."""
    mark = getattr(e, "problem_mark", None)
    problem = " ".join(str(getattr(e, "problem", None) or e).split())
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and cmark is not None and mark is not None and cmark.line != mark.line:
        problem += f" ({' '.join(str(context).split())} that starts at line {cmark.line + 1})"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{path}: not valid YAML{where}: {problem}; fix the syntax there"


def read_yaml(path: str | Path, error: type[EffTeacherError], what: str = "YAML file") -> Any:
    """The parsed contents of ``path``; ``error`` (one line naming the file) when it is missing, a folder,
    unreadable, not UTF-8 text or not valid YAML."""
    p = Path(path).expanduser()
    if not p.exists():
        raise error(f"{path}: {what} not found; check the path")
    if p.is_dir():
        raise error(f"{path}: is a folder; pass a {what}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file; pass a {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or type(e).__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(yaml_problem(path, e)) from None
