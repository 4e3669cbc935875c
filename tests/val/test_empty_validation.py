"""A validation that finds nothing scores 0 (mAP, P, R) and prints a table of zeros instead of crashing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.val.metrics import ap_per_class, compute_ap, match_predictions

TINY = ["--imgsz", "64", "--batch", "4", "--workers", "0"]


def _zero(pr: dict[str, np.ndarray], nc: int) -> None:
    assert pr["p"].shape == pr["r"].shape == pr["f1"].shape == (nc,)
    assert pr["ap"].shape == (nc, 10) and pr["py"].shape == (nc, 1000)
    assert not pr["p"].any() and not pr["r"].any() and not pr["ap"].any() and not pr["py"].any()


@pytest.mark.parametrize("tp", [np.zeros((0, 10), bool), np.zeros(0, bool), []], ids=["2d", "1d", "list"])
def test_no_prediction_at_all_scores_zero(tp):
    pr = ap_per_class(tp, np.zeros(0), np.zeros(0, np.int64), np.array([0, 1, 1]), nc=3)
    _zero(pr, 3)
    assert pr["n_gt"].tolist() == [1, 2, 0]


def test_no_prediction_and_no_ground_truth_scores_zero():
    _zero(ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.zeros(0), nc=2), 2)


def test_predictions_only_of_classes_without_ground_truth_score_zero():
    # two detections of class 1 (no GT), the GT is of class 0 (no detection)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    correct = match_predictions(boxes, np.array([1, 1]), np.array([[0, 0, 10, 10]], float), np.array([0]))
    assert correct.shape == (2, 10) and not correct.any()
    pr = ap_per_class(correct, np.array([0.9, 0.8]), np.array([1, 1]), np.array([0]), nc=2)
    _zero(pr, 2)


def test_empty_curves_give_zero_ap():
    assert compute_ap(np.zeros(0), np.zeros(0)) == 0.0


def _cli(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def blind_run(tiny_data, tmp_path_factory) -> Path:
    """A tiny supervised run whose every validation finds nothing (the detector's output is emptied)."""
    import effteacher.val.evaluator as evaluator

    root = tmp_path_factory.mktemp("blind")
    real = evaluator.detections_from_output
    evaluator.detections_from_output = lambda *a, **k: [d[:0] for d in real(*a, **k)]
    try:
        res = _cli(["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "2", *TINY,
                    "--project", str(root), "--name", "blind"])
    finally:
        evaluator.detections_from_output = real
    assert res.exit_code == 0, res.output
    return root / "blind"


def test_training_whose_validations_find_nothing_records_zero(blind_run):
    with open(blind_run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        for k in ("metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95"):
            assert float(r[k]) == 0.0, k
    assert (blind_run / "weights" / "best.pt").is_file() and (blind_run / "PR_curve.png").is_file()
    assert (blind_run / "predictions.json").read_text() == "[]"


def test_val_with_a_confidence_nothing_reaches_prints_zeros(blind_run, tiny_data, tmp_path):
    res = _cli(["val", "--weights", str(blind_run / "weights" / "best.pt"), "--data", str(tiny_data),
                "--conf", "0.999", "--workers", "0", "--project", str(tmp_path), "--name", "v"])
    assert res.exit_code == 0, res.output
    lines = [ln.split() for ln in res.output.splitlines()]
    table = [ln for ln in lines if ln and (ln[0] == "all" or ln[0].isdigit()) and len(ln) == 7]
    assert table and table[0][0] == "all"
    for row in table:
        assert [float(v) for v in row[3:]] == [0.0, 0.0, 0.0, 0.0], row
    assert (tmp_path / "v" / "predictions.json").read_text() == "[]"
    assert torch.load(blind_run / "weights" / "best.pt", weights_only=True)["format"] == "effteacher"
