"""The trainer's parts: a supervised run carries no SSOD state, the hand-over swaps phases, checkpoints keep one layout."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.config import TrainConfig, replace
from effteacher.ssod.class_gate import ClassGate
from effteacher.ssod.thresholds import build_thresholds
from effteacher.train.phases import SSODPhase, SupervisedPhase, run_epoch
from effteacher.train.ssod_state import SSOD_STATE_KEYS
from effteacher.train.trainer import Trainer
from effteacher.utils.dist import DistContext

TINY = ["--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu"]


def _trainer(data: Path, project: Path, **changes: object) -> Trainer:
    cfg = replace(TrainConfig(), data=str(data), imgsz=64, batch=4, workers=0, device="cpu", project=str(project),
                  **changes)
    tr = Trainer(cfg, DistContext.from_env("cpu"))
    tr.setup()
    return tr


def _train(args: list[str]) -> None:
    res = CliRunner().invoke(app, ["train", *args, *TINY], catch_exceptions=False)
    assert res.exit_code == 0, res.output[-2000:]


def test_supervised_run_has_no_ssod_state(tiny_data, tmp_path):
    tr = _trainer(tiny_data, tmp_path, name="sup", supervised=True, labeled="50%", epochs=2)
    try:
        assert tr.parts.ssod is None
        assert all(isinstance(tr.phase_for(e), SupervisedPhase) for e in range(2))
        state = tr.checkpointer.train_state(0, finished=False)
        assert all(state[k] is None for k in SSOD_STATE_KEYS)
        assert tr.checkpointer.which(2) == "ema"
    finally:
        tr.run_lock.release()


def test_hand_over_swaps_phases_once(tiny_data, tmp_path):
    tr = _trainer(tiny_data, tmp_path, name="ssod", labeled="25%", epochs=3, burn_in=1)
    try:
        parts = tr.parts
        assert parts.ssod is not None and parts.plan.burn == 1
        burn_in = tr.phase_for(0)
        assert isinstance(burn_in, SupervisedPhase)
        run_epoch(burn_in, parts, 0, show=False)
        ema = {k: v.clone() for k, v in parts.ema.module.state_dict().items()}
        assert any(not torch.equal(ema[k], v) for k, v in parts.model.state_dict().items() if v.is_floating_point())
        ssod = tr.phase_for(1)
        assert isinstance(ssod, SSODPhase) and ssod.loader() is parts.ssod.unlabeled.loader
        student = parts.model.state_dict()
        assert all(torch.equal(student[k], ema[k]) for k in ema)  # the student starts SSOD from the EMA
        assert tr.phase_for(2) is ssod  # no second hand-over
        assert tr.checkpointer.which(1) == "teacher" and tr.checkpointer.which(0) == "ema"
    finally:
        tr.run_lock.release()


def test_checkpoints_keep_one_layout_and_teacher_thresholds(tiny_data, tmp_path):
    _train(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "1", "--project", str(tmp_path),
            "--name", "sup"])
    _train(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "2", "--burn-in", "1",
            "--project", str(tmp_path), "--name", "ssod"])
    sup = torch.load(tmp_path / "sup/weights/last.pt", weights_only=True)
    ssod = torch.load(tmp_path / "ssod/weights/last.pt", weights_only=True)
    assert sorted(sup["train_state"]) == sorted(ssod["train_state"])
    assert all(sup["train_state"][k] is None for k in SSOD_STATE_KEYS)
    assert ssod["train_state"]["thresholds"] is not None and ssod["train_state"]["class_gate"] is not None
    assert "pseudo_thresholds" not in sup and ssod["which"] == "teacher"
    assert len(ssod["pseudo_thresholds"]["tau1"]) == len(ssod["model"]["names"])
    burn = torch.load(tmp_path / "ssod/weights/burn_in.pt", weights_only=True)
    assert burn["train_state"]["epoch"] == 1 and burn["which"] == "teacher"  # the EMA becomes the teacher
    assert not (tmp_path / "sup/weights/burn_in.pt").exists()


def test_supervised_checkpoint_with_threshold_state_resumes(tiny_data, tmp_path):
    """Supervised last.pt files written before SSOD state had one owner hold real thresholds: they still resume."""
    _train(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "1", "--project", str(tmp_path),
            "--name", "old"])
    last = tmp_path / "old/weights/last.pt"
    ck = torch.load(last, weights_only=True)
    nc = len(ck["model"]["names"])
    ck["train_state"]["thresholds"] = build_thresholds("fixed", nc=nc).state_dict()
    ck["train_state"]["class_gate"] = ClassGate(nc).state_dict()
    torch.save(ck, last)
    res = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "old"), "--epochs", "2", "--workers", "0",
                                   "--device", "cpu"], catch_exceptions=False)
    assert res.exit_code == 0, res.output[-2000:]
    after = torch.load(last, weights_only=True)["train_state"]
    assert after["epoch"] == 2 and after["thresholds"] is None
