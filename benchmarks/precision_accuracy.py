"""Does bf16 (or channels-last) cost accuracy? Supervised runs on the demo set in each training precision, per seed.

Arms (``--arms``): ``fp32``, ``bf16``, ``fp32cl`` and ``bf16cl`` (``cl``: ``channels_last: true``), each
``effteacher train --data demo --supervised --labeled 10% --epochs 754 --seed S`` with that precision: a run that
learns (mAP50-95 0.3-0.4) in a few minutes. A CPU run is deterministic for a given precision and seed, but two
precisions are two different trajectories, so one seed says little: compare the means over seeds against the
spread between seeds.

    OMP_NUM_THREADS=1 python -m benchmarks.precision_accuracy --arms fp32,bf16 --seeds 0,1,2 --project P
    python -m benchmarks.precision_accuracy --record --project P
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.branch import rows, run_arm
from benchmarks.common import parse_arms, record
from benchmarks.ssod_gain import MAP, best

ARMS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32cl": ("fp32", True), "bf16cl": ("bf16", True)}
EPOCHS = 754  # 2,262 iterations: the demo's v1 schedule, where supervised 10% flattens
BAND_K = 5


def train(project: Path, arms: list[str], seeds: list[int], workers: int) -> None:
    from effteacher.config import defaults_for, replace

    base = replace(defaults_for("demo"), data="demo", workers=workers)
    for seed in seeds:
        for arm in arms:
            prec, cl = ARMS[arm]
            run_arm(project, f"{arm}_s{seed}", base, labeled="10%", supervised=True, seed=seed, epochs=EPOCHS,
                    precision=prec, channels_last=cl)


def arm_result(run: Path) -> dict[str, float] | None:
    """Best validation and the spread of the last BAND_K of a finished run; None if unfinished."""
    if not (run / "done.json").is_file():
        return None
    rs = rows(run)
    tail = [r[MAP] for r in rs[-BAND_K:]]
    b = best(rs)
    return {"best": b[MAP], "at": b["train/iterations"], "band": max(tail) - min(tail),
            "end": rs[-1]["train/iterations"]}


def summarise(project: Path, ref_arm: str = "fp32") -> None:
    """Record every finished arm's mean over seeds against ``ref_arm`` on the seeds both ran (section
    ``precision_accuracy``, or ``precision_accuracy (vs ARM)`` for another reference)."""
    found: dict[str, dict[int, dict[str, float]]] = {}
    for run in sorted(project.glob("*_s*")):
        arm, seed = run.name.rsplit("_s", 1)
        if arm in ARMS and seed.isdigit() and (res := arm_result(run)) is not None:
            found.setdefault(arm, {})[int(seed)] = res
    if ref_arm not in found:
        raise SystemExit(f"{project}: no finished {ref_arm} arm to compare with")
    ref = found[ref_arm]
    parts, lines = [], []
    for arm, by_seed in sorted(found.items(), key=lambda kv: list(ARMS).index(kv[0])):
        vals = [r["best"] for r in by_seed.values()]
        sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        mean = statistics.fmean(vals)
        common = sorted(set(by_seed) & set(ref))
        diffs = [by_seed[s]["best"] - ref[s]["best"] for s in common]
        text = f"{arm} {mean:.3f}+-{sd:.3f} (seeds {','.join(map(str, sorted(by_seed)))})"
        if arm != ref_arm and diffs:
            ref_sd = statistics.stdev([ref[s]["best"] for s in ref]) if len(ref) > 1 else float("nan")
            mean_diff = round(statistics.fmean(diffs), 6) + 0.0  # no '-0.000'
            verdict = "within" if abs(mean_diff) <= max(sd, ref_sd) else "OUTSIDE"
            text += f" {mean_diff:+.3f} vs {ref_arm} ({verdict} the seed spread)"
        parts.append(text)
        for s, r in sorted(by_seed.items()):
            lines.append(f"- {arm} seed {s}: best {r['best']:.4f} at iteration {int(r['at'])}, band {r['band']:.4f} "
                         f"(last {BAND_K} validations), ran to {int(r['end'])}")
    lines.append(f"- each: effteacher train --data demo --supervised --labeled 10% --epochs {EPOCHS} --seed S with "
                 f"the arm's precision / channels_last; OMP_NUM_THREADS=1; runs in {project}")
    name = "precision_accuracy" if ref_arm == "fp32" else f"precision_accuracy (vs {ref_arm})"
    record(name, f"{name} (demo, supervised 10%, best mAP50-95, mean+-sd over seeds): "
           + "; ".join(parts), "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", default="fp32,bf16", help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--project", type=Path, default=Path("runs/bench-precision"))
    ap.add_argument("--record", action="store_true", help="record the finished arms in RESULTS.md; train nothing")
    ap.add_argument("--ref", default="fp32", choices=list(ARMS), help="with --record: the arm the others are compared with")
    a = ap.parse_args()
    if a.record:
        summarise(a.project, a.ref)
        return
    train(a.project, parse_arms(a.arms, ARMS), [int(s) for s in a.seeds.split(",") if s.strip()], a.workers)


if __name__ == "__main__":
    main()
