"""What the `make run` demo owes to pseudo labels: its SSOD run against two baselines with the same optimizer steps.

Arms per seed, all with the dataset profile (``defaults:`` of ``--data``, ``demo`` by default: the schedule
`make run` trains) and ``--cfg`` applied to every arm:

- ``ssod_s{seed}``: the demo itself: burn-in on the 10% split (fixed, or auto: to its validation plateau), then SSOD;
- ``ctrl_s{seed}``: branched from ssod's saved burn-in state (``weights/burn_in.pt``) with ``ssod.lambda_u: 0``:
  the same weights, optimizer, LR schedule, teacher EMA, labeled batches and unlabeled forward passes, no
  pseudo labels;
- ``sup_s{seed}``: supervised on the same 10% split (same seed) for as many optimizer steps as the SSOD run
  (a burn-in epoch is a pass over the labeled images, an SSOD epoch one over the unlabeled ones).

Each arm's result is its best validation (as best.pt is chosen) with its noise band: the spread of its last
``BAND_K`` validations (ssod and ctrl: after the hand-over). The demo pays when SSOD beats the better baseline by
more than 3x the largest band of the three arms, on every seed.

    OMP_NUM_THREADS=1 python -m benchmarks.demo --seeds 0,1,2 --arms ssod,sup --project /tmp/demo &
    OMP_NUM_THREADS=1 python -m benchmarks.demo --seeds 0,1,2 --arms ctrl --project /tmp/demo &
    python -m benchmarks.demo --record --project /tmp/demo

Every arm resumes where a killed invocation stopped and a finished one is reused; ``ctrl`` and ``sup`` wait for
ssod's burn-in state, so the two invocations above share the 2 cores of a small machine.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from benchmarks.branch import branch, rows, run_arm, wall_s
from benchmarks.common import parse_arms, record
from benchmarks.ssod_gain import MAP, best
from effteacher.train.schedule import ssod_epochs

ARMS = ("ssod", "ctrl", "sup")
BAND_K = 5  # validations in a noise band
MARGIN = 3.0  # SSOD must beat the better baseline by more than this many noise bands


def base_config(data: str, cfg_path: Path | None, workers: int) -> Any:
    """The demo's TrainConfig: the dataset profile, under ``cfg_path``'s keys when given."""
    from effteacher.config import defaults_for, load_overrides, replace

    base = load_overrides(cfg_path, data) if cfg_path else defaults_for(data)
    return replace(base, data=data, workers=workers)


def burn_state(run: Path) -> dict[str, Any]:
    """The burn-in state of an SSOD run: its epoch and config (``args``)."""
    import torch

    ck = torch.load(run / "weights/burn_in.pt", weights_only=True)
    return {"epoch": int(ck["train_state"]["epoch"]), "args": ck["args"]}


def wait_burn_in(run: Path, poll_s: float = 20.0) -> None:
    """Block until ``run`` saved its burn-in state (it may still be in its burn-in in another process)."""
    while not (run / "weights/burn_in.pt").is_file():
        if (run / "done.json").is_file():
            raise SystemExit(f"{run} finished without a burn-in state")
        time.sleep(poll_s)


def planned_steps(ssod: Path) -> tuple[int, int]:
    """(optimizer steps the SSOD run plans in all, labeled steps per supervised epoch), from its burn-in state:
    burn-in iterations as run, plus one iteration per unlabeled batch in each planned SSOD epoch (a fixed plan's
    ``epochs`` minus the burn-in, or an ``epochs: 0`` plan's ``sched.ssod_factor`` x the burn-in's iterations)."""
    st = burn_state(ssod)
    burn, args = st["epoch"], st["args"]
    burn_its = int(next(r["train/iterations"] for r in rows(ssod) if int(r["epoch"]) == burn))
    n_unlabeled = sum(1 for line in (ssod / "split/unlabeled.txt").read_text().splitlines() if line.strip())
    per_ssod_epoch = math.ceil(n_unlabeled / (args["batch"] * args["ssod"]["unlabeled_ratio"]))
    n_ssod = args["epochs"] - burn if args["epochs"] > 0 else \
        ssod_epochs(burn_its, per_ssod_epoch, args["sched"]["ssod_factor"])
    return burn_its + n_ssod * per_ssod_epoch, burn_its // burn


def train_arms(project: Path, base: Any, seed: int, which: list[str]) -> None:
    """Train the arms in ``which`` (in ARMS order) for one seed; resumable."""
    ssod = project / f"ssod_s{seed}"
    if "ssod" in which:
        run_arm(project, ssod.name, base, labeled="10%", seed=seed)
    if "ctrl" in which:
        wait_burn_in(ssod)
        branch(ssod, project / f"ctrl_s{seed}", {"ssod.lambda_u": 0.0}, base)
    if "sup" in which:
        wait_burn_in(ssod)
        steps, per_epoch = planned_steps(ssod)
        # as `effteacher train --data demo --supervised --epochs N`: --epochs is the whole supervised run
        run_arm(project, f"sup_s{seed}", base, labeled="10%", supervised=True, seed=seed,
                epochs=math.ceil(steps / per_epoch))


def band(rs: list[dict[str, float]], k: int = BAND_K) -> float:
    """Spread (max - min) of mAP50-95 over the last ``k`` validations."""
    tail = [r[MAP] for r in rs[-k:]]
    return max(tail) - min(tail) if tail else float("nan")


def seed_result(project: Path, seed: int) -> dict[str, Any] | None:
    """One seed's arms, each best and band; None until its three arms have finished."""
    runs = {a: project / f"{a}_s{seed}" for a in ARMS}
    if not all((p / "done.json").is_file() for p in runs.values()):
        return None
    burn = burn_state(runs["ssod"])["epoch"]
    ssod_all, ctrl_all = rows(runs["ssod"]), rows(runs["ctrl"])
    end = ssod_all[-1]["train/iterations"]
    arm_rows = {"ssod": [r for r in ssod_all if r["epoch"] > burn], "ctrl": [r for r in ctrl_all if r["epoch"] > burn],
                "sup": [r for r in rows(runs["sup"]) if r["train/iterations"] <= end]}
    burn_rows = [r for r in ssod_all if r["epoch"] <= burn]
    res: dict[str, Any] = {"seed": seed, "end": int(end), "burn": burn,
                           "burn_its": int(burn_rows[-1]["train/iterations"]), "burn_best": best(burn_rows),
                           "handover": burn_rows[-1][MAP],
                           "pseudo": [(r.get("pseudo/precision", float("nan")), r.get("pseudo/reliable", 0.0))
                                      for r in arm_rows["ssod"]]}
    for a, rs in arm_rows.items():
        res[a] = {"best": best(rs), "band": band(rs), "end": int(rs[-1]["train/iterations"]),
                  "min": wall_s(runs[a]) / 60}
    base = max(("sup", "ctrl"), key=lambda a: res[a]["best"][MAP])
    res["baseline"] = base
    res["gain"] = res["ssod"]["best"][MAP] - res[base]["best"][MAP]
    res["noise"] = max(res[a]["band"] for a in ARMS)
    res["met"] = res["gain"] > MARGIN * res["noise"]
    return res


