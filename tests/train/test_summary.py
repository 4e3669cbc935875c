"""The run summary (block, summary.json) from hand-made results.csv rows and from tiny runs, and results.png's
hand-over line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.train.results_csv import RESULTS_COLUMNS, CSVLogger
from effteacher.train.summary import build_summary, handover_step, summary_lines, summary_warnings
from effteacher.utils.results_plot import first_ssod_step, plot_results

TINY = ["--imgsz", "64", "--batch", "4", "--workers", "0"]


def _row(epoch: int, steps: int, m: float | None = None, reliable: float | None = None,
         precision: float | None = None) -> dict[str, object]:
    """A results.csv row as CSVLogger.rows() reads it back: floats, "" for an empty cell."""
    r: dict[str, object] = {c: "" for c in RESULTS_COLUMNS}
    r.update({"epoch": float(epoch), "train/steps": float(steps), "time": 1.0, "lr": 0.01})
    if m is not None:
        r.update({"metrics/mAP50-95": m, "metrics/mAP50": 2 * m})
    if reliable is not None:
        r.update({"pseudo/reliable": reliable, "pseudo/uncertain": 0.5})
        if precision is not None:
            r.update({"pseudo/precision": precision, "pseudo/recall": 0.4, "pseudo/precision_agnostic": 0.9})
    return r


SSOD_ROWS = [_row(1, 10), _row(2, 20, 0.20), _row(3, 50, 0.25, 1.5, 0.8), _row(4, 80, 0.30, 2.0, 0.7)]


def test_ssod_summary_has_burn_in_best_lift_and_last_pseudo_epoch():
    s = build_summary(SSOD_ROWS, 10, 90, ssod=True, stage="end", pictures=["results.png"])
    assert s["images"] == {"labeled": 10, "unlabeled": 90}
    assert s["burn_in"] == {"epoch": 2, "mAP50-95": 0.20, "mAP50": 0.40}
    assert s["ssod"]["epoch"] == 4 and s["best"]["epoch"] == 4 and s["handover_step"] == 20.0
    assert s["lift"]["mAP50-95"] == pytest.approx(0.10) and s["lift"]["mAP50"] == pytest.approx(0.20)
    assert s["pseudo"] == {"epoch": 4, "reliable_per_image": 2.0, "uncertain_per_image": 0.5, "precision": 0.7,
                           "recall": 0.4, "precision_agnostic": 0.9}
    assert s["warnings"] == []
    text = "\n".join(summary_lines(s))
    assert "10 labeled, 90 unlabeled" in text and "+0.100 / +0.200 vs burn-in" in text
    assert "2.00 reliable boxes/image, precision 0.70 recall 0.40" in text and "results.png" in text
    assert "best.pt" not in text  # best.pt is an SSOD epoch: nothing to point out
    assert all(len(line) <= 110 for line in summary_lines(s))
    json.dumps(s)  # summary.json holds plain values only


def test_hand_over_summary_has_the_burn_in_only():
    s = build_summary(SSOD_ROWS[:2], 10, 90, ssod=True, stage="hand-over")
    assert s["burn_in"]["epoch"] == 2 and s["ssod"] is None and s["pseudo"] is None and s["lift"] is None
    assert s["handover_step"] == 20.0 and s["warnings"] == []
    lines = summary_lines(s)
    assert len(lines) == 2 and "the supervised model on your labels" in lines[1]


def test_supervised_summary_omits_the_ssod_parts():
    rows = [_row(1, 10, 0.1), _row(2, 20, 0.3), _row(3, 30, 0.2)]
    s = build_summary(rows, 40, 60, ssod=False, stage="end")
    assert s["best"] == {"epoch": 2, "mAP50-95": 0.3, "mAP50": 0.6} and s["images"]["unlabeled"] == 0
    assert not {"burn_in", "ssod", "lift", "pseudo", "handover_step"} & set(s)
    text = "\n".join(summary_lines(s))
    assert "supervised" in text and "pseudo" not in text and "burn-in" not in text


def test_warnings_never_reliable_and_low_precision():
    never = [_row(1, 10, 0.2), _row(2, 40, 0.2, 0.0), _row(3, 70, 0.2, 0.0)]
    s = build_summary(never, 10, 90, ssod=True, stage="end")
    assert len(s["warnings"]) == 1 and "ever reliable" in s["warnings"][0] and "lower tau2" in s["warnings"][0]
    assert "best.pt    the burn-in model (epoch 1)" in "\n".join(summary_lines(s))  # ties keep the first
    low = build_summary([_row(1, 10, 0.2), _row(2, 40, 0.25, 1.0, 0.9), _row(3, 70, 0.3, 3.0, 0.35)], 10, 90,
                        ssod=True, stage="end")
    assert len(low["warnings"]) == 1 and "0.35" in low["warnings"][0] and "higher tau2" in low["warnings"][0]
    no_hidden = build_summary([_row(1, 10, 0.2), _row(2, 40, 0.25, 1.0)], 10, 90, ssod=True, stage="end")
    assert no_hidden["warnings"] == [] and no_hidden["pseudo"]["precision"] is None
    assert "precision" not in summary_lines(no_hidden)[-1]
    assert summary_warnings({"mode": "supervised"}) == []


def test_handover_step_and_no_burn_in():
    assert handover_step(SSOD_ROWS) == 20.0
    assert handover_step(SSOD_ROWS[:2]) is None
    assert handover_step([_row(1, 30, 0.1, 1.0, 0.9)]) == 0.0  # --burn-in 0
    s = build_summary([_row(1, 30, 0.1, 1.0, 0.9)], 10, 90, ssod=True, stage="end")
    assert s["burn_in"] is None and s["lift"] is None and "no validation" in summary_lines(s)[1]


def _csv(path: Path, rows: list[dict[str, object]]) -> Path:
    log = CSVLogger(path, RESULTS_COLUMNS)
    for r in rows:
        log.log({k: (None if v == "" else v) for k, v in r.items()})
    return path


def _handover_meta(png: Path) -> str:
    with Image.open(png) as im:
        return im.text["handover_step"]


def test_results_png_marks_the_hand_over(tmp_path):
    p = _csv(tmp_path / "a" / "results.csv", SSOD_ROWS)
    assert first_ssod_step(p) == 20.0
    assert _handover_meta(plot_results(p)) == "20"  # read from the first SSOD row
    assert _handover_meta(plot_results(p, handover_step=35.0)) == "35"  # or passed in
    sup = _csv(tmp_path / "s" / "results.csv", [_row(1, 10, 0.1), _row(2, 20, 0.2)])
    assert first_ssod_step(sup) is None and _handover_meta(plot_results(sup)) == ""
    assert _handover_meta(plot_results(tmp_path / "missing" / "results.csv")) == ""


def _run(args: list[str]) -> str:
    res = CliRunner().invoke(app, ["train", *args, *TINY], catch_exceptions=False)
    assert res.exit_code == 0, res.output[-3000:]
    return res.output


@pytest.mark.slow
def test_ssod_run_prints_and_saves_the_summary(tiny_data, tmp_path):
    out = _run(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "3", "--burn-in", "1",
                "--project", str(tmp_path), "--name", "ssod"])
    run = tmp_path / "ssod"
    assert out.count("Burn-in summary (hand-over to SSOD)") == 1 and out.count("Run summary") == 1
    assert out.index("Burn-in summary") < out.index("2/3") < out.index("Run summary")
    s = json.loads((run / "summary.json").read_text())
    rows = CSVLogger(run / "results.csv", RESULTS_COLUMNS).rows()
    assert s["mode"] == "ssod" and s["stage"] == "end" and s["epochs"] == 3
    assert s["images"]["labeled"] + s["images"]["unlabeled"] == 24 and s["images"]["labeled"] > 0
    assert s["burn_in"]["epoch"] == 1 and s["ssod"]["epoch"] in (2, 3) and s["pseudo"]["epoch"] == 3
    assert s["handover_step"] == rows[0]["train/steps"]
    assert s["pseudo"]["reliable_per_image"] == rows[2]["pseudo/reliable"]
    assert "results.png" in s["pictures"] and "pseudo_batch0.jpg" in s["pictures"]
    assert f"{s['images']['labeled']} labeled, {s['images']['unlabeled']} unlabeled" in out
    assert _handover_meta(run / "results.png") == f"{rows[0]['train/steps']:g}"


@pytest.mark.slow
def test_supervised_run_summary(tiny_data, tmp_path):
    out = _run(["--data", str(tiny_data), "--supervised", "--labeled", "50%", "--epochs", "2",
                "--project", str(tmp_path), "--name", "sup"])
    s = json.loads((tmp_path / "sup" / "summary.json").read_text())
    assert s["mode"] == "supervised" and s["best"]["epoch"] in (1, 2) and s["pictures"] == ["results.png"]
    assert "pseudo" not in s and "burn_in" not in s and s["warnings"] == []
    assert out.count("Run summary") == 1 and "Burn-in summary" not in out and "(supervised)" in out
    assert _handover_meta(tmp_path / "sup" / "results.png") == ""


@pytest.mark.slow
def test_never_reliable_pseudo_labels_warn(tiny_data, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"ssod": {"tau1": 0.99, "tau2": 0.999}}))
    out = _run(["--data", str(tiny_data), "--labeled", "25%", "--epochs", "3", "--burn-in", "1", "--thresholds",
                "fixed", "--cfg", str(cfg), "--project", str(tmp_path), "--name", "strict"])
    s = json.loads((tmp_path / "strict" / "summary.json").read_text())
    assert s["pseudo_ever_reliable"] is False and s["pseudo"]["reliable_per_image"] == 0.0
    assert len(s["warnings"]) == 1 and "ever reliable" in s["warnings"][0]
    assert "no pseudo label was ever reliable" in out and "--cfg ssod.tau2" in out
