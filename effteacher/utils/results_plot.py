"""results.png: validation mAP around the hand-over with pseudo-label precision/recall, then every other measured
results.csv column, all against optimizer steps."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def results_series(csv_path: str | Path) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The measured points of a results.csv: (x axis name, {column: (x, y)}), columns in file order.

    The x axis is ``train/steps`` (optimizer steps; else ``train/iterations``, else ``epoch``: the first of
    them filled in every row), since burn-in epochs (over L) and SSOD epochs (over U) differ in length.
    Empty cells (not measured, e.g. the metrics of an epoch without validation) are left out, never read
    as 0; columns with no measured point are dropped. Rows cut by a kill (wrong field count) are skipped.
    """
    csv_path = Path(csv_path)
    header: list[str] = []
    rows: list[list[str]] = []
    if csv_path.exists():
        with open(csv_path, newline="") as f:
            lines = list(csv.reader(f))
        if lines:
            header, rows = lines[0], [r for r in lines[1:] if len(r) == len(lines[0])]

    def num(s: str) -> float:
        try:
            return float(s)
        except ValueError:
            return float("nan")

    data = np.array([[num(v) for v in r] for r in rows], dtype=np.float64).reshape(len(rows), len(header))
    x, xlabel = np.arange(1, len(rows) + 1, dtype=np.float64), "epoch"
    for name in ("train/steps", "train/iterations", "epoch"):
        if name in header and not np.isnan(data[:, header.index(name)]).any():
            x, xlabel = data[:, header.index(name)], name.split("/")[-1]
            break
    skip = {"epoch", "train/steps", "train/iterations"}
    series = {}
    for i, h in enumerate(header):
        ok = ~np.isnan(data[:, i])
        if h not in skip and ok.any():
            series[h] = (x[ok], data[ok, i])
    return xlabel, series


# results.png's top panel: validation mAP (left axis) and pseudo-label quality (right axis) around the hand-over
_MAP_COLS = {"metrics/mAP50-95": "tab:blue", "metrics/mAP50": "tab:cyan"}
_PSEUDO_COLS = {"pseudo/precision": "tab:orange", "pseudo/recall": "tab:red"}


def first_ssod_step(csv_path: str | Path) -> float | None:
    """Optimizer steps at the hand-over read from results.csv: those of the row before the first SSOD row (the
    first with ``pseudo/reliable``), 0 when the first row is one; None without an SSOD row."""
    _, series = results_series(csv_path)
    if "pseudo/reliable" not in series:
        return None
    first = series["pseudo/reliable"][0][0]
    before = [x for x in _all_steps(series) if x < first]
    return max(before) if before else 0.0


def _all_steps(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    xs = [x for x, _ in series.values()]
    return np.unique(np.concatenate(xs)) if xs else np.zeros(0)


def _mAP_panel(ax: Any, series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str,
               handover: float | None) -> None:
    """Validation mAP before and after the hand-over (a vertical line; the burn-in's best mAP50-95 carried on
    as a dotted level so the lift shows), pseudo precision/recall on a second y axis."""
    handles = []
    for col, c in _MAP_COLS.items():
        if col in series:
            x, y = series[col]
            handles += ax.plot(x, y, marker="o", markersize=4, linewidth=1.8, color=c, label=col.split("/")[1])
    title = "validation mAP"
    if handover is not None:
        ax.axvspan(0, handover, color="grey", alpha=0.08, linewidth=0)  # the burn-in: supervised on the labels
        ax.axvline(handover, color="black", linestyle="--", linewidth=1.2)
        ax.text(handover, 0.98, "burn-in | SSOD ", transform=ax.get_xaxis_transform(), va="top", ha="center",
                fontsize=8, backgroundcolor="white")
        if "metrics/mAP50-95" in series:
            x, y = series["metrics/mAP50-95"]
            before, after = y[x <= handover], y[x > handover]
            if before.size:
                xmax = max(float(x.max()), handover)
                handles += ax.plot([handover, xmax], [before.max()] * 2, linestyle=":", color="tab:blue",
                                   linewidth=1.2, label="burn-in best mAP50-95")
                if after.size:
                    title += (f": mAP50-95 burn-in best {before.max():.3f}, SSOD best {after.max():.3f} "
                              f"({after.max() - before.max():+.3f})")
    tops = [float(series[c][1].max()) for c in _MAP_COLS if c in series]
    ax.set_ylim(0, max(tops + [0.0]) * 1.1 or 0.05)  # from 0: a lift is read against the whole scale
    ax.set_ylabel("mAP", fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.grid(alpha=0.3)
    pseudo = [c for c in _PSEUDO_COLS if c in series]
    if pseudo:
        ax2 = ax.twinx()
        for col in pseudo:
            x, y = series[col]
            handles += ax2.plot(x, y, marker=".", linestyle="--", linewidth=1.2, color=_PSEUDO_COLS[col],
                                label=col)
        ax2.set_ylim(0, 1.05)
        ax2.set_ylabel("pseudo-label precision / recall", fontsize=9)
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(handles), fontsize=8,
                  frameon=False)  # under the panel: never over the curves
    ax.set_title(title, fontsize=10)


def plot_results(csv_path: str | Path, handover_step: float | None = None) -> Path:
    """``results.png`` next to ``csv_path``: on top validation mAP around the hand-over (a vertical line at
    ``handover_step``, else at ``first_ssod_step``) with pseudo precision/recall, below every other measured
    column, all against optimizer steps (``results_series``). The PNG's text chunk ``handover_step`` holds
    the line's position ("" without one)."""
    xlabel, series = results_series(csv_path)
    if handover_step is None:
        handover_step = first_ssod_step(csv_path)
    rest = {k: v for k, v in series.items() if k not in _MAP_COLS and k not in _PSEUDO_COLS}
    ncols = 5
    nrows = max(math.ceil(len(rest) / ncols), 1)
    fig = Figure(figsize=(3.0 * ncols, 2.6 * nrows + 3.6), dpi=100)
    FigureCanvasAgg(fig)  # drawn by Agg: no pyplot, no global backend state
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[3.6] + [2.6] * nrows)
    top = fig.add_subplot(grid[0, :])
    _mAP_panel(top, series, xlabel, handover_step)
    axes = [fig.add_subplot(grid[1 + k // ncols, k % ncols]) for k in range(nrows * ncols)]
    for ax, (name, (x, y)) in zip(axes, rest.items()):
        ax.plot(x, y, marker=".", linewidth=1.5, markersize=5)
        if handover_step is not None:
            ax.axvline(handover_step, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(rest):]:
        ax.axis("off")
    if not series:
        top.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=top.transAxes)
    path = Path(csv_path).with_name("results.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"handover_step": "" if handover_step is None else f"{handover_step:g}"})
    return path
