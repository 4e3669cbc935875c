"""Training logs: the per-epoch progress bar and the val/threshold tables (results.csv: train/results_csv.py)."""

from __future__ import annotations

import math
import resource
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from effteacher.utils.console import console as get_console

PROGRESS_KEYS = ("box", "obj", "cls", "unsup", "pseudo")


def memory_gb() -> float:
    """Peak memory of this process in GB: CUDA max reserved if CUDA is in use, else peak RSS."""
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_reserved() / 1e9
    except Exception:  # noqa: BLE001 - memory display must never break training
        pass
    try:
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


# The progress row: (header, cell width) in display order, and the order in which columns are kept when the
# terminal is narrow (Epoch and box always; then obj, cls, ...). The bar, batch count and ETA always show.
PROGRESS_COLUMNS = (("Epoch", 8), ("Mem", 7), ("box", 8), ("obj", 8), ("cls", 8), ("unsup", 8), ("pseudo", 8),
                    ("Instances", 10), ("Size", 6))
KEEP_ORDER = ("Epoch", "box", "obj", "cls", "unsup", "pseudo", "Mem", "Size", "Instances")
MIN_BAR = 10  # narrowest progress bar in characters
WARMING_UP = "warming up"  # shown instead of the ETA until the first batch is done (workers, teacher starting)


def progress_layout(width: int, total: int) -> tuple[list[str], bool]:
    """Columns of the live row (display order) and whether the elapsed time fits, for a terminal ``width``
    columns wide: the bar (at least ``MIN_BAR``), ``done/total`` and the ETA always fit next to them."""
    count = 2 * len(str(max(total, 1))) + 1
    right = MIN_BAR + count + len(WARMING_UP) + 3  # three one-space gaps: text|bar|count|time
    widths = dict(PROGRESS_COLUMNS)
    room = width - right
    keep: list[str] = []
    for name in KEEP_ORDER:
        if widths[name] <= room or name == "Epoch":
            keep.append(name)
            room -= widths[name]
        else:
            break
    elapsed = room >= len("00:00<") and len(keep) == len(KEEP_ORDER)
    return [n for n, _ in PROGRESS_COLUMNS if n in keep], elapsed


def _num(v: float | None) -> str:
    """A loss or count in at most 7 characters ('-' when not measured)."""
    if v is None:
        return "-"
    s = f"{v:.3g}"
    return s if len(s) <= 7 else f"{v:.1e}"


class _TimeColumn(ProgressColumn):
    """``warming up`` until the first step is done, then the ETA (``elapsed<ETA`` when there is room)."""

    def __init__(self, elapsed: bool) -> None:
        super().__init__()
        self.elapsed = elapsed

    def render(self, task: Any) -> Text:
        if not task.completed:
            return Text(WARMING_UP, style="progress.remaining")
        spent = task.elapsed or 0.0
        eta = spent / task.completed * max((task.total or task.completed) - task.completed, 0)
        return Text(f"{_clock(spent)}<{_clock(eta)}" if self.elapsed else _clock(eta), style="progress.remaining")


class TrainProgress:
    """One epoch's progress: ``Epoch Mem box obj cls unsup pseudo Instances Size`` + bar, count and ETA.

    Call ``update(means, instances, size)`` once per step (``means``: running mean losses,
    see ``progress_values``), then ``close()``. A rich bar on a terminal, with the columns that fit its
    width (``progress_layout``: an 80-column terminal shows Epoch, the losses, the bar, the count and the
    ETA, and ``warming up`` until the first batch is done); on a non-TTY (CI, logs) every column in
    plain lines about every 10% of the epoch and at its end. ``enabled=False`` prints nothing (non-main
    DDP ranks). Usable as a context manager.
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
            console = get_console()
        self.console = console
        elapsed = False
        if console.is_terminal:
            self.columns, elapsed = progress_layout(console.width, self.total)
        else:
            self.columns = [n for n, _ in PROGRESS_COLUMNS]
        self.console.print(self._cells({n: n for n in self.columns}), markup=False, highlight=False, soft_wrap=True)
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                _TimeColumn(elapsed),
                console=console,
                transient=False,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task(self._line({}, 0, 0), total=self.total or None)
            self._progress.start()

    def _cells(self, values: Mapping[str, str]) -> str:
        widths = dict(PROGRESS_COLUMNS)
        return "".join(f"{values[n]:>{widths[n]}}" for n in self.columns)

    def _line(self, means: Mapping[str, float], instances: int, size: int) -> str:
        vals = progress_values(means)
        cells = {"Epoch": f"{self.epoch + 1}/{self.epochs}" if self.epochs > 0 else f"{self.epoch + 1}",
                 "Mem": f"{memory_gb():.3g}G", "Instances": str(int(instances)), "Size": str(int(size)),
                 **{k: _num(vals[k]) for k in PROGRESS_KEYS}}
        return self._cells(cells)

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

    return get_console()
