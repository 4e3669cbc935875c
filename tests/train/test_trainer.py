"""End-to-end training through the CLI on a tiny generated dataset: outputs, SSOD, resume, DDP, errors, --verbose."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from effteacher.cli import app

TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]


def _train(args: list[str]) -> object:
    res = CliRunner().invoke(app, ["train", *args], catch_exceptions=False)
    return res


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_supervised_run_writes_every_output(tiny_data, tmp_path):
    res = _train(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "2", *TINY,
                  "--project", str(tmp_path), "--name", "sup"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "sup"
    for f in ["weights/last.pt", "weights/best.pt", "args.yaml", "results.csv", "results.png", "labels.jpg",
              "train_batch0.jpg", "split/labeled.txt", "split/unlabeled.txt", "predictions.json"]:
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
    assert list(run.glob("*PR*")) and list(run.glob("*onfusion*"))
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        assert 0.0 <= float(r["metrics/mAP50-95"]) <= float(r["metrics/mAP50"]) <= 1.0
        assert float(r["train/box_loss"]) > 0
    best = torch.load(run / "weights/best.pt", weights_only=True)
    assert best["format"] == "effteacher" and best["which"] == "ema" and "train_state" not in best
    assert best["model"]["names"] == [str(i) for i in range(10)]
    assert len((run / "split/labeled.txt").read_text().split()) == 12


@pytest.mark.slow
def test_ssod_run_pseudo_outputs_and_extend(tiny_data, tmp_path):
    res = _train(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "2", "--burn-in", "1", *TINY,
                  "--project", str(tmp_path), "--name", "ssod", "--thresholds", "fixed"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "ssod"
    assert (run / "pseudo_batch0.jpg").is_file()
    rows = _rows(run)
    assert len(rows) == 2 and float(rows[1]["unsup/obj_loss"]) > 0.0
    for k in ("unsup/obj_loss", "pseudo/reliable", "pseudo/tau2", "unsup/da_loss"):
        assert rows[0][k] == "", k  # burn-in epoch: not measured, an empty cell (not 0)
    assert rows[1]["unsup/da_loss"] == ""  # no domain adaptation: nothing measured
    assert float(rows[0]["train/steps"]) < float(rows[1]["train/steps"])
    for k in ("pseudo/precision", "pseudo/recall", "pseudo/precision_agnostic"):
        assert rows[1][k] == "" or 0.0 <= float(rows[1][k]) <= 1.0, k  # empty: no reliable pseudo box
    best = torch.load(run / "weights/best.pt", weights_only=True)
    last = torch.load(run / "weights/last.pt", weights_only=True)
    assert last["which"] == "teacher" and "thresholds" in last["train_state"]
    assert best["which"] in ("teacher", "ema")
    # --resume with more epochs extends a finished run, reusing its split
    split_before = (run / "split/labeled.txt").read_text()
    res = _train(["--resume", str(run), "--epochs", "3", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2, 3]
    assert (run / "split/labeled.txt").read_text() == split_before


@pytest.mark.slow
def test_sigkill_then_resume_completes(tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "effteacher", "train", "--data", str(tiny_data), "--supervised", "--labeled", "50%",
           "--epochs", "4", *TINY, "--project", str(tmp_path), "--name", "kill"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    run = tmp_path / "kill"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "weights/last.pt").exists() and (run / "results.csv").exists() and len(_rows(run)) >= 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(_rows(run))
    assert done < 4
    torch.load(run / "weights/last.pt", weights_only=True)  # never a broken file
    assert (run / ".lock").is_file()  # the killed run's lock file stays, unlocked: it must not block --resume
    res = subprocess.run([sys.executable, "-m", "effteacher", "train", "--resume", str(run), "--workers", "0"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2, 3, 4]
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_ddp_gloo_two_processes(tiny_data, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "effteacher", "train", "--data", str(tiny_data), "--supervised", "--labeled", "50%",
         "--epochs", "1", *TINY, "--device", "cpu", "--nproc", "2", "--project", str(tmp_path), "--name", "ddp"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [p.name for p in runs] == ["ddp"]  # one set of outputs, written by rank 0
    rows = _rows(tmp_path / "ddp")
    assert len(rows) == 1 and 0.0 <= float(rows[0]["metrics/mAP50"]) <= 1.0
    torch.load(tmp_path / "ddp/weights/best.pt", weights_only=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "q"], "unknown model 'q'"),
        (["--data", "missing.yaml"], "missing.yaml"),
        (["--device", "7"], "device 7"),
        (["--labeled", "0%"], "0%"),
    ],
)
def test_bad_arguments_give_one_clear_error(tiny_data, tmp_path, args, message):
    base = ["--data", str(tiny_data), "--epochs", "1", *TINY, "--project", str(tmp_path)]
    res = CliRunner().invoke(app, ["train", *base, *args])
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_hidden_labels_never_reach_training(tiny_data, tmp_path, monkeypatch):
    """Poisoning the hidden labels of U changes nothing in training: weights are bit-identical."""
    import numpy as np

    import effteacher.train.trainer as trainer_mod
    from effteacher.train import train_data as train_data_mod

    original = train_data_mod.load_train_data

    def poisoned(*a, **k):
        data = original(*a, **k)
        rng = np.random.default_rng(1)
        for r in data.unlabeled:
            r.cls = rng.integers(0, 10, size=5)
            r.boxes = rng.uniform(0.2, 0.6, size=(5, 4)).astype(np.float32)
        return data

    args = ["--data", str(tiny_data), "--labeled", "25%", "--epochs", "2", "--burn-in", "1", *TINY,
            "--project", str(tmp_path), "--thresholds", "fixed"]
    assert _train([*args, "--name", "clean"]).exit_code == 0
    monkeypatch.setattr(trainer_mod, "load_train_data", poisoned)
    assert _train([*args, "--name", "poison"]).exit_code == 0
    a = torch.load(tmp_path / "clean/weights/last.pt", weights_only=True)["train_state"]["student"]
    b = torch.load(tmp_path / "poison/weights/last.pt", weights_only=True)["train_state"]["student"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{"thresholds": "adaptor", "soft_cls": True, "domain_adapt": True, "dense_topk": 0.05},
                                   {"thresholds": "gmm", "flip_teacher": True, "domain_adapt": False, "density_norm": False,
                                        "score": "obj", "cls_thres": 0.5, "cls_thres_mode": "adaptive",
                                        "agnostic_nms": True}])
def test_ssod_threshold_strategies_run(tiny_data, tmp_path, extra):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"ssod": extra}))
    res = _train(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "2", "--burn-in", "1", *TINY,
                  "--project", str(tmp_path), "--name", "s", "--cfg", str(cfg)])
    assert res.exit_code == 0, res.output
    last = torch.load(tmp_path / "s/weights/last.pt", weights_only=True)
    assert last["args"]["ssod"]["thresholds"] == extra["thresholds"]
    assert last["train_state"]["thresholds"]["kind"] == extra["thresholds"]
    assert (last["train_state"]["disc"] is None) == (not extra["domain_adapt"])
    gate = last["train_state"]["class_gate"]
    assert gate["mode"] == extra.get("cls_thres_mode", "fixed")
    assert float(gate["thres"].max()) <= extra.get("cls_thres", 0.0) + 1e-6
    assert last["args"]["ssod"]["soft_cls"] == extra.get("soft_cls", False)


@pytest.mark.slow
def test_ssod_run_with_unlabeled_mosaic_reports_pseudo_precision(tiny_data, tmp_path):
    """aug.unlabeled_mosaic 1.0: every teacher view is a mosaic; with aug.unlabeled_mixup 1.0 every strong view is
    blended with another; low fixed thresholds give reliable pseudo boxes."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"aug": {"unlabeled_mosaic": 1.0, "unlabeled_mixup": 1.0},
                                   "ssod": {"tau1": 0.0001, "tau2": 0.0005}}))
    res = _train(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "2", "--burn-in", "1", *TINY,
                  "--thresholds", "fixed", "--project", str(tmp_path), "--name", "m", "--cfg", str(cfg)])
    assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / "m")
    assert float(rows[1]["unsup/obj_loss"]) > 0.0
    assert 0.0 <= float(rows[1]["pseudo/precision"]) <= 1.0 and 0.0 <= float(rows[1]["pseudo/recall"]) <= 1.0
    last = torch.load(tmp_path / "m/weights/last.pt", weights_only=True)
    assert last["args"]["aug"]["unlabeled_mosaic"] == 1.0 and last["args"]["aug"]["unlabeled_mixup"] == 1.0
    assert (tmp_path / "m/pseudo_batch0.jpg").stat().st_size > 0


