"""Run folders: one run at a time per folder (an OS lock a killed run releases), no empty folder after a failure."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.errors import DatasetError, RunFolderBusyError
from effteacher.utils.files import LOCK_NAME, RunLock, run_folder

TINY = ["--imgsz", "64", "--batch", "4", "--workers", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


def test_lock_refuses_a_second_holder_and_a_stale_file_does_not_block(tmp_path):
    run = tmp_path / "exp"
    run.mkdir()
    first = RunLock(run).acquire()
    assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(RunFolderBusyError, match=rf"^{run} is in use by another run \(PID {os.getpid()}\)"):
        RunLock(run).acquire()
    first.release()
    assert not (run / LOCK_NAME).exists()
    (run / LOCK_NAME).write_text("999999\n")  # left by a killed run: present but not locked
    second = RunLock(run).acquire()
    assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
    second.release()


def test_run_folder_removes_only_an_empty_folder_it_created(tmp_path):
    with pytest.raises(DatasetError):
        with run_folder(tmp_path, "exp") as out:
            (out / "labels").mkdir()  # an empty subfolder is no result
            raise DatasetError("nothing to write")
    assert not (tmp_path / "exp").exists()
    with pytest.raises(DatasetError):
        with run_folder(tmp_path, "exp") as out:
            (out / "partial.txt").write_text("a result")
            raise DatasetError("failed later")
    assert (tmp_path / "exp" / "partial.txt").is_file() and not (tmp_path / "exp" / LOCK_NAME).exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetError):
        with run_folder(tmp_path, "mine", exist_ok=True):
            raise DatasetError("failed")
    assert (tmp_path / "mine").is_dir()  # not created by the command: never removed
    with run_folder(tmp_path, "exp") as out:
        assert out == tmp_path / "exp2"


@pytest.mark.slow
def test_second_train_into_a_busy_folder_is_refused_and_the_first_finishes(tiny_data, tmp_path):
    args = ["--data", str(tiny_data), "--supervised", "--labeled", "50%", *TINY, "--project", str(tmp_path),
            "--name", "exp", "--exist-ok"]
    first = subprocess.Popen([sys.executable, "-m", "effteacher", "train", *args, "--epochs", "3"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    run = tmp_path / "exp"
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not (run / "weights" / "last.pt").exists():
        time.sleep(0.1)
    assert first.poll() is None, "the first run ended before the second could start"
    first.send_signal(signal.SIGSTOP)  # paused, still alive: it holds the folder for as long as the test needs
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import effteacher.cli, effteacher.train.trainer, effteacher.models.build"], env=ENV, check=True)
    start = time.time() - t0  # the interpreter's start with the model code (torch, torchvision) imported
    for second in (["train", *args, "--epochs", "2"], ["train", "--resume", str(run), "--workers", "0"]):
        t0 = time.time()
        res = subprocess.run([sys.executable, "-m", "effteacher", *second], capture_output=True, text=True, env=ENV,
                             timeout=120)
        took = time.time() - t0
        out = (res.stdout + res.stderr).strip().splitlines()
        assert res.returncode == 1, out
        assert len(out) == 1 and f"is in use by another run (PID {first.pid})" in out[0], out
        assert took < 1.5 * start + 5, (took, start)  # refused at once, before any work (on a busy machine too)
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2, 3]
    assert not (run / LOCK_NAME).exists()


def _fail(monkeypatch, target: str) -> None:
    def boom(*a, **k):
        raise DatasetError("made to fail after the run folder is created")

    monkeypatch.setattr(target, boom)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["val", "predict", "pseudo", "rank", "split"])
def test_failed_command_leaves_no_run_folder(command, ssod_run, tiny_data, tmp_path, monkeypatch):
    weights = str(ssod_run / "weights" / "best.pt")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"broken{i}.jpg").write_bytes(b"not an image")
    common = ["--project", str(tmp_path / "runs"), "--name", "exp"]
    args = {
        "val": ["val", "--weights", weights, "--data", str(tiny_data), "--workers", "0"],
        "predict": ["predict", str(bad), "--weights", weights, "--save-txt"],  # every image is unreadable
        "pseudo": ["pseudo", str(bad), "--weights", weights, "--workers", "0"],  # every image is unreadable
        "rank": ["rank", "--weights", weights, "--data", str(tiny_data), "--budget", "2", "--workers", "0"],
        "split": ["split", "--data", str(tiny_data)],
    }[command]
    if command == "val":
        _fail(monkeypatch, "effteacher.val.evaluator.Evaluator.run")
    elif command == "rank":
        _fail(monkeypatch, "effteacher.labeling.rank.atomic_write_text")
    elif command == "split":
        _fail(monkeypatch, "effteacher.data.split.write_split")
    res = _cli([*args, *common])
    assert res.exit_code == 1, res.output
    assert "ERROR" in res.output
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir()), \
        list((tmp_path / "runs").rglob("*"))
