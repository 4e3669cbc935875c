"""The inert unpickler: pickles that would run code are refused and run nothing; allowed content comes back inert."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.models.checkpoint import load_checkpoint
from effteacher.errors import CheckpointError
from effteacher.models.yolov5_import import import_yolov5
from effteacher.utils.safe_pickle import NotATorchZip, Record, RefusedGlobal, load_inert, walk_records


class _System:
    """Unpickling calls os.system(cmd)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return subprocess.Popen, (["touch", str(self.marker)],)


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


def _payloads(marker: Path) -> dict[str, object]:
    return {"os.system": _System(f"touch {marker}"), "subprocess": _Popen(marker), "eval": _Eval(marker)}


def test_payload_is_live_under_plain_torch_load(tmp_path: Path) -> None:
    # control: the same kind of file really runs its command when loaded the unsafe way
    marker = tmp_path / "ran"
    torch.save({"model": _System(f"touch {marker}"), "epoch": 1}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "subprocess", "eval"])
def test_code_running_pickles_are_refused_and_run_nothing(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "yolov5s.pt"
    torch.save({"model": _payloads(marker)[kind], "epoch": 1, "weights": torch.ones(2)}, path)
    with pytest.raises(RefusedGlobal):
        load_inert(path)
    for load in (load_checkpoint, import_yolov5):
        with pytest.raises(CheckpointError, match=r"yolov5s\.pt: refused: the file asks to import or call"):
            load(path)
    res = CliRunner().invoke(app, ["convert", str(path)])
    assert res.exit_code == 1 and "refused" in res.output
    res = CliRunner().invoke(app, ["val", "--weights", str(path)])
    assert res.exit_code == 1 and "refused" in res.output
    assert not marker.exists()


def test_plain_pickle_and_torchscript_are_not_read(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _System(f"touch {marker}")}, f)
    with pytest.raises(NotATorchZip, match="not a zip-format"):
        load_inert(path)
    with pytest.raises(CheckpointError, match="legacy.pt"):
        load_checkpoint(path)
    ts = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), ts)
    with pytest.raises(NotATorchZip, match="TorchScript"):
        load_inert(ts)
    assert not marker.exists()


def test_refuses_torch_internals_that_load_more_pickles(tmp_path: Path) -> None:
    # torch.storage._load_from_bytes runs an unrestricted torch.load on embedded bytes
    class _Nested:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (b"x",)

    path = tmp_path / "nested.pt"
    torch.save({"model": _Nested()}, path)
    with pytest.raises(RefusedGlobal, match="_load_from_bytes"):
        load_inert(path)


def test_ultralytics_8_checkpoint_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("ultralytics.nn.tasks")
    cls = type("DetectionModel", (), {"__module__": "ultralytics.nn.tasks"})
    mod.DetectionModel = cls
    for name in ("ultralytics", "ultralytics.nn"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "ultralytics.nn.tasks", mod)
    path = tmp_path / "yolov5su.pt"
    torch.save({"model": cls(), "train_args": {}}, path)
    with pytest.raises(CheckpointError, match=r"yolov5su\.pt: an ultralytics 8\.x checkpoint.*anchor-free"):
        load_checkpoint(path)


def test_allowed_content_comes_back_inert(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).half()
    path = tmp_path / "m.pt"
    torch.save({"model": model, "od": OrderedDict(a=1), "s": {1, 2}, "b": b"\x00\xff", "t": torch.arange(3)}, path)
    obj = load_inert(path)
    rec = obj["model"]
    assert isinstance(rec, Record) and rec.qualname == "torch.nn.modules.container.Sequential"
    conv = rec.get("_modules")["0"]
    assert conv.type_name == "Conv2d" and conv.get("kernel_size") == (3, 3)
    w = conv.get("_parameters")["weight"]
    assert w.dtype == torch.float16 and torch.equal(w, model[0].weight.detach())
    assert obj["od"] == OrderedDict(a=1) and obj["s"] == {1, 2} and obj["b"] == b"\x00\xff"
    assert torch.equal(obj["t"], torch.arange(3))
    assert {r.type_name for r in walk_records(obj)} == {"Sequential", "Conv2d", "BatchNorm2d"}


def test_non_yolo_pickle_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not an effteacher checkpoint nor a YOLOv5 one.*Linear"):
        load_checkpoint(path)


def test_getattr_only_names_inert_records(tmp_path: Path) -> None:
    # pickled methods arrive as getattr(Class, "name"): fine on a record class, refused on anything real
    class _Reach:
        def __reduce__(self):
            return getattr, (torch.nn.Module, "__init__")

    class _Globals:
        def __reduce__(self):
            return getattr, (OrderedDict, "fromkeys")

    path = tmp_path / "m.pt"
    torch.save({"fwd": torch.nn.Conv2d.forward}, path)
    fwd = load_inert(path)["fwd"]
    assert isinstance(fwd, type) and issubclass(fwd, Record) and fwd.qualname == "torch.nn.modules.conv.Conv2d.forward"
    torch.save({"x": _Globals()}, path)
    with pytest.raises(RefusedGlobal, match="getattr"):
        load_inert(path)
    torch.save({"x": _Reach()}, path)  # torch.nn.Module itself resolves to a record; its __init__ is a name only
    assert issubclass(load_inert(path)["x"], Record)


def _weights_commands(data: Path, evil: Path, out: Path) -> dict[str, list[str]]:
    """Every command that reads a weights file, given ``evil`` as its weights (outputs under ``out``)."""
    images = str(data.parent / "images" / "val")
    tiny = ["--imgsz", "64", "--workers", "0"]
    return {
        "train": ["train", "--data", str(data), "--weights", str(evil), "--epochs", "1", "--batch", "4", *tiny,
                  "--project", str(out), "--name", "run"],
        "val": ["val", "--weights", str(evil), "--data", str(data), *tiny, "--project", str(out)],
        "predict": ["predict", images, "--weights", str(evil), "--imgsz", "64", "--project", str(out)],
        "export": ["export", "--weights", str(evil), "--imgsz", "64"],
        "convert": ["convert", str(evil), "--output", str(out / "converted.pt")],
        "pseudo": ["pseudo", images, "--weights", str(evil), *tiny, "--project", str(out)],
        "rank": ["rank", "--weights", str(evil), "--data", str(data), *tiny, "--project", str(out)],
    }


@pytest.mark.parametrize("command", ["train", "val", "predict", "export", "convert", "pseudo", "rank"])
def test_every_command_that_takes_weights_refuses_a_malicious_pickle(tiny_data: Path, tmp_path: Path,
                                                                     command: str) -> None:
    marker = tmp_path / "pwned"
    wdir = tmp_path / "weights"
    wdir.mkdir()
    evil = wdir / "yolov5s.pt"
    torch.save({"model": _System(f"touch {marker}"), "epoch": 1}, evil)
    before = evil.read_bytes()
    out = tmp_path / "out"
    res = CliRunner().invoke(app, _weights_commands(tiny_data, evil, out)[command])
    assert res.exit_code == 1, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "yolov5s.pt" in errors[0] and "refused" in errors[0], res.output
    assert "Traceback" not in res.output
    assert not marker.exists()  # the payload never ran
    assert sorted(p.name for p in wdir.iterdir()) == ["yolov5s.pt"] and evil.read_bytes() == before
    assert not out.exists() or not any(out.iterdir())  # no run folder, no converted or exported file
