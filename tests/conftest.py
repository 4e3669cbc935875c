"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from effteacher.data.sample import SampleConfig, generate


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny generated digit dataset (24 train / 6 val images at 96 px), one per test module."""
    root = tmp_path_factory.mktemp("tiny")
    return generate(root / "ds", SampleConfig(n_train=24, n_val=6, imgsz=96, min_digit=16, max_digit=40, max_digits=3),
                    progress=False)
