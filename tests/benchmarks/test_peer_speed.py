"""benchmarks/peer_speed.py on tiny sizes: every model trains and predicts, GFLOPs from one counter, ratios quoted."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks import common, peer_speed


@pytest.mark.slow
@pytest.mark.isolated  # imports ultralytics and yolov5, which patch process-wide functions
def test_tiny_side_by_side(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    before = common.RESULTS.read_text()
    out = peer_speed.main(["--imgsz", "64", "--batch", "2", "--steps", "1", "--rounds", "2", "--no-record"])
    assert common.RESULTS.read_text() == before  # --no-record writes nothing
    names = [e.name for e in out["entries"]]
    assert names[:2] == ["effteacher n fp32", "effteacher n fp32 channels-last"]
    for e in out["entries"]:
        assert e.gflops > 0 and len(e.rates["train"]) == 2 and min(e.rates["train"]) > 0
        if e.predict is not None:
            assert min(e.rates["predict b1"]) > 0 and min(e.rates["predict b2"]) > 0
    peers = {"yolov5": "yolov5 7.0 n", "ultralytics": "ultralytics"}
    for pkg, name in peers.items():
        present = importlib.util.find_spec(pkg) is not None
        assert any(n.startswith(name) for n in names) is present
    if importlib.util.find_spec("yolov5") is not None:
        gf = {e.name: e.gflops for e in out["entries"]}
        # the same architecture counted by the same counter: the same GFLOPs (nc and anchors alike)
        assert gf["effteacher n fp32"] == pytest.approx(gf["yolov5 7.0 n"], rel=0.02)
        assert "x raw" in out["line"] and "x per GFLOP" in out["line"]
    assert set(out["engine"]) == {"engine fp32", "engine auto"}
    assert "CPU ISA" in capsys.readouterr().out


def test_record_quotes_the_default_precision_and_the_load(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The record compares fp32, the default precision and the fastest variant with each peer, per GFLOP, and says
    how loaded the machine was."""
    import argparse

    import torch

    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(peer_speed, "cpu_has_bf16", lambda: True)
    e = [peer_speed.Entry(n, torch.nn.Identity(), lambda: None, None, g, {"train": [r, r]})
         for n, g, r in (("effteacher n fp32", 4.0, 30.0), ("effteacher n bf16", 4.0, 45.0),
                         ("effteacher n bf16 channels-last", 4.0, 56.0), ("ultralytics", 8.0, 20.0))]
    args = argparse.Namespace(imgsz=64, batch=2, steps=1, rounds=2, threads=2, no_record=False, load0=0.25)
    out = peer_speed.report(e, {}, args)
    assert "bf16 vs ultralytics: 2.25x raw, 1.12x per GFLOP" in out["line"]
    assert "fp32 vs ultralytics" in out["line"] and "bf16 channels-last vs ultralytics" in out["line"]
    assert "load average (1 min) when the run started: 0.2 on" in (tmp_path / "RESULTS.md").read_text()
