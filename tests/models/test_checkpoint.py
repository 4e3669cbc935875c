"""Checkpoints: round trip, plain content, and one clear CheckpointError per kind of bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from effteacher.config import TrainConfig, to_dict
from effteacher.models.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from effteacher.errors import CheckpointError
from effteacher.models.build import build_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("n", nc=2).eval()


@pytest.mark.slow
def test_round_trip(tmp_path: Path, model: torch.nn.Module) -> None:
    ckpt = make_checkpoint(model, ["cat", "dog"], 128, "teacher", 3, {"metrics/mAP50": np.float32(0.5)},
                           TrainConfig(), extra={"note": (1, Path("a/b"))})
    path = save_checkpoint(tmp_path / "w" / "best.pt", ckpt)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))  # atomic: no temp file left
    loaded = load_checkpoint(path)
    assert loaded["format"] == "effteacher" and loaded["format_version"] == FORMAT_VERSION
    assert loaded["model"]["names"] == ["cat", "dog"] and loaded["model"]["imgsz"] == 128
    assert loaded["model"]["variant"] == "n" and loaded["model"]["nc"] == 2
    assert loaded["which"] == "teacher" and loaded["epoch"] == 3
    assert loaded["metrics"]["metrics/mAP50"] == pytest.approx(0.5)
    assert loaded["args"] == to_dict(TrainConfig())
    assert loaded["note"] == [1, "a/b"]
    assert set(loaded["versions"]) == {"effteacher", "torch", "python"}
    rebuilt = model_from_checkpoint(loaded, "cpu")
    assert not rebuilt.training
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x)):
            torch.testing.assert_close(a, b)
    # anchors travel with the checkpoint
    torch.testing.assert_close(rebuilt.anchors, model.anchors)


def test_make_checkpoint_rejects_objects_and_bad_which(model: torch.nn.Module) -> None:
    with pytest.raises(TypeError, match="value opt has type object"):
        make_checkpoint(model, ["a", "b"], 64, "model", 0, {}, {}, extra={"opt": object()})
    with pytest.raises(ValueError, match="which"):
        make_checkpoint(model, ["a", "b"], 64, "best", 0, {}, {})
    with pytest.raises(ValueError, match="names"):
        make_checkpoint(model, ["a"], 64, "model", 0, {}, {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path: Path, model: torch.nn.Module) -> None:
    path = save_checkpoint(tmp_path / "last.pt", make_checkpoint(model, ["a", "b"], 64, "model", 0, {}, {}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(path)


def test_truncated_message_is_whole_and_points_elsewhere(tmp_path: Path, model: torch.nn.Module) -> None:
    """A cut last.pt: one whole sentence (no torch internals cut mid-word) that suggests best.pt, not last.pt."""
    w = tmp_path / "exp" / "weights"
    ck = make_checkpoint(model, ["a", "b"], 64, "model", 0, {}, {})
    data = save_checkpoint(w / "last.pt", ck).read_bytes()
    save_checkpoint(w / "best.pt", ck)
    (w / "last.pt").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(w / "last.pt")
    msg = str(e.value)
    assert msg.startswith(f"{w / 'last.pt'}: the PyTorch file is truncated or corrupt")
    assert f"use {w / 'best.pt'} instead" in msg and msg.count("last.pt") == 1
    assert "miniz" not in msg and "\n" not in msg
    (w / "best.pt").unlink()
    with pytest.raises(CheckpointError, match="re-copy it or re-train$"):
        load_checkpoint(w / "last.pt")


def test_plain_state_dict(tmp_path: Path, model: torch.nn.Module) -> None:
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="plain state_dict"):
        load_checkpoint(path)


def test_foreign_pickle(tmp_path: Path) -> None:
    # a pickled python object (as ultralytics/YOLOv5 .pt files hold): refused by weights_only
    path = tmp_path / "yolo.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="not an effteacher checkpoint"):
        load_checkpoint(path)


def test_wrong_format_and_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format": "yolov5", "model": {}}, path)
    with pytest.raises(CheckpointError, match="not an effteacher checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "effteacher", "format_version": FORMAT_VERSION + 1, "model": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_state_dict_mismatch(model: torch.nn.Module) -> None:
    ckpt = make_checkpoint(model, ["a", "b"], 64, "model", 0, {}, {})
    ckpt["model"]["nc"] = 5
    with pytest.raises(CheckpointError, match="does not match"):
        model_from_checkpoint(ckpt)


def test_junk_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    for data in (b"junk\n", bytes(range(256)) * 4, np.random.default_rng(0).bytes(4096)):
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=str(path.name)) as e:
            load_checkpoint(path)
        assert "not a PyTorch checkpoint" in str(e.value) and "pickled" not in str(e.value)


def test_first_line_never_cuts_a_word() -> None:
    from effteacher.models.checkpoint import first_line

    long = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an "
                        "internal miniz error. If you are seeing this error, the file is probably corrupted.")
    assert first_line(long) == "PytorchStreamReader failed reading zip archive: failed finding central directory"
    words = RuntimeError(" ".join(["abcdefghij"] * 30))
    out = first_line(words)
    assert len(out) <= 120 and out.endswith("abcdefghij...")
