"""benchmarks/loader_threads.py at a tiny size: every (workers, threads) pair is timed in both modes and recorded."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_loader_threads_times_every_pair_and_records_one_line(tmp_path, monkeypatch):
    import benchmarks.common as common
    from benchmarks import loader_threads

    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    line = loader_threads.main(["--sizes", "64", "--batch", "2", "--steps", "2", "--workers", "0", "1",
                                "--threads", "1", "--rounds", "2"])
    assert line.startswith("loader_threads: sup@64 best w") and "; ssod@64 best w" in line
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## loader_threads" in text
    for mode in ("sup at 64 px", "ssod at 64 px"):
        detail = next(ln for ln in text.splitlines() if ln.startswith(f"- {mode}"))
        assert "w0/t1 " in detail and "w1/t1 " in detail  # both pairs measured, with their ranges
