"""Training logs: results.csv (resumable), the per-epoch progress bar, and the val/threshold tables."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from effteacher.utils.files import atomic_write_text

PROGRESS_KEYS = ("box", "obj", "cls", "unsup", "pseudo")
_W = 10  # column width of the progress line


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


def memory_gb() -> float:
    """Peak memory of this process in GB: CUDA max reserved if CUDA is in use, else peak RSS."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_reserved() / 1e9
    except Exception:  # noqa: BLE001 - memory display must never break training
        pass
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return 0.0


def progress_values(means: Mapping[str, float]) -> dict[str, float | None]:
    """Values of the ``box obj cls unsup pseudo`` columns from a trainer's running means.

    ``unsup``: ``means['unsup']``, else the sum of ``ubox``/``uobj``/``ucls`` if any is present.
    ``pseudo``: ``means['pseudo']``, else ``reliable + uncertain`` (pseudo boxes per batch).
    Columns with nothing to show are None.
    """
    out: dict[str, float | None] = {k: (float(means[k]) if k in means else None) for k in ("box", "obj", "cls")}
    if "unsup" in means:
        out["unsup"] = float(means["unsup"])
    else:
        parts = [float(means[k]) for k in ("ubox", "uobj", "ucls") if k in means]
        out["unsup"] = sum(parts) if parts else None
    if "pseudo" in means:
        out["pseudo"] = float(means["pseudo"])
    else:
        parts = [float(means[k]) for k in ("reliable", "uncertain") if k in means]
        out["pseudo"] = sum(parts) if parts else None
    return out


class TrainProgress:
    """One epoch's progress: ``Epoch Mem box obj cls unsup pseudo Instances Size`` + bar and ETA.

    Call ``update(means, instances, size)`` once per step (``means``: running mean losses,
    see ``progress_values``), then ``close()``. A rich bar on a terminal; on a non-TTY (CI, logs)
    plain lines about every 10% of the epoch and at its end. ``enabled=False`` prints nothing
    (non-main DDP ranks). Usable as a context manager.
    """

    def __init__(
        self, epoch: int, epochs: int, total: int, enabled: bool = True, console: Console | None = None
    ) -> None:
        """``epoch`` is 0-based (shown 1-based as ``epoch+1/epochs``); ``total`` = steps this epoch."""
        self.epoch, self.epochs, self.total, self.enabled = epoch, epochs, max(int(total), 0), enabled
        self.step = 0
        self._t0 = time.time()
        self._progress: Progress | None = None
        self._next_plain = 0
        if not enabled:
            return
        if console is None:
            from effteacher.utils.console import console as get_console

            console = get_console()
        self.console = console
        header = ("Epoch", "Mem", *PROGRESS_KEYS, "Instances", "Size")
        self.console.print("".join(f"{h:>{_W}}" for h in header), markup=False, highlight=False, soft_wrap=True)
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("<"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task(self._line({}, 0, 0), total=self.total or None)
            self._progress.start()

    def _line(self, means: Mapping[str, float], instances: int, size: int) -> str:
        vals = progress_values(means)
        cells = [f"{self.epoch + 1}/{self.epochs}" if self.epochs > 0 else f"{self.epoch + 1}", f"{memory_gb():.3g}G"]
        cells += ["-" if vals[k] is None else f"{vals[k]:.4g}" for k in PROGRESS_KEYS]
        cells += [str(int(instances)), str(int(size))]
        return "".join(f"{c:>{_W}}" for c in cells)

    def update(self, means: Mapping[str, float], instances: int, size: int) -> None:
        """Advance one step and show ``means`` (running means), the step's instances and image size."""
        self.step += 1
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=self._line(means, instances, size))
            return
        if self.step >= self._next_plain or self.step == self.total:
            elapsed = time.time() - self._t0
            eta = elapsed / self.step * max(self.total - self.step, 0)
            self.console.print(
                f"{self._line(means, instances, size)}  {self.step}/{self.total} "
                f"{_clock(elapsed)}<{_clock(eta)}", markup=False, highlight=False, soft_wrap=True,
            )
            self._next_plain = self.step + max(math.ceil(self.total / 10), 1)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _clock(seconds: float) -> str:
    s = int(seconds) if math.isfinite(seconds) else 0
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


VAL_KEYS = ("cls", "images", "instances", "p", "r", "map50", "map")


def _row_dict(row: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return {k: row.get(k) for k in VAL_KEYS}
    if len(row) != len(VAL_KEYS):
        raise ValueError(f"val table row needs {len(VAL_KEYS)} values {VAL_KEYS}, got {len(row)}")
    return dict(zip(VAL_KEYS, row))


def print_val_table(
    rows: Sequence[Mapping[str, Any] | Sequence[Any]], names: Sequence[str], console: Console | None = None
) -> Table:
    """Print ``Class Images Instances P R mAP50 mAP50-95`` and return the rich Table.

    Each row is a mapping with keys ``cls images instances p r map50 map`` (or a tuple in that
    order); ``cls`` is a class index, or -1 / ``"all"`` for the all-classes row. Rows are shown
    in the given order (put the ``all`` row first).
    """
    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, col in enumerate(("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")):
        table.add_column(col, justify="left" if i == 0 else "right")
    for raw in rows:
        r = _row_dict(raw)
        c = r["cls"]
        label = "all" if c in (-1, "all", None) else (names[int(c)] if 0 <= int(c) < len(names) else str(c))
        nums = [f"{float(r[k]):.3g}" if r[k] is not None else "-" for k in ("p", "r", "map50", "map")]
        table.add_row(label, str(int(r["images"] or 0)), str(int(r["instances"] or 0)), *nums)
    _console(console).print(table)
    return table


def print_threshold_table(tau1: Any, tau2: Any, names: Sequence[str], console: Console | None = None) -> Table:
    """Print the per-class pseudo-label thresholds ``Class tau1 tau2`` and return the Table.

    ``tau1``/``tau2``: tensors/arrays (nc,) or scalars. With more than 20 classes only the
    mean/min/max rows are shown, to keep the log readable.
    """
    nc = len(names)
    t1 = np.broadcast_to(np.asarray(_to_numpy(tau1), dtype=np.float64).reshape(-1), (nc,)) if nc else np.zeros(0)
    t2 = np.broadcast_to(np.asarray(_to_numpy(tau2), dtype=np.float64).reshape(-1), (nc,)) if nc else np.zeros(0)
    table = Table(box=None, header_style="bold", pad_edge=False, title="pseudo-label thresholds")
    table.add_column("Class")
    table.add_column("tau1", justify="right")
    table.add_column("tau2", justify="right")
    if nc <= 20:
        for n, a, b in zip(names, t1, t2):
            table.add_row(str(n), f"{a:.3f}", f"{b:.3f}")
    else:
        for label, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
            table.add_row(f"{label} ({nc} classes)", f"{fn(t1):.3f}", f"{fn(t2):.3f}")
    _console(console).print(table)
    return table


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _console(console: Console | None) -> Console:
    if console is not None:
        return console
    from effteacher.utils.console import console as get_console

    return get_console()
