"""last.pt: written after validated epochs, the hand-over and the end, otherwise at most every LAST_EVERY_S."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.train import checkpointer


@pytest.mark.slow
def test_last_pt_skips_short_unvalidated_epochs(tiny_data, tmp_path, monkeypatch):
    saved: list[int] = []
    real = checkpointer.save_checkpoint

    def spy(path, ckpt):
        if path.name == "last.pt":
            saved.append(int(ckpt["train_state"]["epoch"]))
        return real(path, ckpt)

    monkeypatch.setattr(checkpointer, "save_checkpoint", spy)
    monkeypatch.setattr(checkpointer, "LAST_EVERY_S", 1e9)  # no epoch is "long ago"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("val_every: 2\n")
    args = ["train", "--data", str(tiny_data), "--labeled", "50%", "--imgsz", "64", "--batch", "4", "--workers", "0",
            "--epochs", "5", "--burn-in", "3", "--cfg", str(cfg), "--project", str(tmp_path), "--name", "run"]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    # validated: 2, 4 (val_every) and 4, 5 (SSOD epochs); the hand-over: 3; the end: 5. Epoch 1 is skipped.
    assert saved == [2, 3, 4, 5]
    monkeypatch.setattr(checkpointer, "LAST_EVERY_S", 0.0)  # every epoch when each one is "long"
    saved.clear()
    res = CliRunner().invoke(app, [*args[:-1], "every"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert saved == [1, 2, 3, 4, 5]
    a, b = (list(csv.DictReader((tmp_path / n / "results.csv").read_text().splitlines())) for n in ("run", "every"))
    drop = {"time"}  # skipped saves change no number of the run
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b]
