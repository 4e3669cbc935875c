"""results.csv: rows, formatting, resume truncation and empty (unmeasured) cells."""

from __future__ import annotations

import csv

import pytest
import torch

from effteacher.train.results_csv import CSVLogger, epoch_summary, results_row


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


@pytest.mark.slow
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


COLS = ["epoch", "time", "train/box_loss", "metrics/mAP50", "lr"]


# ------------------------------------------------------------------------------- CSV logger
def test_csv_header_rows_and_formatting(tmp_path):
    log = CSVLogger(tmp_path / "results.csv", COLS)
    log.log({"epoch": 1, "time": 1.5, "train/box_loss": 0.123456789, "metrics/mAP50": 0.5, "lr": 0.01})
    log.log({"epoch": 2, "time": 2.0, "train/box_loss": torch.tensor(0.1), "lr": 1e-5})  # mAP missing -> empty
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[0] == "epoch,time,train/box_loss,metrics/mAP50,lr"  # unpadded
    assert lines[1] == "1,1.5,0.123457,0.5,0.01"
    assert lines[2] == "2,2,0.1,,1e-05"
    rows = log.rows()
    assert [r["epoch"] for r in rows] == [1.0, 2.0] and rows[1]["metrics/mAP50"] == ""
    with pytest.raises(ValueError, match="unknown"):
        log.log({"epoch": 3, "bogus": 1})
    with pytest.raises(ValueError, match="epoch"):
        log.log({"time": 1})


def test_csv_resume_truncates_and_drops_partial_line(tmp_path):
    p = tmp_path / "results.csv"
    log = CSVLogger(p, COLS)
    for e in range(1, 5):
        log.log({"epoch": e, "time": e, "train/box_loss": 1.0 / e, "metrics/mAP50": 0.1 * e, "lr": 0.01})
    with open(p, "a") as f:
        f.write("5,1.0,0.2")  # a kill mid-write
    assert len(CSVLogger(p, COLS).rows()) == 4
    kept = CSVLogger(p, COLS).truncate(2)
    assert [r["epoch"] for r in kept] == [1.0, 2.0]
    log2 = CSVLogger(p, COLS)
    log2.log({"epoch": 3, "time": 9, "train/box_loss": 0.3, "metrics/mAP50": 0.7, "lr": 0.001})
    lines = p.read_text().splitlines()
    assert lines[0] == ",".join(COLS)
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3"]
    assert lines[2] == "2,2,0.5,0.2,0.01"  # values unchanged by the rewrite
    assert CSVLogger(tmp_path / "none.csv", COLS).truncate(3) == []


def test_csv_truncate_with_new_columns(tmp_path):
    p = tmp_path / "results.csv"
    CSVLogger(p, ["epoch", "a"]).log({"epoch": 1, "a": 2.0})
    kept = CSVLogger(p, ["epoch", "a", "b"]).truncate(1)
    assert kept[0]["a"] == 2.0
    assert p.read_text().splitlines() == ["epoch,a,b", "1,2,"]
