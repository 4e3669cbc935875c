"""Golden check: a tiny supervised run and a tiny SSOD run give the recorded numbers and checkpoint layout.

Both runs go through the public CLI (``effteacher train``) in-process on the ``tiny_data`` fixture, on CPU
with one thread, workers 0 and a fixed seed. What is compared with ``tests/golden/runs.json``:

- every numeric cell of results.csv, per epoch and column (wall-time columns excluded), to rel 1e-4 /
  abs 1e-5; an empty cell (not measured) must stay empty, and the set of columns must stay the same;
- for each checkpoint in ``weights/`` (last.pt, best.pt, burn_in.pt for SSOD): the sorted top-level keys,
  the keys of ``model`` and ``train_state``, which weights it holds (``which``), its epoch, and every
  ``state_dict`` key with its shape; plus the sum of the absolute values of the ``state_dict`` (to
  rel 1e-6) as a fingerprint of the saved weights.

The check exists so that reorganising the code (moving modules, rebuilding the Trainer) is shown to keep
behaviour. It imports only the CLI and the sample-data generator (via conftest), so it survives module moves.

Regenerate the golden file ONLY when a change of behaviour is intended, and say so in CHANGELOG.md:

    EFFTEACHER_UPDATE_GOLDEN=1 pytest tests/train/test_golden.py

In that mode each run is done twice and must give identical results (determinism) before the JSON is written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from effteacher.cli import app

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "runs.json"
UPDATE = os.environ.get("EFFTEACHER_UPDATE_GOLDEN") == "1"
REL, ABS = 1e-4, 1e-5  # results.csv cells (six significant digits)
# The sum of |weights| is dominated by the initial weights that a short run barely moves, so it gets a
# tighter tolerance: float noise from reordered operations stays far below it, a changed loss gain does not.
WEIGHTS_REL = 1e-6
# fp32 on every CPU: the recorded numbers are fp32 ones ('auto' / 'bf16' would change them where bf16 is native)
COMMON = ["--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu", "--seed", "0", "--precision", "fp32"]
# Low starting pseudo-label thresholds, so that the barely trained teacher of a tiny run still yields
# reliable and uncertain pseudo boxes and the unlabeled losses and the Epoch Adaptor are exercised.
SSOD_CFG = "ssod:\n  tau1: 0.0001\n  tau2: 0.0005\n"
RUNS = {
    "supervised": ["--supervised", "--labeled", "50%", "--epochs", "3"],
    "ssod": ["--labeled", "25%", "--epochs", "3", "--burn-in", "1"],
}


@pytest.fixture
def one_thread():
    """Results must not depend on the machine's thread count: one intra-op thread, restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _is_wall_time(column: str) -> bool:
    return "time" in column.rsplit("/", 1)[-1]


def _cell(value: str) -> float | str | None:
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _results(run: Path) -> dict[str, Any]:
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"{run / 'results.csv'} has no rows"
    columns = [c for c in rows[0] if not _is_wall_time(c)]
    return {"columns": columns,
            "epochs": {r["epoch"]: {c: _cell(r[c]) for c in columns if c != "epoch"} for r in rows}}


def _checkpoint(path: Path) -> dict[str, Any]:
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt.get("state_dict", {})
    return {
        "keys": sorted(ckpt),
        "model_keys": sorted(ckpt["model"]) if isinstance(ckpt.get("model"), dict) else None,
        "train_state_keys": sorted(ckpt["train_state"]) if isinstance(ckpt.get("train_state"), dict) else None,
        "which": ckpt.get("which"),
        "epoch": ckpt.get("epoch"),
        "state_dict": {k: list(sd[k].shape) for k in sorted(sd)},
        "state_dict_abs_sum": float(sum(t.detach().double().abs().sum() for t in sd.values())),
    }


def _summary(run: Path) -> dict[str, Any]:
    weights = sorted((run / "weights").glob("*.pt"))
    return {"results": _results(run), "checkpoints": {p.name: _checkpoint(p) for p in weights}}


def _train(name: str, data: Path, tmp_path: Path, run_name: str) -> Path:
    args = ["train", "--data", str(data), *RUNS[name], *COMMON, "--project", str(tmp_path), "--name", run_name]
    if name == "ssod":
        cfg = tmp_path / "ssod_cfg.yaml"
        cfg.write_text(SSOD_CFG)
        args += ["--cfg", str(cfg)]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output[-3000:]
    return tmp_path / run_name


def _close(expected: Any, got: Any, tol: tuple[float, float]) -> bool:
    if isinstance(expected, float) and isinstance(got, float):
        if math.isnan(expected) or math.isnan(got):
            return math.isnan(expected) and math.isnan(got)
        return math.isclose(got, expected, rel_tol=tol[0], abs_tol=tol[1])
    return expected == got


