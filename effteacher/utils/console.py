"""Rich console output: one place for info, warnings and errors."""

from __future__ import annotations

import functools

from rich.console import Console
from rich.markup import escape


@functools.lru_cache(maxsize=2)
def console(stderr: bool = False) -> Console:
    """The process's rich Console (created on first use, not at import).

    Off a terminal (piped, redirected, CI logs) lines are never wrapped, so long paths stay whole.
    """
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:
        c.soft_wrap = True
    return c


def info(msg: str) -> None:
    console().print(msg)


def warn(msg: str) -> None:
    console(stderr=True).print(f"[yellow]WARNING[/yellow] {escape(msg)}", markup=True, soft_wrap=True)


def error(msg: str) -> None:
    console(stderr=True).print(f"[red]ERROR[/red] {escape(msg)}", markup=True, soft_wrap=True)
