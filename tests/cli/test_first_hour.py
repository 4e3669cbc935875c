"""A new user's first hour (issue 13): option checks, an 80-column progress row, no litter, resume edge cases,
`check` exit code and orphans, messages, the label cache mode, and empty (unmeasured) results.csv cells."""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.config import TrainConfig, defaults_for, replace
from effteacher.utils.progress import TrainProgress, progress_layout
from effteacher.train.results_csv import epoch_summary, results_row
from effteacher.train.setup import discard_if_failed
from effteacher.options import TRAIN_RANGES, _fields, check_train_config, train_config_problems
from effteacher.utils.files import umask

TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)


def _img(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    """A finished 2-epoch supervised run validated every 2nd epoch: (run folder, CLI output)."""
    tmp = tmp_path_factory.mktemp("fin")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"val_every": 2}))
    res = _invoke(["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "2", *TINY,
                   "--project", str(tmp), "--name", "run", "--cfg", str(cfg)])
    assert res.exit_code == 0, res.output
    return tmp / "run", res.output


# ------------------------------------------------------------------------------------ 1. options
@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch 0: must be a whole number >= 1"),
    (["--imgsz", "0"], "--imgsz 0: must be a whole number >= 1"),
    (["--epochs", "-1"], "--epochs -1: must be a whole number >= 0"),
    (["--workers", "-2"], "--workers -2: must be a whole number >= 0"),
    (["--patience", "0"], "--patience 0: must be a whole number >= 1"),
    (["--seed", "-1"], "--seed -1: must be a whole number >= 0"),
    (["--labeled", "150%"], "at most 100%"),
    (["--labeled", "ten"], "is not understood"),
    (["--burn-in", "5", "--epochs", "2"], "or --supervised for a supervised run"),
    (["--burn-in", "2", "--epochs", "2"], "--burn-in 2 with --epochs 2 leaves no semi-supervised epoch"),
    (["--burn-in", "-1"], "--burn-in '-1'"),
    (["--nproc", "0"], "--nproc 0: must be a whole number >= 1"),
    (["--thresholds", "best"], "--thresholds 'best': use one of adaptor, fixed, gmm"),
])
def test_bad_options_stop_before_any_folder_or_scan(tmp_path, args, message):
    res = _invoke(["train", "--data", str(tmp_path / "never-read.yaml"), "--project", str(tmp_path / "runs"), *args])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "never-read.yaml" not in res.output  # checked before the dataset is even looked at
    assert "Traceback" not in res.output and not (tmp_path / "runs").exists()


def test_cfg_yaml_values_are_checked_one_line_each(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"batch": "16", "optim": {"lr0": -0.1, "optimizer": "adam"},
                                   "ssod": {"tau1": 1.5}, "aug": {"mosaic": 2.0}}))
    res = _invoke(["train", "--cfg", str(cfg), "--project", str(tmp_path / "runs")])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 5, res.output
    for m in ("--batch '16': expected a whole number", "cfg optim.lr0 -0.1: must be a number >= 0 and <= 1",
              "cfg optim.optimizer 'adam': use one of auto, sgd, adamw", "cfg ssod.tau1 1.5: must be a number",
              "cfg aug.mosaic 2.0: must be a number >= 0 and <= 1 (a probability)"):
        assert m in res.output, m


def test_every_numeric_config_value_has_a_range():
    numeric = {k for k, _, tp in _fields(TrainConfig()) if tp in (int, float) or str(tp).startswith("tuple")}
    assert numeric == set(TRAIN_RANGES)
    for profile in ("sample", "sample-large", "custom.yaml"):
        assert train_config_problems(defaults_for(profile)) == [], profile


def test_burn_in_vs_epochs_only_when_both_fixed():
    base = TrainConfig()
    assert train_config_problems(replace(base, burn_in="auto", epochs=2)) == []
    assert train_config_problems(replace(base, burn_in=5, epochs=0)) == []  # epochs auto: SSOD follows burn-in
    assert train_config_problems(replace(base, burn_in=5, epochs=2, supervised=True)) == []
    assert len(train_config_problems(replace(base, burn_in=5, epochs=5))) == 1
    assert "tau1" in train_config_problems(replace(base, **{"ssod.tau1": 0.7, "ssod.tau2": 0.5}))[0]


