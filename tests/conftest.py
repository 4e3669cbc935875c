"""Shared test fixtures: one tiny dataset and one tiny trained SSOD run for the whole session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effteacher.data.sample import SampleConfig, generate

# The shared run's options: tests that read its checkpoint rely on them (fixed thresholds stored with the teacher).
SSOD_RUN_ARGS = ["--labeled", "25%", "--epochs", "2", "--burn-in", "1", "--thresholds", "fixed",
                 "--imgsz", "96", "--batch", "4", "--workers", "0"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated digit dataset (24 train / 6 val images at 96 px), shared by the session: read it only
    (training may add its label cache); a test that writes into a dataset takes ``tiny_data_copy``."""
    root = tmp_path_factory.mktemp("tiny")
    return generate(root / "ds", SampleConfig(n_train=24, n_val=6, imgsz=96, min_digit=16, max_digit=40, max_digits=3),
                    progress=False)


@pytest.fixture
def tiny_data_copy(tiny_data: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_data`` (its YAML) for a test that writes into the dataset."""
    dst = tmp_path / "tiny-copy"
    shutil.copytree(tiny_data.parent, dst)
    return dst / tiny_data.name


@pytest.fixture(scope="session")
def ssod_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch SSOD run on ``tiny_data`` (run folder) for tests that only read its checkpoints or split;
    a test that resumes, extends or needs other training options trains its own."""
    from effteacher.cli import app

    root = tmp_path_factory.mktemp("ssod-run")
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_data), *SSOD_RUN_ARGS, "--project", str(root),
                                   "--name", "ssod"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return root / "ssod"


_IN_SUBPROCESS = "EFFTEACHER_TEST_ISOLATED"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a test marked ``isolated`` in a fresh pytest process: the peer packages (ultralytics, yolov5) patch
    process-wide functions on import (PIL and OpenCV image readers, logging handlers) that later tests would meet."""
    if pyfuncitem.get_closest_marker("isolated") is None or os.environ.get(_IN_SUBPROCESS):
        return None
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-p", "no:cacheprovider", "-q"],
                         cwd=root, env={**os.environ, _IN_SUBPROCESS: "1"}, capture_output=True, text=True)
    if res.returncode == 5:
        pytest.fail(f"{pyfuncitem.nodeid}: collected nothing in the subprocess")
    if res.returncode != 0:
        pytest.fail(res.stdout[-6000:] + res.stderr[-2000:], pytrace=False)
    if " skipped" in res.stdout and " passed" not in res.stdout:
        pytest.skip("skipped in its subprocess: " + res.stdout.strip().splitlines()[-1])
    return True
