"""benchmarks/precision_accuracy.py: per-seed arms compared by their means against the spread between seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

HEADER = ["epoch", "train/iterations", "train/steps", "metrics/mAP50", "metrics/mAP50-95"]


def fake_run(path: Path, maps: list[float], done: bool = True) -> None:
    path.mkdir(parents=True)
    with open(path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i, m in enumerate(maps, 1):
            w.writerow([i, 3 * i, 3 * i, m + 0.3, m])
    if done:
        (path / "done.json").write_text(json.dumps({"wall_s": 1.0}))


def test_record_compares_means_with_the_seed_spread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.common as common
    from benchmarks import precision_accuracy as pa

    for s, top in enumerate((0.38, 0.34, 0.36)):
        fake_run(tmp_path / f"fp32_s{s}", [0.1, top - 0.01, top])
    for s, top in enumerate((0.37, 0.36, 0.35)):  # mean 0.36 vs 0.36: within
        fake_run(tmp_path / f"bf16_s{s}", [0.1, top, top - 0.01])
    for s, top in enumerate((0.30, 0.22)):  # mean -0.10 vs fp32 on the same seeds: outside
        fake_run(tmp_path / f"fp32cl_s{s}", [0.1, top, top])
    fake_run(tmp_path / "bf16cl_s0", [0.1, 0.2], done=False)  # unfinished: left out
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    pa.summarise(tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    line = next(t for t in text.splitlines() if t.startswith("`precision_accuracy"))
    assert "fp32 0.360+-0.020 (seeds 0,1,2)" in line
    assert "bf16 0.360+-0.010 (seeds 0,1,2) +0.000 vs fp32 (within the seed spread)" in line
    assert "fp32cl 0.260+-0.057 (seeds 0,1) -0.100 vs fp32 (OUTSIDE the seed spread)" in line
    assert "bf16cl" not in line and "- bf16 seed 0: best 0.3700 at iteration 6" in text


def test_record_needs_an_fp32_arm(tmp_path: Path) -> None:
    from benchmarks import precision_accuracy as pa

    fake_run(tmp_path / "bf16_s0", [0.1, 0.2])
    with pytest.raises(SystemExit, match="no finished fp32 arm"):
        pa.summarise(tmp_path)


def test_record_against_another_reference_keeps_the_fp32_section(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.common as common
    from benchmarks import precision_accuracy as pa

    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    for s, top in enumerate((0.38, 0.34)):
        fake_run(tmp_path / f"fp32_s{s}", [0.1, top])
    pa.summarise(tmp_path)
    for s, top in enumerate((0.37, 0.36, 0.35)):
        fake_run(tmp_path / f"bf16_s{s}", [0.1, top])
    for s, top in ((1, 0.002), (2, 0.36)):  # compared on the seeds both ran: (0.002 + 0.36) / 2 - 0.355
        fake_run(tmp_path / f"bf16cl_s{s}", [0.0, top])
    pa.summarise(tmp_path, "bf16")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## precision_accuracy\n" in text and "## precision_accuracy (vs bf16)\n" in text
    line = next(t for t in text.splitlines() if t.startswith("`precision_accuracy (vs bf16)"))
    assert "bf16cl 0.181+-0.253 (seeds 1,2) -0.174 vs bf16 (within the seed spread)" in line
