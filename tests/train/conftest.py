"""Fixtures of the train tests: one finished supervised run shared by the modules that only read it."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from effteacher.cli import app

TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]


@pytest.fixture(scope="session")
def finished(tiny_data, tmp_path_factory):
    """A finished 2-epoch supervised run validated every 2nd epoch: (run folder, CLI output); read it only."""
    tmp = tmp_path_factory.mktemp("fin")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"val_every": 2}))
    res = _invoke(["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "2", *TINY,
                   "--project", str(tmp), "--name", "run", "--cfg", str(cfg)])
    assert res.exit_code == 0, res.output
    return tmp / "run", res.output


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)
