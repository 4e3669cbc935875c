"""train/run_folder.py: a failed start leaves no run folder behind."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.train.run_folder import discard_if_failed


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)


TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]


def _img(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


# ---------------------------------------------------------------------------------- 3. no litter
def test_discard_if_failed_removes_only_a_new_folder_without_checkpoint(tmp_path):
    new, ckpt = tmp_path / "exp", tmp_path / "exp2"
    for d in (new, ckpt):
        (d / "weights").mkdir(parents=True)
    (ckpt / "weights" / "last.pt").write_bytes(b"x")
    for d in (new, ckpt):
        with pytest.raises(RuntimeError), discard_if_failed(lambda d=d: d):
            raise RuntimeError("failed")
    assert not new.exists() and ckpt.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(KeyboardInterrupt), discard_if_failed(lambda: None):  # not created by the run
        raise KeyboardInterrupt
    with discard_if_failed(lambda: kept):  # no failure
        pass
    assert kept.exists()


def test_failed_starts_leave_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "bad"
    for split in ("train", "val"):
        for i in range(3):
            _img(root / "images" / split / f"{i}.jpg", seed=i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i}.txt").write_text("7 0.5 0.5 0.2 0.2\n")  # class 7 >= nc 2
    y = root / "d.yaml"
    y.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "names": ["a", "b"]}))
    runs = tmp_path / "runs"
    base = ["train", "--data", str(y), "--epochs", "1", *TINY, "--project", str(runs)]
    res = _invoke(base)  # fails in the scan, after the folder was made: it is removed again
    assert res.exit_code == 1 and "no usable labeled image" in res.output
    assert list(runs.glob("exp*")) == []
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not weights")
    res = _invoke([*base, "--weights", str(broken)])  # fails before the folder is made
    assert res.exit_code == 1 and "broken.pt" in res.output and list(runs.glob("exp*")) == []
    mine = runs / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    res = _invoke([*base, "--name", "mine", "--exist-ok"])  # an existing folder is never removed
    assert res.exit_code == 1 and (mine / "notes.txt").read_text() == "keep me"