def test_imgsz_rounded_up_to_the_stride_with_a_message(capsys):
    assert check_train_config(replace(TrainConfig(), imgsz=33)).imgsz == 64
    assert "--imgsz 33 is not a multiple of the largest model stride 32; using 64" in capsys.readouterr().err
    assert check_train_config(replace(TrainConfig(), imgsz=96)).imgsz == 96
    assert capsys.readouterr().err == ""


def test_flip_ensemble_on_unflipped_data_warns(capsys):
    flip = {"ssod.flip_teacher": True}
    check_train_config(replace(TrainConfig(), **flip, **{"aug.fliplr": 0.0}))
    assert "ssod.flip_teacher averages the teacher over mirror images, but aug.fliplr is 0" in capsys.readouterr().err
    check_train_config(replace(TrainConfig(), **flip, **{"aug.fliplr": 0.5}))  # mirror-symmetric data: no message
    check_train_config(replace(TrainConfig(), **flip, supervised=True, **{"aug.fliplr": 0.0}))  # no teacher
    check_train_config(replace(TrainConfig(), **{"aug.fliplr": 0.0}))  # the default keeps the ensemble off
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args, message", [
    (["predict", "x.jpg", "--weights", "w.pt", "--conf", "2"], "--conf 2.0: must be a number >= 0 and <= 1"),
    (["predict", "x.jpg", "--weights", "w.pt", "--max-det", "0"], "--max-det 0"),
    (["val", "--weights", "w.pt", "--batch", "0"], "--batch 0"),
    (["val", "--weights", "w.pt", "--iou", "0"], "--iou 0.0: must be a number > 0"),
    (["export", "--weights", "w.pt", "--imgsz", "-5"], "--imgsz -5"),
    (["split", "--labeled", "0.0"], "above 0%"),
    (["split", "--seed", "-3"], "--seed -3"),
])
def test_other_commands_check_their_numbers_first(args, message):
    res = _invoke(args)
    assert res.exit_code == 1 and message in res.output and "w.pt" not in res.output, res.output


# ------------------------------------------------------------------------------- 2. progress row
def test_progress_row_fits_80_columns_with_bar_count_and_eta():
    buf = io.StringIO()
    con = Console(file=buf, width=80, force_terminal=True)
    prog = TrainProgress(150, 160, 120, console=con)
    for _ in range(5):
        prog.update({"box": 0.0512, "obj": 0.0234, "cls": 0.0345, "ubox": 0.01, "uobj": 0.2, "ucls": 1e-4,
                     "reliable": 12.5, "uncertain": 40.25}, 30, 256)
    prog.close()
    frames = [ANSI.sub("", f) for f in re.split(r"[\r\n]", buf.getvalue())]
    frames = [f for f in frames if f.strip()]
    header, first, last = frames[0], frames[1], frames[-1]
    assert header.split() == ["Epoch", "box", "obj", "cls", "unsup", "pseudo"]
    for f in frames:
        assert len(f) <= 80 and "…" not in f, f
    assert "0/120" in first and "warming up" in first  # before the first batch: no ETA yet
    assert "━" in last and "5/120" in last and re.search(r"\d\d:\d\d$", last), last
    assert last.split()[:6] == ["151/160", "0.0512", "0.0234", "0.0345", "0.21", "52.8"]


def test_progress_layout_by_width():
    assert progress_layout(60, 120)[0] == ["Epoch", "box", "obj"]
    assert progress_layout(60, 30)[0] == ["Epoch", "box", "obj", "cls"]  # a shorter count leaves room
    cols, elapsed = progress_layout(80, 30)
    assert cols == ["Epoch", "box", "obj", "cls", "unsup", "pseudo"] and not elapsed
    cols, elapsed = progress_layout(130, 30)
    assert cols == ["Epoch", "Mem", "box", "obj", "cls", "unsup", "pseudo", "Instances", "Size"] and elapsed


