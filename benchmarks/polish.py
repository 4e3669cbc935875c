"""Why the lambda_u = 0 control beats the supervised plateau: supervised polishing vs the control, one burn-in state.

From an SSOD run's saved burn-in state (``weights/burn_in.pt``: the supervised plateau of an auto burn-in), with
the same iterations after it:

- ``ctrl``: the SSOD phase with ``ssod.lambda_u: 0``: LR annealed over ``ssod_factor`` x the burn-in, the teacher
  EMA evaluated, unlabeled images through the student's batch norm, no pseudo labels;
- ``polish``: supervised, ``sched.polish_factor`` = the run's ``ssod_factor``, ``sched.polish_handover`` off: the
  same LR annealing and the model EMA, labeled images only;
- the plateau itself: the burn-in's best (what ``--supervised`` returned before polishing);
- ``handover`` (optional): polish with ``sched.polish_handover``: it starts from the EMA weights and averages its
  EMA like the control's teacher (the control's schedule without unlabeled images);
- ``teacher_ema`` (optional): polish with ``sched.polish_teacher_ema``: the teacher-like EMA alone, the student
  keeps its weights.

If polish reaches the control (within the control's band), the LR annealing is what the control had over
the plateau, and ``--supervised`` gets it from ``sched.polish_factor``.

    OMP_NUM_THREADS=1 python -m benchmarks.polish --src /work/bench/sl/ssod10_s0 --arms polish &
    OMP_NUM_THREADS=1 python -m benchmarks.polish --src /work/bench/sl/ssod10_s0 --arms ctrl &
    python -m benchmarks.polish --src /work/bench/sl/ssod10_s0 --record
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.branch import branch, rows
from benchmarks.common import parse_arms, record
from benchmarks.ssod_gain import MAP, band, best

ARMS = ("polish", "ctrl", "handover", "teacher_ema")
OPTIONAL = {"handover": "sched.polish_handover", "teacher_ema": "sched.polish_teacher_ema"}


def burn_in(src: Path) -> tuple[int, dict[str, Any]]:
    """(burn-in epochs, args) of ``src``'s saved burn-in state."""
    import torch

    ck = torch.load(src / "weights/burn_in.pt", weights_only=True)
    return int(ck["train_state"]["epoch"]), ck["args"]


def arm_dir(src: Path, arm: str) -> Path:
    return src.parent / f"{arm}_from_{src.name}"


def train(src: Path, arms: list[str], workers: int) -> None:
    from effteacher.config import from_dict, replace

    _, args = burn_in(src)
    base = replace(from_dict(args), workers=workers)
    factor = float(args["sched"]["ssod_factor"])
    off = {opt: False for opt in OPTIONAL.values()}
    if "polish" in arms:
        branch(src, arm_dir(src, "polish"), {"supervised": True, **off, "sched.polish_factor": factor}, base)
    if "ctrl" in arms:
        branch(src, arm_dir(src, "ctrl"), {"ssod.lambda_u": 0.0}, base)
    for arm, opt in OPTIONAL.items():
        if arm in arms:
            branch(src, arm_dir(src, arm), {"supervised": True, **off, opt: True, "sched.polish_factor": factor},
                   base)


def summarise(src: Path) -> None:
    burn, _ = burn_in(src)
    plateau = [r for r in rows(src) if r["epoch"] <= burn]
    res = {}
    for arm in ARMS:
        run = arm_dir(src, arm)
        if not (run / "done.json").is_file():
            if arm in OPTIONAL:
                continue
            raise SystemExit(f"{run} has not finished; train --arms {arm} first")
        after = [r for r in rows(run) if r["epoch"] > burn]
        res[arm] = {"best": best(after), "band": band(after), "end": int(after[-1]["train/iterations"])}
    p, c, b = res["polish"], res["ctrl"], best(plateau)
    gap = c["best"][MAP] - b[MAP]
    closed = (p["best"][MAP] - b[MAP]) / gap if gap > 0 else float("nan")
    met = p["best"][MAP] >= c["best"][MAP] - c["band"]
    line = (f"polish ({src.name}): plateau {b[MAP]:.3f}, polish {p['best'][MAP]:.3f}+-{p['band']:.3f}, control "
            f"{c['best'][MAP]:.3f}+-{c['band']:.3f} (best mAP50-95; polish closes {closed:.0%} of the plateau-control "
            f"gap); polish within the control's band: {'yes' if met else 'NO'}")
    details = [f"- plateau: the burn-in's best {b[MAP]:.4f} at iteration {int(b['train/iterations'])} (burn-in "
               f"{burn} epochs)",
               f"- polish (supervised, sched.polish_factor = ssod_factor): best {p['best'][MAP]:.4f} at "
               f"{int(p['best']['train/iterations'])} of {p['end']}, band {p['band']:.4f} (last 5 validations)",
               f"- control (ssod.lambda_u 0): best {c['best'][MAP]:.4f} at {int(c['best']['train/iterations'])} of "
               f"{c['end']}, band {c['band']:.4f}",
               f"- runs: {arm_dir(src, 'polish')}, {arm_dir(src, 'ctrl')}; command: see benchmarks/polish.py"]
    for arm, opt in OPTIONAL.items():
        if arm not in res:
            continue
        h = res[arm]
        h_met = h["best"][MAP] >= c["best"][MAP] - c["band"]
        line += (f"; {arm} {h['best'][MAP]:.3f}+-{h['band']:.3f} (within the control's band: "
                 f"{'yes' if h_met else 'NO'})")
        details.insert(-1, f"- {arm} (polish with {opt}): best {h['best'][MAP]:.4f} at "
                           f"{int(h['best']['train/iterations'])} of {h['end']}, band {h['band']:.4f}")
        details[-1] = details[-1].replace("; command", f", {arm_dir(src, arm)}; command")
    record(f"polish ({src.name})", line, "\n".join(details))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, required=True, help="an SSOD run folder with weights/burn_in.pt")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="record the finished arms in RESULTS.md; train nothing")
    a = ap.parse_args()
    if not (a.src / "weights/burn_in.pt").is_file():
        raise SystemExit(f"{a.src}: no weights/burn_in.pt (an SSOD run that has handed over)")
    if a.record:
        summarise(a.src)
        return
    train(a.src, parse_arms(a.arms, ARMS), a.workers)


if __name__ == "__main__":
    main()
