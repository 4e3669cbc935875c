"""The command line itself: version and help at 80 columns."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from effteacher.cli import app


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_version_and_model_help_at_80_columns(monkeypatch):
    from effteacher.version import __version__

    res = _invoke(["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"effteacher {__version__}"
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    res = _invoke(["train", "--help"])
    assert "retina-r50" in res.output and "retina-r…" not in res.output