def _list_change(expected: Any, got: Any) -> str:
    """'missing [..], extra [..]' for two key lists, 'expected X, got Y' otherwise (or for a reordering)."""
    if isinstance(expected, list) and isinstance(got, list) and set(expected) != set(got):
        return f"missing {sorted(set(expected) - set(got))}, extra {sorted(set(got) - set(expected))}"
    return f"expected {expected!r}, got {got!r}"


def _diff(name: str, expected: dict[str, Any], got: dict[str, Any], exact: bool = False) -> list[str]:
    """Every difference between two summaries, one readable line each; ``exact``: floats must be equal."""
    tol, wtol = ((0.0, 0.0), (0.0, 0.0)) if exact else ((REL, ABS), (WEIGHTS_REL, 0.0))
    out: list[str] = []
    er, gr = expected["results"], got["results"]
    if er["columns"] != gr["columns"]:
        out.append(f"{name} results.csv columns: " + _list_change(er["columns"], gr["columns"]))
    e_epochs, g_epochs = sorted(er["epochs"], key=float), sorted(gr["epochs"], key=float)
    if e_epochs != g_epochs:
        out.append(f"{name} results.csv epochs: expected {e_epochs}, got {g_epochs}")
    for epoch, row in er["epochs"].items():
        grow = gr["epochs"].get(epoch, {})
        for col, want in row.items():
            if col in grow and not _close(want, grow[col], tol):
                out.append(f"{name} results.csv epoch {epoch} column {col!r}: expected {want!r}, got {grow[col]!r}")
    ec, gc = expected["checkpoints"], got["checkpoints"]
    if sorted(ec) != sorted(gc):
        out.append(f"{name} checkpoints in weights/: expected {sorted(ec)}, got {sorted(gc)}")
    for file in sorted(set(ec) & set(gc)):
        e, g = ec[file], gc[file]
        for field in ("keys", "model_keys", "train_state_keys", "which", "epoch"):
            if e[field] != g[field]:
                out.append(f"{name} {file} {field}: " + _list_change(e[field], g[field]))
        es, gs = e["state_dict"], g["state_dict"]
        missing, extra = sorted(set(es) - set(gs)), sorted(set(gs) - set(es))
        if missing or extra:
            out.append(f"{name} {file} state_dict: {len(missing)} keys missing {missing[:5]}, "
                       f"{len(extra)} extra {extra[:5]}")
        for k in sorted(set(es) & set(gs)):
            if es[k] != gs[k]:
                out.append(f"{name} {file} state_dict[{k!r}] shape: expected {es[k]}, got {gs[k]}")
        if not _close(e["state_dict_abs_sum"], g["state_dict_abs_sum"], wtol):
            out.append(f"{name} {file} sum of |weights|: expected {e['state_dict_abs_sum']!r}, "
                       f"got {g['state_dict_abs_sum']!r}")
    return out


def _write_golden(name: str, summary: dict[str, Any]) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    golden[name] = summary
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(golden, indent=1, sort_keys=True)
    # one line per list of scalars (a shape, a key list): short diffs when the file is regenerated
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    GOLDEN.write_text(text + "\n")


def _check(name: str, data: Path, tmp_path: Path) -> None:
    got = _summary(_train(name, data, tmp_path, "a"))
    if UPDATE:
        again = _summary(_train(name, data, tmp_path, "b"))
        unstable = _diff(name, got, again, exact=True)
        assert not unstable, "two identical runs differ, golden file not written:\n" + "\n".join(unstable)
        _write_golden(name, got)
        return
    assert GOLDEN.is_file(), f"{GOLDEN} missing; generate it with EFFTEACHER_UPDATE_GOLDEN=1 pytest {__file__}"
    golden = json.loads(GOLDEN.read_text())
    assert name in golden, f"no '{name}' entry in {GOLDEN}; generate it with EFFTEACHER_UPDATE_GOLDEN=1"
    problems = _diff(name, golden[name], got)
    shown = problems[:40] + ([f"... and {len(problems) - 40} more"] if len(problems) > 40 else [])
    assert not problems, (f"{len(problems)} differences from {GOLDEN.name} (results.csv: rel {REL} / abs {ABS}, "
                          f"sum of |weights|: rel {WEIGHTS_REL}); if the change "
                          "of behaviour is intended, regenerate with EFFTEACHER_UPDATE_GOLDEN=1 and note it in "
                          "CHANGELOG.md:\n" + "\n".join(shown))


@pytest.mark.slow
def test_supervised_run_matches_golden(tiny_data, tmp_path, one_thread):
    _check("supervised", tiny_data, tmp_path)


@pytest.mark.slow
def test_ssod_run_matches_golden(tiny_data, tmp_path, one_thread):
    _check("ssod", tiny_data, tmp_path)