def summarise(project: Path, data: str) -> None:
    """Record the seeds whose three arms finished into RESULTS.md (section ``demo (<data>)``)."""
    seeds = sorted(int(p.name.split("_s")[1]) for p in project.glob("ssod_s*"))
    results = [r for r in (seed_result(project, s) for s in seeds) if r is not None]
    if not results:
        raise SystemExit(f"no seed of {project} has finished all of {', '.join(ARMS)}")
    parts, lines = [], []
    for r in results:
        s, c, u = r["ssod"], r["ctrl"], r["sup"]
        bands = f"{r['gain'] / r['noise']:+.1f} bands" if r["noise"] > 0 else "band 0"
        parts.append(f"s{r['seed']} sup {u['best'][MAP]:.3f}+-{u['band']:.3f} "
                     f"ctrl {c['best'][MAP]:.3f}+-{c['band']:.3f} ssod {s['best'][MAP]:.3f}+-{s['band']:.3f} "
                     f"({r['gain']:+.3f} = {bands} over {r['baseline']})")
        prec = ", ".join(f"{p:.2f}" for p, _ in r["pseudo"])
        reliable = ", ".join(f"{n:.1f}" for _, n in r["pseudo"])
        lines.append(
            f"- seed {r['seed']}: burn-in {r['burn']} epochs = {r['burn_its']} iterations, its best "
            f"{r['burn_best'][MAP]:.4f} at {int(r['burn_best']['train/iterations'])}, hand-over {r['handover']:.4f}; "
            f"SSOD to iteration {r['end']}: best {s['best'][MAP]:.4f} (mAP50 {s['best']['metrics/mAP50']:.4f}) at "
            f"{int(s['best']['train/iterations'])}, band {s['band']:.4f}, {s['min']:.1f} min; control (lambda_u 0) "
            f"best {c['best'][MAP]:.4f} at {int(c['best']['train/iterations'])}, band {c['band']:.4f}, "
            f"{c['min']:.1f} min; supervised to {u['end']} iterations best {u['best'][MAP]:.4f} at "
            f"{int(u['best']['train/iterations'])}, band {u['band']:.4f}, {u['min']:.1f} min; SSOD - {r['baseline']} "
            f"{r['gain']:+.4f} vs {MARGIN:.0f} x band {MARGIN * r['noise']:.4f}: {'met' if r['met'] else 'NOT met'}; "
            f"reliable pseudo precision per SSOD epoch {prec}; reliable boxes per image {reliable}")
    lines.append(f"- bands: spread of each arm's last {BAND_K} validations (ssod, ctrl: after the hand-over; sup: up "
                 f"to the SSOD run's last iteration); runs in {project}; command: see benchmarks/demo.py")
    ok = all(r["met"] for r in results)
    line = (f"demo ({data}): {'; '.join(parts)} (best mAP50-95, n, 10% labels); target (SSOD > better baseline + "
            f"{MARGIN:.0f} bands on every seed) {'met' if ok else 'NOT met'} on seeds "
            f"{','.join(str(r['seed']) for r in results)}")
    record(f"demo ({data})", line, "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="demo", help="a bundled dataset name or YAML with a defaults: profile")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--cfg", type=Path, default=None, help="YAML of TrainConfig keys for every arm")
    ap.add_argument("--workers", type=int, default=2, help="dataloader workers of every arm")
    ap.add_argument("--project", type=Path, default=Path("runs/bench-demo"))
    ap.add_argument("--record", action="store_true", help="record the finished seeds in RESULTS.md; train nothing")
    a = ap.parse_args()
    if a.record:
        summarise(a.project, a.data)
        return
    which = parse_arms(a.arms, ARMS)
    base = base_config(a.data, a.cfg, a.workers)
    for seed in (int(s) for s in a.seeds.split(",") if s.strip()):
        train_arms(a.project, base, seed, which)


if __name__ == "__main__":
    main()
