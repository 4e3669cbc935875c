"""Which part of the unlabeled loss helps or hurts: SSOD variants branched from ONE burn-in state.

``--src`` is any SSOD run that reached its hand-over (it saved ``weights/burn_in.pt``), e.g. the
``ssod10_s0`` arm of ``benchmarks/ssod_gain.py``. Each variant copies that state (weights, optimizer,
LR position, split, RNG, plateau decision) with its config overrides and trains ``--n-ssod`` SSOD
epochs; variants differ only in their overrides. Always include the control ``{"ssod.lambda_u": 0}``
(same teacher EMA, steps and labeled batches, no pseudo labels): a gain counts only over it.

    python -m benchmarks.ssod_ablation --src /work/bench/sample-large/ssod10_s0 --n-ssod 3 \
        --variant 'control:{"ssod.lambda_u": 0.0}' 'default:{}' 'obj:{"ssod.score": "obj"}' \
                  'gate:{"ssod.score": "obj", "ssod.cls_thres": 0.5, "ssod.agnostic_nms": true}'
    python -m benchmarks.ssod_ablation --src /work/bench/sample-large/ssod10_s0 --record

Variant runs land in ``<src>-abl/<name>`` (resumable: a killed variant resumes, a finished one is reused).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.branch import branch, rows, wall_s
from benchmarks.ssod_gain import band

MAP = "metrics/mAP50-95"
PSEUDO = ("pseudo/precision", "pseudo/precision_agnostic", "pseudo/recall", "pseudo/reliable", "pseudo/uncertain")


def _burn(src: Path) -> int:
    import torch

    return int(torch.load(src / "weights/burn_in.pt", weights_only=True)["train_state"]["epoch"])


def run_variant(src: Path, name: str, n_ssod: int, overrides: dict[str, Any], workers: int = 2) -> Path:
    from effteacher.config import from_dict, replace
    import torch

    args = torch.load(src / "weights/burn_in.pt", weights_only=True)["args"]
    base = replace(from_dict(args), workers=workers)
    # n_ssod 0: the source run's own plan (same SSOD length, LR schedule and teacher decay as the source)
    return branch(src, src.parent / f"{src.name}-abl" / name, overrides, base,
                  epochs=_burn(src) + n_ssod if n_ssod > 0 else None)


def table(src: Path, extra: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """Per variant: its overrides and its validations after the hand-over (plus the hand-over's own).

    extra: other runs from the same burn-in state to compare with, e.g. ssod_gain's ``ssod10_s0`` (the source
    itself, overrides {}) and ``ctrl10_s0`` (branched, its overrides.json); finished or not.
    """
    burn = _burn(src)
    out = []
    runs = [d.parent for d in sorted((src.parent / f"{src.name}-abl").glob("*/overrides.json"))]
    for run in [*extra, *runs]:
        rs = [r for r in rows(run) if r["epoch"] >= burn]
        ov = run / "overrides.json"
        if rs:
            # training minutes after the hand-over from results.csv: they survive a kill, the wall time may not
            train_min = sum(r.get("time", 0.0) for r in rs[1:]) / 60
            out.append({"name": run.name, "overrides": json.loads(ov.read_text()) if ov.is_file() else {}, "rows": rs,
                        "min": wall_s(run) / 60, "train_min": train_min})
    return out


def _at(r: dict[str, float]) -> float:
    """Where a validation sits: its optimizer iteration (epochs of variants may differ in length, e.g. a larger
    unlabeled batch), or its epoch in results.csv files without the iteration column."""
    return r.get("train/iterations", r["epoch"])


def value_at(rows: list[dict[str, float]], at: float) -> float:
    """mAP50-95 of a run at iteration ``at``, linear between its two nearest validations; NaN outside its range."""
    for a, b in zip(rows, rows[1:]):
        if _at(a) <= at <= _at(b):
            w = (at - _at(a)) / (_at(b) - _at(a)) if _at(b) > _at(a) else 0.0
            return a[MAP] + w * (b[MAP] - a[MAP])
    return rows[0][MAP] if len(rows) == 1 and _at(rows[0]) == at else float("nan")


def versus(run: list[dict[str, float]], ref: list[dict[str, float]]) -> tuple[float, float, float, int]:
    """A variant against a reference run from the same burn-in state, validation by validation at the same
    iteration (the reference interpolated where its validations fall elsewhere; the shared hand-over row and
    iterations beyond the reference's last excluded): (mean, min, max of run - ref mAP50-95, validations compared)."""
    d = [r[MAP] - v for r in run[1:] if (v := value_at(ref, _at(r))) == v]
    if not d:
        return float("nan"), float("nan"), float("nan"), 0
    return sum(d) / len(d), min(d), max(d), len(d)


def _minutes(run: dict[str, Any]) -> str:
    """Training minutes of the SSOD epochs (validation not included), and the wall time where it was kept."""
    wall = f", {run['min']:.0f} min wall" if run["min"] >= run["train_min"] > 0 else ""
    return f"{run['train_min']:.0f} min training{wall}"


def summarise(src: Path, extra: tuple[Path, ...] = (), write: bool = True, label: str = "") -> None:
    """Print, or with ``write`` record, the variants of one burn-in state; ``label`` names a further section of the
    same state (e.g. a later ablation from a re-run burn-in), so it does not replace the first one's record."""
    from benchmarks.common import record

    runs = table(src, extra)
    if not runs:
        raise SystemExit(f"no variants under {src}-abl")
    ctrl = next((r for r in runs if r["overrides"].get("ssod.lambda_u") == 0.0), None)
    # compare at the last iteration every run reached: variants' SSOD epochs may differ in iterations
    end_at = min(_at(r["rows"][-1]) for r in runs)
    same_grid = len({tuple(_at(x) for x in r["rows"] if _at(x) <= end_at) for r in runs}) == 1
    start = runs[0]["rows"][0]
    # the default (a run without overrides, e.g. the source via --with) is what each variant must beat
    ref = next((r for r in runs if not r["overrides"]), ctrl)
    parts, details, best_lines = [], [], []
    for r in runs:
        shown = [x for x in r["rows"] if _at(x) <= end_at]
        end = value_at(r["rows"], end_at)
        vs = f" ({end - value_at(ctrl['rows'], end_at):+.3f} vs control)" if ctrl and r is not ctrl else ""
        parts.append(f"{r['name']} {end:.3f}{vs}")
        top = max(x[MAP] for x in r["rows"][1:] or r["rows"])
        cmp = ""
        if ref and r is not ref:
            mean, lo, hi, k = versus(r["rows"], ref["rows"])
            cmp = f", vs {ref['name']} per validation {mean:+.4f} ({lo:+.4f}..{hi:+.4f}, {k} validations)"
        best_lines.append(f"{r['name']} best {top:.4f}, band {band(r['rows'], 10):.4f}{cmp}")
        prec = ", ".join(f"{x.get(PSEUDO[0], 0):.2f}/{x.get(PSEUDO[1], 0):.2f}" for x in shown[1:])
        per = ", ".join(f"{x.get(PSEUDO[3], 0):.1f}/{x.get(PSEUDO[4], 0):.1f}" for x in shown[1:])
        per_it = "" if same_grid else f" ({int(_at(shown[1]) - _at(shown[0])) if len(shown) > 1 else 0} iterations each)"
        details.append(f"- {r['name']} {json.dumps(r['overrides'])}: mAP50-95 per SSOD epoch{per_it} "
                       + " -> ".join(f"{x[MAP]:.3f}" for x in shown)
                       + (f"; reliable pseudo precision class/agnostic {prec}; reliable/uncertain per image {per}"
                          if r is not ctrl else "") + f"; {_minutes(r)}")
    details.insert(0, "- best mAP50-95 after the hand-over, noise band (spread of the last 10 validations) and the "
                   "difference to the default at the same validation: " + "; ".join(best_lines))
    details.append(f"- source: {src} (burn-in state at epoch {_burn(src)}, iteration "
                   f"{int(start.get('train/iterations', 0))}); command in the module docstring")
    n_ssod = len([x for x in runs[0]["rows"] if _at(x) <= end_at]) - 1
    after = f"{n_ssod} SSOD epochs" if same_grid else f"{int(end_at - _at(start))} SSOD iterations"
    line = (f"ssod_ablation ({src.name}): hand-over {start[MAP]:.3f} mAP50-95; after {after}: "
            + ", ".join(parts))
    if not write:
        print(line, flush=True)
        return
    # one section per burn-in state: a second source (another seed) must not replace the first one's record
    section = ", ".join(x for x in (src.parent.name, src.name, label) if x)
    record(f"ssod_ablation ({section})", line, "\n".join(details))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, required=True, help="a run folder holding weights/burn_in.pt")
    ap.add_argument("--n-ssod", type=int, default=3, help="SSOD epochs per variant (0: as many as the source plans)")
    ap.add_argument("--variant", nargs="*", default=[], help="name:json_overrides (dotted TrainConfig keys)")
    ap.add_argument("--record", action="store_true", help="summarise the variants into RESULTS.md")
    ap.add_argument("--with", dest="extra", type=Path, nargs="*", default=[],
                    help="other runs from the same burn-in to compare with (e.g. the source and ssod_gain's ctrl10_s0)")
    ap.add_argument("--label", default="", help="RESULTS.md section suffix, for another ablation of a same-named source")
    a = ap.parse_args()
    for v in a.variant:
        name, js = v.split(":", 1)
        run_variant(a.src, name, a.n_ssod, json.loads(js))
    if a.record or a.variant:  # after training only print the summary; --record writes RESULTS.md
        summarise(a.src, tuple(a.extra), write=a.record, label=a.label)


if __name__ == "__main__":
    main()
