"""The check command: exit code, orphan images and labels, bad label rows."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from effteacher.cli import app


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)


def _img(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


# ------------------------------------------------------------------------------- 5. check command
@pytest.mark.slow
def test_check_exit_code_orphans_and_bad_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COLUMNS", raising=False)  # piped output at rich's default 80 columns: no wrapping
    root = tmp_path / ("a_rather_long_folder_name_for_a_dataset_" * 3) / "data"
    lbl = root / "labels" / "train"
    for split in ("train", "val"):
        for i in range(3):
            _img(root / "images" / split / f"{i}.jpg", seed=i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (lbl / "1.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.3 0.3 0.1 0.1\n1 0.2 0.2 0.1 0.1\n")  # row 2: class 5 >= nc 2
    (lbl / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # no image
    (lbl / "classes.txt").write_text("a\nb\n")  # written by labelling tools: not a label file
    y = root / "d.yaml"
    y.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "names": ["a", "b"]}))
    res = _invoke(["check", "--data", str(y)])
    assert res.exit_code == 1
    out = res.output
    assert f"{lbl / '1.txt'}:2: class 5 >= nc 2; row skipped (the image's other boxes are kept)" in out
    assert f"{lbl / 'ghost.txt'}: label file without an image (no ghost.* image in {root / 'images' / 'train'})" in out
    assert "classes.txt" not in out
    assert "2 problems (1 label files without an image)" in out and "ERROR" in out
    assert "train: 3 images, 0 backgrounds, 0 corrupt, 1 bad rows skipped" in out  # image 1 kept
    (lbl / "ghost.txt").unlink()
    (lbl / "1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    res = _invoke(["check", "--data", str(y)])
    assert res.exit_code == 0, res.output
    assert "0 problems" in res.output
