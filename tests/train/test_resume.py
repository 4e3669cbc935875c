"""Resume: `train --resume RUN --epochs N` extends a finished run by exactly the asked epochs for every schedule;
a finished run is left unchanged; the optimizer is kept."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.config import TrainConfig, replace
from effteacher.train.optim import build_optimizer
from effteacher.train.schedule import EpochPlan
from effteacher.train.optim import run_optimizer

TINY = ["--imgsz", "64", "--batch", "8", "--workers", "0"]
SHORT_SCHED = "sched: {min_steps: 2, max_steps: 6, patience_steps: 2, val_steps: 1}\n"


def _train(args: list[str]) -> str:
    res = CliRunner().invoke(app, ["train", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _epochs(run: Path) -> list[int]:
    with open(run / "results.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _last(run: Path) -> dict:
    return torch.load(run / "weights/last.pt", weights_only=True)


def _assert_extended(run: Path, out: str, before: int, asked: int) -> None:
    """The resumed run trained epochs before+1..asked once each and says so."""
    assert f"resuming {run} from epoch {before + 1} of {asked}" in " ".join(out.split())
    assert _epochs(run) == list(range(1, asked + 1))
    last = _last(run)
    assert last["epoch"] == last["train_state"]["epoch"] == asked
    assert last["train_state"]["finished"]


@pytest.mark.slow
def test_extend_supervised_fixed_run(tiny_data, tmp_path):
    run = tmp_path / "sup"
    _train(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "2", *TINY,
            "--project", str(tmp_path), "--name", "sup"])
    assert _epochs(run) == [1, 2]
    out = _train(["--resume", str(run / "weights/last.pt"), "--epochs", "3", "--workers", "0"])
    _assert_extended(run, out, 2, 3)
    out = _train(["--resume", str(run), "--epochs", "4", "--workers", "0"])
    _assert_extended(run, out, 3, 4)


@pytest.mark.slow
def test_extend_fixed_ssod_run(tiny_data, tmp_path):
    run = tmp_path / "ssod"
    _train(["--data", str(tiny_data), "--labeled", "50%", "--epochs", "3", "--burn-in", "1", "--thresholds", "fixed",
            *TINY, "--project", str(tmp_path), "--name", "ssod"])
    assert _epochs(run) == [1, 2, 3]
    out = _train(["--resume", str(run), "--epochs", "5", "--workers", "0"])
    _assert_extended(run, out, 3, 5)
    last = _last(run)
    assert last["which"] == "teacher" and last["train_state"]["burn_epochs"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--burn-in", "auto"], ["--supervised"]], ids=["ssod", "supervised"])
def test_extend_auto_schedule_run(tiny_data, tmp_path, mode):
    cfg = tmp_path / "sched.yaml"
    cfg.write_text(SHORT_SCHED)
    run = tmp_path / "auto"
    _train(["--data", str(tiny_data), "--labeled", "50%", *mode, "--epochs", "0", "--cfg", str(cfg), *TINY,
            "--project", str(tmp_path), "--name", "auto"])
    done = len(_epochs(run))
    burn = _last(run)["train_state"]["burn_epochs"]
    assert burn is not None and 1 <= burn <= done
    out = _train(["--resume", str(run), "--epochs", str(done + 2), "--workers", "0"])
    _assert_extended(run, out, done, done + 2)
    assert _last(run)["train_state"]["burn_epochs"] == (burn if "--burn-in" in mode else done + 2)


def test_plan_resume_keeps_a_fixed_end_and_takes_an_auto_decision():
    sup = EpochPlan(replace(TrainConfig(), supervised=True, epochs=5), ssod=False, nb_burn=4, nb_ssod=4)
    sup.resume(2)  # the 2-epoch run it extends
    assert (sup.burn, sup.end, sup.last_epoch()) == (5, 5, 5)
    auto = EpochPlan(replace(TrainConfig(), burn_in="auto", epochs=9), ssod=True, nb_burn=4, nb_ssod=4)
    assert auto.burn is None
    auto.resume(2)
    assert (auto.burn, auto.end) == (2, 9)
    assert auto.lr_span == (-(-(2 * 4 + 7 * 4) // auto.accumulate), -(-(2 * 4) // auto.accumulate))
    auto.resume(None)  # still undecided when it stopped: nothing to take over
    assert auto.burn == 2


@pytest.mark.parametrize("name, lr0", [("sgd", 0.01), ("adamw", 0.002)])
def test_resumed_run_keeps_its_optimizer(name, lr0):
    """optim.optimizer auto picks by planned iterations, which grow on --epochs: the saved state decides."""
    optim = replace(TrainConfig().optim, optimizer=name, lr0=lr0)
    opt = build_optimizer(torch.nn.Conv2d(3, 4, 3), optim, 8)
    LambdaLR(opt, lambda x: 1.0)
    assert run_optimizer({"optimizer": opt.state_dict()}) == (name, pytest.approx(lr0))
    assert run_optimizer({}) is None


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ 4. resume edges
@pytest.mark.slow
def test_resume_a_finished_run_says_so_and_changes_nothing(finished):
    run, _ = finished
    assert torch.load(run / "weights/last.pt", weights_only=True)["train_state"]["finished"] is True
    before = _snapshot(run)
    res = _invoke(["train", "--resume", str(run)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "is finished (2 epochs)" in text and f"--resume {run} --epochs 3" in text
    assert "resuming" not in text and "Class" not in text  # no training, no validation
    assert _snapshot(run) == before


@pytest.mark.slow
@pytest.mark.parametrize("epochs", ["1", "2"])
def test_resume_with_epochs_at_or_below_done_is_an_error(finished, epochs):
    run, _ = finished
    before = _snapshot(run)
    res = _invoke(["train", "--resume", str(run), "--epochs", epochs])
    assert res.exit_code == 1
    assert f"--epochs {epochs}: {run} has already trained 2 epochs" in " ".join(res.output.split())
    assert _snapshot(run) == before


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)
