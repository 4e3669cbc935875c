"""results.csv: its columns, the row of one epoch (unmeasured cells empty), a resumable CSV logger, and the
one-line epoch summary printed under the progress bar."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effteacher.utils.files import atomic_write_text


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    return f"{f:.6g}"


def _parse(s: str) -> float | str:
    try:
        return float(s)
    except ValueError:
        return s


class CSVLogger:
    """``results.csv``: an unpadded header (``columns``), then one row per epoch (1-based ``epoch``).

    ``log(row)`` appends a row; ``truncate(n)`` keeps epochs 1..n (resume after a kill, which may
    also have left a half-written last line); ``rows()`` reads the file back.
    """

    def __init__(self, path: str | Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"duplicate CSV columns: {self.columns}")

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row. ``row`` maps column -> value (missing columns are left empty).

        Must hold ``epoch`` (1-based) when that is a column; an unknown key is a ValueError.
        """
        unknown = [k for k in row if k not in self.columns]
        if unknown:
            raise ValueError(f"unknown results.csv columns {unknown}; known: {self.columns}")
        if "epoch" in self.columns and "epoch" not in row:
            raise ValueError("results.csv row needs an 'epoch' (1-based)")
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(self.columns)
            w.writerow([_fmt(row.get(c)) for c in self.columns])
            f.flush()

    def rows(self) -> list[dict[str, float | str]]:
        """Complete rows of the file as dicts (numbers as float); [] if there is no file.

        Rows with the wrong number of fields (a kill mid-write) are dropped.
        """
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            lines = list(csv.reader(f))
        if not lines:
            return []
        header = lines[0]
        return [{k: _parse(v) for k, v in zip(header, r)} for r in lines[1:] if len(r) == len(header)]

    def truncate(self, n_epochs: int) -> list[dict[str, float | str]]:
        """Keep the rows of epochs 1..``n_epochs`` (rewritten atomically, in this logger's columns).

        Returns the kept rows. Values of columns this logger does not have are dropped; new
        columns are empty in old rows.
        """
        kept = [r for r in self.rows() if isinstance(r.get("epoch"), float) and r["epoch"] <= n_epochs]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in kept:
            w.writerow([_fmt(int(r[c]) if c == "epoch" else r.get(c)) for c in self.columns])
        atomic_write_text(self.path, buf.getvalue())
        return kept


# results.csv columns. A cell that was not measured in an epoch is left empty (never 0): the metrics of an
# epoch without validation, the unsup/pseudo columns of burn-in epochs, pseudo precision/recall without hidden
# labels, the domain loss without domain adaptation. train/steps counts optimizer steps (burn-in epochs pass
# over L, SSOD epochs over U, so epochs differ in length; plot against steps).
RESULTS_COLUMNS = [
    "epoch", "time", "train/iterations", "train/steps", "train/box_loss", "train/obj_loss", "train/cls_loss",
    "unsup/box_loss", "unsup/obj_loss", "unsup/cls_loss", "unsup/da_loss",
    "pseudo/reliable", "pseudo/uncertain", "pseudo/tau1", "pseudo/tau2", "pseudo/precision", "pseudo/recall",
    "pseudo/precision_agnostic",
    "metrics/precision", "metrics/recall", "metrics/mAP50", "metrics/mAP50-95", "lr",
]
# results.csv column <- key of the trainer's epoch means (absent key = not measured this epoch)
_MEANS = {
    "train/box_loss": "box", "train/obj_loss": "obj", "train/cls_loss": "cls", "unsup/box_loss": "ubox",
    "unsup/obj_loss": "uobj", "unsup/cls_loss": "ucls", "unsup/da_loss": "da", "pseudo/reliable": "reliable",
    "pseudo/uncertain": "uncertain", "pseudo/tau1": "tau1", "pseudo/tau2": "tau2",
}
# pseudo-label quality column <- (numerator, denominator) of the epoch's counts (ssod_step.pseudo_quality)
_RATIOS = {
    "pseudo/precision": ("pseudo_tp", "pseudo_pred"), "pseudo/recall": ("pseudo_tp", "pseudo_gt"),
    "pseudo/precision_agnostic": ("pseudo_tp_agnostic", "pseudo_pred"),
}


def results_row(epoch: int, seconds: float, iterations: int, steps: int, means: Mapping[str, float],
                metrics: Mapping[str, float], lr: float, domain_adapt: bool = True) -> dict[str, Any]:
    """One results.csv row: ``epoch`` 1-based, ``means`` the epoch's mean losses/pseudo counts (keys of a burn-in
    or SSOD epoch), ``metrics`` the validation's ``metrics/*`` ({} when the epoch was not validated).

    Pseudo precision/recall are ratios of the epoch's counts (``pseudo_tp / pseudo_pred``, ...).
    What was not measured is None (an empty cell): missing means, missing metrics, a ratio with nothing to
    divide by (no reliable pseudo box, no hidden box), and ``unsup/da_loss`` when ``domain_adapt`` is off.
    """
    row: dict[str, Any] = {"epoch": epoch, "time": round(seconds, 2), "train/iterations": iterations,
                           "train/steps": steps, "lr": lr}
    for col, key in _MEANS.items():
        row[col] = float(means[key]) if key in means else None
    for col, (num, den) in _RATIOS.items():
        row[col] = float(means[num]) / float(means[den]) if float(means.get(den, 0.0)) > 0 else None
    if not domain_adapt:
        row["unsup/da_loss"] = None
    for col in RESULTS_COLUMNS:
        if col.startswith("metrics/"):
            row[col] = float(metrics[col]) if col in metrics else None
    return row


def epoch_summary(row: Mapping[str, Any]) -> list[str]:
    """At most two short lines after an epoch: the validation (when there was one) and the pseudo labels
    (SSOD epochs). The per-class tables come at the end of the run (or every epoch with --verbose)."""
    pad = " " * 8
    lines = []
    if row.get("metrics/mAP50") is not None:
        lines.append(f"{pad}val: P {row['metrics/precision']:.3f}  R {row['metrics/recall']:.3f}  "
                     f"mAP50 {row['metrics/mAP50']:.3f}  mAP50-95 {row['metrics/mAP50-95']:.3f}")
    if row.get("pseudo/reliable") is not None:
        text = (f"{pad}pseudo/batch: {row['pseudo/reliable']:.1f} reliable, {row['pseudo/uncertain']:.1f} "
                f"uncertain")
        if row.get("pseudo/tau2") is not None:
            text += f"; tau {row['pseudo/tau1']:.2f}/{row['pseudo/tau2']:.2f}"
        if row.get("pseudo/precision") is not None:
            text += f"; P {row['pseudo/precision']:.2f} R {row['pseudo/recall']:.2f}"
        lines.append(text)
    return lines
