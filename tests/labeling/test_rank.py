"""rank: to_label.txt and rank.csv from a teacher over a dataset's unlabeled images."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from effteacher.cli import app


def _cli(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _text(res) -> str:
    """The command's output on one line (rich wraps long lines)."""
    return " ".join(res.output.split())


@pytest.mark.slow
def test_rank_writes_k_unique_unlabeled_paths(loop, tmp_path):
    res = _cli(["rank", "--weights", str(loop["hot"]), "--data", str(loop["yaml_u"]), "--budget", "5",
                "--workers", "0", "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "exp"
    picks = (out / "to_label.txt").read_text().splitlines()
    assert len(picks) == 5 == len(set(picks)) and all(Path(p).is_file() for p in picks)
    labeled = set((loop["run"] / "split" / "labeled.txt").read_text().splitlines())
    assert not labeled & set(picks)
    with open(out / "rank.csv") as f:
        rows = list(csv.DictReader(f))
    unlabeled = set((loop["run"] / "split" / "unlabeled.txt").read_text().splitlines())
    assert {r["image"] for r in rows} == unlabeled | {str(p) for p in loop["extra"].glob("*.jpg")}
    assert [r["image"] for r in rows[:5]] == picks and [r["pick"] for r in rows[:5]] == ["1", "2", "3", "4", "5"]
    assert all(r["pick"] == "" for r in rows[5:])
    for r in rows:
        for k in ("score", "uncertainty", "disagreement", "rarity"):
            assert 0.0 <= float(r[k]) <= 1.0, (k, r[k])
        assert float(r["novelty"]) >= 0 and r["source"] in ("train", "unlabeled")
    # a budget above the candidates lists every one of them once
    res = _cli(["rank", "--weights", str(loop["hot"]), "--data", str(loop["yaml_u"]), "--budget", "500",
                "--workers", "0", "--project", str(tmp_path)])
    assert res.exit_code == 0 and "more than the" in _text(res)
    allp = (tmp_path / "exp2" / "to_label.txt").read_text().splitlines()
    assert len(allp) == len(set(allp)) == len(rows)