def test_dense_targets_with_unlabeled_mixup_stop_with_one_line(tiny_data, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"aug": {"unlabeled_mixup": 0.5}, "ssod": {"dense_topk": 0.05}}))
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_data), "--labeled", "25%", "--epochs", "2",
                                   "--burn-in", "1", *TINY, "--project", str(tmp_path / "runs"), "--cfg", str(cfg)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "ssod.dense_topk and aug.unlabeled_mixup cannot be combined" in res.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("on", [True, False])
def test_threshold_pass_sets_the_first_ssod_epochs_thresholds(tiny_data, tmp_path, on):
    """ssod.threshold_pass: the first SSOD epoch already uses adaptor thresholds (bounded, >= 0.05 for every class
    the teacher scored, so their class mean leaves the start values); without it, the start values (tau1/tau2 1e-4/5e-4 here, low enough for the tiny teacher's scores to reach the adaptor)."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"ssod": {"threshold_pass": on, "tau1": 0.0001, "tau2": 0.0005}}))
    res = _train(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "2", "--burn-in", "1", *TINY,
                  "--project", str(tmp_path), "--name", "p", "--cfg", str(cfg)])
    assert res.exit_code == 0, res.output
    assert ("first thresholds from one teacher pass" in res.output) == on
    first_ssod = _rows(tmp_path / "p")[1]
    tau1, tau2 = float(first_ssod["pseudo/tau1"]), float(first_ssod["pseudo/tau2"])
    if on:
        assert tau1 > 0.001 and tau2 > 0.01
    else:
        assert (tau1, tau2) == pytest.approx((0.0001, 0.0005), abs=1e-6)


@pytest.mark.slow
def test_auto_burn_in_hands_over_on_plateau_and_resume_keeps_it(tiny_data, tmp_path):
    """Default ``--burn-in auto`` with tiny step windows: it logs why it handed over, saves burn_in.pt, runs the whole
    SSOD phase, and a run resumed from that state keeps the decision (same burn-in length, same planned end)."""
    cfg = tmp_path / "sched.yaml"
    cfg.write_text("sched: {min_steps: 2, max_steps: 8, patience_steps: 2, val_steps: 1, ssod_factor: 3.0}\n")
    res = _train(["--data", str(tiny_data), "--labeled", "25%", *TINY, "--cfg", str(cfg), "--patience", "3",
                  "--project", str(tmp_path), "--name", "auto"])
    assert res.exit_code == 0, res.output
    assert "hand-over to SSOD after epoch" in res.output
    run = tmp_path / "auto"
    burn = torch.load(run / "weights/burn_in.pt", weights_only=True)["train_state"]
    last = torch.load(run / "weights/last.pt", weights_only=True)["train_state"]
    assert burn["burn_epochs"] == last["burn_epochs"] == burn["epoch"] >= 1
    assert burn["handover_reason"]
    rows = _rows(run)
    assert int(rows[-1]["epoch"]) > burn["epoch"] and float(rows[-1]["unsup/obj_loss"]) > 0
    # the SSOD phase runs its whole plan (3x the burn-in's iterations): --patience counts from the hand-over, not
    # from the burn-in's best epoch (which stopped the small sample after one SSOD epoch)
    burn_its = int(rows[burn["epoch"] - 1]["train/iterations"])
    assert int(rows[-1]["train/iterations"]) - burn_its >= 3 * burn_its
    # killed right after the hand-over: resuming from the burn-in state finishes the same plan
    again = tmp_path / "again"
    (again / "weights").mkdir(parents=True)
    import shutil

    shutil.copytree(run / "split", again / "split")
    shutil.copy(run / "weights/burn_in.pt", again / "weights/last.pt")
    with open(run / "results.csv") as f:
        head = f.readlines()[: burn["epoch"] + 1]
    (again / "results.csv").write_text("".join(head))
    res = _train(["--resume", str(again), "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in _rows(again)] == [r["epoch"] for r in rows]
    assert torch.load(again / "weights/last.pt", weights_only=True)["train_state"]["burn_epochs"] == burn["epoch"]


@pytest.mark.slow
def test_supervised_auto_run_polishes_after_its_plateau(tiny_data, tmp_path):
    """--supervised with sched.polish_factor: the plateau is logged and training goes on for the polishing epochs
    with a decaying LR (last.pt keeps the plateau epoch, from which a resumed run rebuilds the same plan)."""
    cfg = tmp_path / "sched.yaml"
    cfg.write_text("sched: {min_steps: 2, max_steps: 6, patience_steps: 2, val_steps: 1, polish_factor: 1.0}\n")
    res = _train(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "0", *TINY, "--cfg",
                  str(cfg), "--patience", "2", "--project", str(tmp_path), "--name", "polish"])
    assert res.exit_code == 0, res.output
    assert "plateau: polishing for" in res.output
    run = tmp_path / "polish"
    burn = torch.load(run / "weights/last.pt", weights_only=True)["train_state"]["burn_epochs"]
    rows = _rows(run)
    # as many polishing epochs again (one iteration each), --patience counting from the plateau
    assert len(rows) == 2 * burn
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[burn - 1] > lrs[-1] and lrs[-1] == pytest.approx(min(lrs))
    assert all(a >= b for a, b in zip(lrs[burn - 1:], lrs[burn:]))


def _polish(tiny_data, tmp_path, extra: str) -> tuple[str, dict]:
    """A tiny --supervised auto run that polishes, with ``extra`` YAML (sched options, then any section):
    its output and the EMA state in last.pt."""
    cfg = tmp_path / "sched.yaml"
    cfg.write_text("sched: {min_steps: 2, max_steps: 6, patience_steps: 2, val_steps: 1, polish_factor: 1.0, "
                   + extra)
    res = _train(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "0", *TINY, "--cfg",
                  str(cfg), "--patience", "2", "--project", str(tmp_path), "--name", "polish"])
    assert res.exit_code == 0, res.output
    st = torch.load(tmp_path / "polish/weights/last.pt", weights_only=True)["train_state"]
    return res.output, {**st["ema"], "burn_epochs": st["burn_epochs"]}


@pytest.mark.slow
def test_polish_handover_polishes_from_the_ema_with_a_teacher_like_ema(tiny_data, tmp_path):
    """sched.polish_handover: at the plateau the log names the hand-over and the EMA decay; the EMA then runs at
    that constant decay (no ramp), the SSOD teacher's auto rule over the polishing's optimizer steps."""
    from effteacher.train.schedule import teacher_decay

    out, ema = _polish(tiny_data, tmp_path, "polish_handover: true}\n")
    assert "polishing from the EMA weights, EMA decay 0.99" in out
    assert ema["tau"] == 0.0
    # a few polishing updates: the auto rule's shortest window, 100 updates
    assert ema["decay"] == pytest.approx(teacher_decay(0.0, ema["burn_epochs"])) == pytest.approx(0.99)


@pytest.mark.slow
def test_polish_teacher_ema_keeps_a_longer_supervised_ema(tiny_data, tmp_path):
    """sched.polish_teacher_ema only lengthens the EMA window: a supervised EMA over 1,000 updates (decay 0.999)
    is kept with its ramp, where the teacher rule would set 0.99; the student keeps its weights."""
    out, ema = _polish(tiny_data, tmp_path, "polish_teacher_ema: true}\noptim: {ema_window: 1000}\n")
    assert "polishing from the student's weights, EMA decay kept at 0.9990 (the teacher rule's 0.9900" in out
    assert ema["decay"] == pytest.approx(0.999) and ema["tau"] == pytest.approx(200.0)


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)


@pytest.mark.slow
def test_verbose_prints_the_per_class_table_at_every_validation(tiny_data, tmp_path):
    res = _invoke(["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "1", *TINY,
                   "--project", str(tmp_path), "--verbose"])
    assert res.exit_code == 0, res.output
    assert res.output.count("mAP50-95\n") == 2  # after the epoch's validation and at the end
    assert yaml.safe_load((tmp_path / "exp" / "args.yaml").read_text())["verbose"] is True
