"""Fixtures of the labeling tests: the shared SSOD run with a checkpoint that detects, and unlabeled images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml


def _hot_checkpoint(src: Path, dst: Path) -> Path:
    """``src`` with head biases raised so that the model detects without minutes of training: every P5 anchor
    confident (reliable at the default tau2 0.6), every P4 anchor unsure (between tau1 and tau2), P3 silent."""
    ck = torch.load(src, weights_only=True)
    ck.pop("train_state", None)
    sd = {k: v.clone() for k, v in ck["state_dict"].items()}
    for level, (obj, cls) in {0: (-10.0, 0.0), 1: (5.0, 2.5), 2: (8.0, 4.0)}.items():
        b = sd[f"head.{level}.bias"].view(3, -1)
        b[:, 4] += obj
        b[:, 5:] += cls
    ck["state_dict"] = sd
    torch.save(ck, dst)
    return dst


@pytest.fixture(scope="module")
def loop(tiny_data, ssod_run, tmp_path_factory) -> dict[str, Path]:
    """The shared dataset (+ a YAML with 'unlabeled' images), a copy of the shared 2-epoch SSOD run and a detecting
    checkpoint in its folder (rank reads the run's split beside the weights)."""
    root = tmp_path_factory.mktemp("loop")
    ds = tiny_data.parent
    extra = root / "extra"
    extra.mkdir()
    for i, f in enumerate(sorted((ds / "images" / "val").glob("*.jpg"))[:4]):
        shutil.copy(f, extra / f"u{i}.jpg")
    d = yaml.safe_load(tiny_data.read_text())
    yu = root / "with_unlabeled.yaml"
    yu.write_text(yaml.safe_dump({**d, "path": str(ds), "unlabeled": str(extra)}))
    run = shutil.copytree(ssod_run, root / "runs" / "ssod")
    hot = _hot_checkpoint(run / "weights" / "best.pt", run / "weights" / "hot.pt")
    return {"ds": ds, "yaml": tiny_data, "yaml_u": yu, "run": run, "hot": hot, "extra": extra}