# ---------------------------------------------------------------------------------- 3. no litter
def test_discard_if_failed_removes_only_a_new_folder_without_checkpoint(tmp_path):
    new, ckpt = tmp_path / "exp", tmp_path / "exp2"
    for d in (new, ckpt):
        (d / "weights").mkdir(parents=True)
    (ckpt / "weights" / "last.pt").write_bytes(b"x")
    for d in (new, ckpt):
        with pytest.raises(RuntimeError), discard_if_failed(lambda d=d: d):
            raise RuntimeError("failed")
    assert not new.exists() and ckpt.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(KeyboardInterrupt), discard_if_failed(lambda: None):  # not created by the run
        raise KeyboardInterrupt
    with discard_if_failed(lambda: kept):  # no failure
        pass
    assert kept.exists()


def test_failed_starts_leave_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "bad"
    for split in ("train", "val"):
        for i in range(3):
            _img(root / "images" / split / f"{i}.jpg", seed=i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i}.txt").write_text("7 0.5 0.5 0.2 0.2\n")  # class 7 >= nc 2
    y = root / "d.yaml"
    y.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "names": ["a", "b"]}))
    runs = tmp_path / "runs"
    base = ["train", "--data", str(y), "--epochs", "1", *TINY, "--project", str(runs)]
    res = _invoke(base)  # fails in the scan, after the folder was made: it is removed again
    assert res.exit_code == 1 and "no usable labeled image" in res.output
    assert list(runs.glob("exp*")) == []
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not weights")
    res = _invoke([*base, "--weights", str(broken)])  # fails before the folder is made
    assert res.exit_code == 1 and "broken.pt" in res.output and list(runs.glob("exp*")) == []
    mine = runs / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    res = _invoke([*base, "--name", "mine", "--exist-ok"])  # an existing folder is never removed
    assert res.exit_code == 1 and (mine / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------ 4. resume edges
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


@pytest.mark.parametrize("epochs", ["1", "2"])
def test_resume_with_epochs_at_or_below_done_is_an_error(finished, epochs):
    run, _ = finished
    before = _snapshot(run)
    res = _invoke(["train", "--resume", str(run), "--epochs", epochs])
    assert res.exit_code == 1
    assert f"--epochs {epochs}: {run} has already trained 2 epochs" in " ".join(res.output.split())
    assert _snapshot(run) == before


# ------------------------------------------------------------------------------- 5. check command
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


def test_label_cache_is_readable_like_the_labels(tmp_path, monkeypatch):
    from effteacher.data.dataset import CACHE_VERSION, scan_labeled

    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "d"
    _img(root / "images" / "train" / "a.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    res = scan_labeled([root / "images" / "train"], ["a"], progress=False)
    assert res.cache_path == root / "labels" / "train.effteacher-labeled.npz"
    mode = stat.S_IMODE(res.cache_path.stat().st_mode)
    assert mode == 0o666 & ~umask() and mode & 0o044  # 0644 with the usual umask 022, not 0600
    assert CACHE_VERSION == "2"  # entries now hold skipped rows: older caches are rebuilt


# ------------------------------------------------------------------------------------ 6. messages
def test_predict_names_a_truncated_jpeg_and_goes_on(tmp_path):
    from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
    from effteacher.models.build import build_model

    torch.manual_seed(0)
    w = save_checkpoint(tmp_path / "w.pt", make_checkpoint(build_model("n", nc=2).eval(), ["a", "b"], 64, "model", 1,
                                                           {}, {}))
    src = tmp_path / "src"
    good = _img(src / "good.jpg")
    data = good.read_bytes()
    (src / "trunc.jpg").write_bytes(data[: len(data) // 2])
    res = subprocess.run([sys.executable, "-m", "effteacher", "predict", str(src), "--weights", str(w), "--project",
                          str(tmp_path / "runs")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert f"{src / 'trunc.jpg'}: truncated JPEG" in res.stderr
    assert "Premature end of JPEG" not in res.stdout + res.stderr  # libjpeg never sees the broken file
    assert "good.jpg" in res.stdout and (tmp_path / "runs/exp/good.jpg").is_file()
    assert not (tmp_path / "runs/exp/trunc.jpg").exists()


def test_version_and_model_help_at_80_columns(monkeypatch):
    from effteacher.version import __version__

    res = _invoke(["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"effteacher {__version__}"
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    res = _invoke(["train", "--help"])
    assert "retina-r50" in res.output and "retina-r…" not in res.output


# ---------------------------------------------------------------------- 8. results.csv, plots
def test_results_row_leaves_unmeasured_cells_empty():
    burn = results_row(1, 1.234, 10, 5, {"box": 0.1, "obj": 0.2, "cls": 0.3}, {}, 0.01)
    assert burn["train/box_loss"] == 0.1 and burn["train/steps"] == 5 and burn["time"] == 1.23
    for k in ("unsup/box_loss", "unsup/da_loss", "pseudo/reliable", "pseudo/tau2", "pseudo/precision",
              "metrics/mAP50", "metrics/mAP50-95"):
        assert burn[k] is None, k
    means = {"box": 0.1, "obj": 0.2, "cls": 0.3, "ubox": 0.0, "uobj": 0.5, "ucls": 0.0, "da": 0.0, "reliable": 2.0,
             "uncertain": 1.0, "tau1": 0.1, "tau2": 0.6, "pseudo_tp": 1.5, "pseudo_pred": 2.0, "pseudo_gt": 3.0,
             "pseudo_tp_agnostic": 2.0}
    ssod = results_row(2, 1.0, 20, 10, means, {"metrics/mAP50": 0.0, "metrics/mAP50-95": 0.0,
                                               "metrics/precision": 0.0, "metrics/recall": 0.0}, 0.01,
                       domain_adapt=False)
    assert ssod["unsup/box_loss"] == 0.0 and ssod["metrics/mAP50"] == 0.0  # measured zeros stay 0
    assert ssod["unsup/da_loss"] is None
    assert (ssod["pseudo/precision"], ssod["pseudo/recall"], ssod["pseudo/precision_agnostic"]) == (0.75, 0.5, 1.0)
    none = results_row(3, 1.0, 30, 15, {**means, "pseudo_tp": 0.0, "pseudo_pred": 0.0}, {}, 0.01)
    assert none["pseudo/precision"] is None and none["pseudo/recall"] == 0.0  # no reliable box: no precision
    lines = epoch_summary(ssod)
    assert len(lines) == 2 and all(len(ln) <= 80 for ln in lines) and "mAP50-95 0.000" in lines[0]
    assert epoch_summary(burn) == []


def test_run_leaves_unvalidated_epochs_empty_and_tables_for_the_end(finished):
    from effteacher.utils.plots import results_series

    run, output = finished
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["metrics/mAP50"] == "" for r in rows] == [True, False]  # validated every 2nd epoch
    assert all(r["unsup/box_loss"] == "" and r["pseudo/reliable"] == "" for r in rows)  # supervised
    assert 0 < int(rows[0]["train/steps"]) < int(rows[1]["train/steps"]) <= int(rows[1]["train/iterations"])
    xlabel, series = results_series(run / "results.csv")
    assert xlabel == "steps" and len(series["metrics/mAP50"][0]) == 1 and len(series["train/box_loss"][0]) == 2
    assert "unsup/box_loss" not in series and (run / "results.png").is_file()
    assert output.count("mAP50-95\n") == 1  # the per-class table once, at the end (every epoch with --verbose)
    assert "val: P " in output


def test_verbose_prints_the_per_class_table_at_every_validation(tiny_data, tmp_path):
    res = _invoke(["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "1", *TINY,
                   "--project", str(tmp_path), "--verbose"])
    assert res.exit_code == 0, res.output
    assert res.output.count("mAP50-95\n") == 2  # after the epoch's validation and at the end
    assert yaml.safe_load((tmp_path / "exp" / "args.yaml").read_text())["verbose"] is True


def test_benchmark_reader_keeps_measured_rows_only(tmp_path):
    from benchmarks.branch import rows

    legacy, new = tmp_path / "legacy", tmp_path / "new"
    for d in (legacy, new):
        d.mkdir()
    (legacy / "results.csv").write_text("epoch,train/iterations,metrics/mAP50\n1,10,0\n2,20,0.5\n")
    (new / "results.csv").write_text("epoch,train/iterations,train/steps,pseudo/precision,metrics/mAP50\n"
                                     "1,10,5,,\n2,20,10,,0\n3,30,15,0.5,0.25\n")
    assert [r["epoch"] for r in rows(legacy)] == [2.0]  # old files wrote 0 for "not validated"
    out = rows(new)
    assert [r["epoch"] for r in out] == [2.0, 3.0] and "pseudo/precision" not in out[0]
