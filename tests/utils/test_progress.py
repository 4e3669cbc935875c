"""Progress output: the training row and its layout by width, tty and plain lines, the val and threshold tables."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from rich.console import Console

from effteacher.utils.progress import (
    TrainProgress,
    memory_gb,
    print_threshold_table,
    print_val_table,
    progress_layout,
    progress_values,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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


NAMES = ["cat", "dog", "bird"]


# ------------------------------------------------------------------------------ progress, tables
def test_progress_values_mapping():
    v = progress_values({"box": 0.1, "obj": 0.2, "cls": 0.3})
    assert v == {"box": 0.1, "obj": 0.2, "cls": 0.3, "unsup": None, "pseudo": None}
    v = progress_values({"box": 0.1, "ubox": 0.5, "uobj": 0.25, "ucls": 0.25, "reliable": 3, "uncertain": 2})
    assert v["unsup"] == pytest.approx(1.0) and v["pseudo"] == pytest.approx(5.0) and v["obj"] is None


def test_progress_non_tty_plain_lines():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=False, width=200)
    assert not con.is_terminal
    with TrainProgress(2, 10, 25, console=con) as prog:
        for i in range(25):
            prog.update({"box": 0.05, "obj": 0.02, "cls": 0.01}, instances=7 + i, size=128)
    out = buf.getvalue().splitlines()
    assert out[0].split() == ["Epoch", "Mem", "box", "obj", "cls", "unsup", "pseudo", "Instances", "Size"]
    body = [ln for ln in out[1:] if ln.strip()]
    assert 2 <= len(body) <= 12  # throttled, not one line per step
    last = body[-1].split()
    assert last[0] == "3/10" and last[1].endswith("G") and last[2] == "0.05" and last[5] == "-"
    assert last[7] == "31" and last[8] == "128" and last[9] == "25/25"


def test_progress_tty_and_disabled():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=160)
    prog = TrainProgress(0, 1, 3, console=con)
    for _ in range(3):
        prog.update({"box": 1.0, "unsup": 0.5, "pseudo": 4}, 5, 64)
    prog.close()
    assert "1/1" in buf.getvalue() and "3/3" in buf.getvalue()
    quiet = io.StringIO()
    p2 = TrainProgress(0, 1, 3, enabled=False, console=Console(file=quiet))
    p2.update({"box": 1.0}, 1, 64)
    p2.close()
    assert quiet.getvalue() == "" and p2.step == 1
    assert memory_gb() > 0


def test_val_and_threshold_tables():
    buf = io.StringIO()
    con = Console(file=buf, width=120)
    rows = [{"cls": -1, "images": 10, "instances": 30, "p": 0.5, "r": 0.25, "map50": 0.4, "map": 0.2},
            (1, 4, 12, 0.6, 0.3, 0.45, 0.25)]
    table = print_val_table(rows, NAMES, console=con)
    text = buf.getvalue()
    assert [c.header for c in table.columns] == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    assert lines[1] == ["all", "10", "30", "0.5", "0.25", "0.4", "0.2"]
    assert lines[2][0] == "dog"
    buf2 = io.StringIO()
    print_threshold_table(torch.tensor([0.1, 0.2, 0.3]), 0.6, NAMES, console=Console(file=buf2, width=80))
    assert "bird" in buf2.getvalue() and "0.300" in buf2.getvalue() and "0.600" in buf2.getvalue()
    buf3 = io.StringIO()
    print_threshold_table(np.linspace(0, 1, 30), np.ones(30), [str(i) for i in range(30)],
                          console=Console(file=buf3, width=80))
    assert "mean (30 classes)" in buf3.getvalue() and "0.500" in buf3.getvalue()
