"""The run summary a person reads: printed at the hand-over and at the end of training, saved as summary.json.

Pure functions from results.csv rows (``CSVLogger.rows()``: numbers as float, empty cells as "") to a dict
(``build_summary``) to console lines (``summary_lines``) and warnings (``summary_warnings``); ``report``
prints them and writes ``summary.json``. A supervised run's summary has no burn-in, lift or pseudo parts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from effteacher.utils.console import info, warn
from effteacher.utils.files import atomic_write_text

Row = Mapping[str, Any]
PRECISION_WARN = 0.5  # reliable pseudo labels below this precision teach the student more noise than objects
_TAU2 = "--thresholds fixed with --cfg ssod.tau2"


def _num(row: Row, col: str) -> float | None:
    """The cell as a float, None when it was not measured (an empty cell)."""
    v = row.get(col)
    return float(v) if isinstance(v, (int, float)) else None


def is_ssod_row(row: Row) -> bool:
    """SSOD epochs always log their pseudo-label counts; burn-in epochs leave them empty."""
    return _num(row, "pseudo/reliable") is not None


def best_row(rows: Sequence[Row]) -> dict[str, Any] | None:
    """The best validated row by the trainer's fitness (0.1 mAP50 + 0.9 mAP50-95; the first on ties, as best.pt
    keeps it): {epoch, mAP50-95, mAP50}; None when no row was validated."""
    best: dict[str, Any] | None = None
    top = -1.0
    for r in rows:
        m, m50 = _num(r, "metrics/mAP50-95"), _num(r, "metrics/mAP50")
        if m is None or m50 is None:
            continue
        if 0.1 * m50 + 0.9 * m > top:
            top = 0.1 * m50 + 0.9 * m
            best = {"epoch": int(_num(r, "epoch") or 0), "mAP50-95": m, "mAP50": m50}
    return best


def handover_step(rows: Sequence[Row]) -> float | None:
    """Optimizer steps at the hand-over: those of the last burn-in row before the first SSOD row (0 without a
    burn-in); None when no SSOD epoch was logged."""
    for i, r in enumerate(rows):
        if is_ssod_row(r):
            return (_num(rows[i - 1], "train/steps") or 0.0) if i else 0.0
    return None


def _pseudo(row: Row) -> dict[str, Any]:
    return {"epoch": int(_num(row, "epoch") or 0), "reliable_per_image": _num(row, "pseudo/reliable"),
            "uncertain_per_image": _num(row, "pseudo/uncertain"), "precision": _num(row, "pseudo/precision"),
            "recall": _num(row, "pseudo/recall"), "precision_agnostic": _num(row, "pseudo/precision_agnostic")}


def build_summary(rows: Sequence[Row], labeled: int, unlabeled: int, ssod: bool, stage: str,
                  pictures: Sequence[str] = ()) -> dict[str, Any]:
    """The summary of a run from its results.csv ``rows``.

    ``stage``: "hand-over" (every row is a burn-in row) or "end". ``pictures``: file names in the run folder
    worth a look. SSOD keys: ``burn_in`` (the best burn-in validation: the supervised model on the labels),
    ``ssod`` (the best SSOD-epoch validation), ``lift`` (ssod - burn_in), ``handover_step``, ``pseudo`` (the last
    SSOD epoch). ``best`` is the best validation of the whole run, the one best.pt holds.
    """
    out: dict[str, Any] = {"mode": "ssod" if ssod else "supervised", "stage": stage, "epochs": len(rows),
                           "images": {"labeled": labeled, "unlabeled": unlabeled if ssod else 0},
                           "best": best_row(rows)}
    if ssod:
        burn = [r for r in rows if not is_ssod_row(r)]
        ssod_rows = [r for r in rows if is_ssod_row(r)]
        b, s = best_row(burn), best_row(ssod_rows)
        lift = None if b is None or s is None else {k: s[k] - b[k] for k in ("mAP50-95", "mAP50")}
        hstep = (_num(burn[-1], "train/steps") or 0.0) if stage == "hand-over" and burn else handover_step(rows)
        out.update({"burn_in": b, "ssod": s, "lift": lift, "handover_step": hstep,
                    "pseudo": _pseudo(ssod_rows[-1]) if ssod_rows else None,
                    "pseudo_ever_reliable": any((_num(r, "pseudo/reliable") or 0.0) > 0 for r in ssod_rows)})
    out["warnings"] = summary_warnings(out)
    out["pictures"] = list(pictures)
    return out


def summary_warnings(s: Mapping[str, Any]) -> list[str]:
    """What went wrong with the pseudo labels, and what to try."""
    if s["mode"] != "ssod" or s.get("pseudo") is None:
        return []
    if not s["pseudo_ever_reliable"]:
        return ["no pseudo label was ever reliable: the student learned from the labeled images only; try a longer "
                f"burn-in (--burn-in), a lower tau2 ({_TAU2}) or more labels"]
    p = s["pseudo"]["precision"]
    if p is not None and p < PRECISION_WARN:
        return [f"pseudo-label precision {p:.2f} in the last epoch is below {PRECISION_WARN}: most reliable pseudo "
                f"boxes are wrong; try a longer burn-in (--burn-in), a higher tau2 ({_TAU2}) or more labels"]
    return []


def _map(m: Mapping[str, Any]) -> str:
    return f"mAP50-95 {m['mAP50-95']:.3f}  mAP50 {m['mAP50']:.3f} (epoch {m['epoch']})"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def summary_lines(s: Mapping[str, Any]) -> list[str]:
    """The block printed to the console (plain text, short lines; the warnings come separately)."""
    img = s["images"]
    lines = [f"images     {img['labeled']} labeled" + (f", {img['unlabeled']} unlabeled" if s["mode"] == "ssod"
                                                        else " (supervised)")]
    if s["mode"] == "supervised":
        lines.append("best       " + (_map(s["best"]) if s["best"] else "no validation"))
    else:
        b = s["burn_in"]
        lines.append("burn-in    " + (_map(b) + ": the supervised model on your labels" if b else "no validation"))
        if s["stage"] == "end":
            lines.append(_ssod_line(s))
            if s["pseudo"] is not None:
                lines.append(_pseudo_line(s["pseudo"]))
            if s["best"] is not None and b is not None and s["best"]["epoch"] == b["epoch"]:
                lines.append(f"best.pt    the burn-in model (epoch {b['epoch']}): no SSOD epoch beat it")
    if s["pictures"]:
        lines.append("pictures   " + ", ".join(s["pictures"]))
    return lines


def _ssod_line(s: Mapping[str, Any]) -> str:
    if s["ssod"] is None:
        return "SSOD       no validation"
    lift = s["lift"]
    diff = "" if lift is None else f"; {lift['mAP50-95']:+.3f} / {lift['mAP50']:+.3f} vs burn-in"
    return f"SSOD       {_map(s['ssod'])}{diff}"


def _pseudo_line(p: Mapping[str, Any]) -> str:
    text = f"pseudo     epoch {p['epoch']}: {p['reliable_per_image']:.2f} reliable boxes/image"
    if p["precision"] is not None or p["recall"] is not None:
        text += (f", precision {_ratio(p['precision'])} recall {_ratio(p['recall'])} (class-agnostic precision "
                 f"{_ratio(p['precision_agnostic'])})")
    return text


def pictures(run_dir: Path) -> list[str]:
    """The run's pictures a person should look at: the pseudo-label batches and results.png, when present."""
    names = sorted(p.name for p in run_dir.glob("pseudo_batch*.jpg"))
    return names + (["results.png"] if (run_dir / "results.png").exists() else [])


def report(run_dir: Path, rows: Sequence[Row], labeled: int, unlabeled: int, ssod: bool,
           stage: str) -> dict[str, Any]:
    """Print the summary block and its warnings, write ``summary.json`` in ``run_dir``; returns the summary."""
    s = build_summary(rows, labeled, unlabeled, ssod, stage, pictures(run_dir) if stage == "end" else ())
    title = "Burn-in summary (hand-over to SSOD)" if stage == "hand-over" else "Run summary"
    info(f"[bold]{title}[/bold] ({escape(str(run_dir / 'summary.json'))})")
    for line in summary_lines(s):
        info("  " + escape(line))
    for w in s["warnings"]:
        warn(w)
    atomic_write_text(run_dir / "summary.json", json.dumps(s, indent=2) + "\n")
    return s
