"""TensorBoard by default: event files with the results.csv columns, thresholds, hand-over and pictures; a resumed
run appends without repeating a step; --no-tensorboard writes none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.errors import EffTeacherError
from effteacher.train.results_csv import RESULTS_COLUMNS
from effteacher.train.tb_logger import TensorBoardLogger

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TINY = ["--imgsz", "64", "--batch", "8", "--workers", "0"]


def _train(args: list[str]) -> str:
    res = CliRunner().invoke(app, ["train", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output[-2000:]
    return res.output


def _read(run: Path):
    ea = event_accumulator.EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def _steps(ea, tag: str) -> list[int]:
    return [e.step for e in ea.Scalars(tag)]


def _csv_steps(run: Path) -> list[int]:
    lines = (run / "results.csv").read_text().splitlines()
    col = lines[0].split(",").index("train/steps")
    return [int(line.split(",")[col]) for line in lines[1:]]


@pytest.mark.slow
def test_ssod_run_logs_and_resume_appends(tiny_data, tmp_path):
    run = tmp_path / "ssod"
    _train(["--data", str(tiny_data), "--labeled", "50%", "--epochs", "3", "--burn-in", "1", *TINY,
            "--project", str(tmp_path), "--name", "ssod"])
    ea = _read(run)
    tags = ea.Tags()
    steps = _csv_steps(run)
    assert len(steps) == 3 and steps == sorted(set(steps))
    # losses and metrics of every epoch, against optimizer steps
    for tag in ("train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/mAP50", "metrics/mAP50-95", "lr",
                "epoch"):
        assert _steps(ea, tag) == steps, tag
    assert [e.value for e in ea.Scalars("epoch")] == [1.0, 2.0, 3.0]
    # SSOD epochs only: unsupervised losses, pseudo labels (reliable boxes per image, recall vs the hidden labels)
    for tag in ("unsup/box_loss", "pseudo/reliable", "pseudo/uncertain", "pseudo/recall", "pseudo/tau2"):
        assert _steps(ea, tag) == steps[1:], tag
    assert set(tags["scalars"]) <= set(RESULTS_COLUMNS) | {"train/hand_over"} | {
        t for t in tags["scalars"] if t.startswith("thresholds/")}
    names = [str(i) for i in range(10)]  # the digits
    for which in ("tau1", "tau2"):
        assert {f"thresholds/{which}/{n}" for n in names} <= set(tags["scalars"])
        assert _steps(ea, f"thresholds/{which}/{names[0]}") == steps[1:]
    # the hand-over at the end of burn-in: a scalar marking its step and the text
    assert [(e.step, e.value) for e in ea.Scalars("train/hand_over")] == [(steps[0], 1.0)]
    texts = ea.Tensors("train/hand_over/text_summary")
    assert [e.step for e in texts] == [steps[0]]
    assert b"burn-in done after 1 epochs" in texts[0].tensor_proto.string_val[0]
    # the pictures: train batches of the first epoch, pseudo batches of the first SSOD epoch
    images = set(tags["images"])
    assert "images/train_batch0" in images and "images/pseudo_batch0" in images
    assert [e.step for e in ea.Images("images/train_batch0")] == [steps[0]]
    assert [e.step for e in ea.Images("images/pseudo_batch0")] == [steps[1]]
    img = ea.Images("images/train_batch0")[0]
    assert img.width > 0 and img.height > 0

    _train(["--resume", str(run), "--epochs", "4", "--workers", "0"])
    ea = _read(run)
    steps = _csv_steps(run)
    assert len(steps) == 4
    for tag in ea.Tags()["scalars"]:
        got = _steps(ea, tag)
        assert all(a < b for a, b in zip(got, got[1:])), f"{tag}: {got}"
    assert _steps(ea, "train/box_loss") == steps
    assert _steps(ea, "pseudo/reliable") == steps[1:]
    assert len(ea.Scalars("train/hand_over")) == 1
    for tag in ea.Tags()["images"]:
        got = [e.step for e in ea.Images(tag)]
        assert len(got) == len(set(got)), f"{tag}: {got}"


@pytest.mark.slow
def test_no_tensorboard_writes_no_event_file(tiny_data, tmp_path):
    _train(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "1", *TINY, "--no-tensorboard",
            "--project", str(tmp_path), "--name", "off"])
    run = tmp_path / "off"
    assert (run / "results.csv").exists()
    assert not list(run.glob("events.out.tfevents.*"))


def test_killed_run_resumes_without_repeated_steps(tmp_path):
    """Events past last.pt's step (epochs a kill lost) are purged; the resumed run logs those steps once."""
    row = dict.fromkeys(RESULTS_COLUMNS)
    first = TensorBoardLogger(tmp_path, steps_done=0)
    for step in (2, 4, 6):  # epochs 1-3; say last.pt holds epoch 2 (step 4) when the run is killed
        first.epoch({**row, "train/steps": step, "epoch": step // 2, "train/box_loss": 1.0}, None, [])
    first.close()
    resumed = TensorBoardLogger(tmp_path, steps_done=4)
    resumed.epoch({**row, "train/steps": 6, "epoch": 3, "train/box_loss": 0.5},
                  (torch.tensor([0.1, 0.2]), torch.tensor([0.6, 0.7])), ["a", "b"])
    resumed.close()
    ea = _read(tmp_path)
    assert [(e.step, e.value) for e in ea.Scalars("train/box_loss")] == [(2, 1.0), (4, 1.0), (6, 0.5)]
    assert [e.value for e in ea.Scalars("thresholds/tau2/b")] == [pytest.approx(0.7)]
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


@pytest.mark.slow
def test_failed_first_epoch_closes_the_writer_and_removes_the_folder(tiny_data, tmp_path, monkeypatch):
    """A run failing after its writer opened still ends with its one error message and no run folder."""
    def fail(*args, **kwargs):
        raise EffTeacherError("boom in the first epoch")

    monkeypatch.setattr("effteacher.train.trainer.run_epoch", fail)
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%",
                                   "--epochs", "1", *TINY, "--project", str(tmp_path), "--name", "bad"])
    assert res.exit_code == 1 and "boom in the first epoch" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "bad").exists()
