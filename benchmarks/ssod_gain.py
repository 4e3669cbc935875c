"""SSOD gain on the bundled sample dataset: supervised 10% vs Efficient Teacher 10% vs supervised 100%.

n model from scratch, same image size for every run. The 10% supervised baseline gets the same
number of optimizer steps as the SSOD run (its own best epoch is reported, i.e. best of its
schedule). Prints one line and records it, with per-run numbers, in RESULTS.md.

    python -m benchmarks.ssod_gain [--seeds 0 1] [--epochs 40 --burn-in 30] [--full-epochs 10]
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

from benchmarks.common import record


def run(project: Path, name: str, reuse: bool = False, **changes) -> Path:
    from effteacher.config import defaults_for, replace
    from effteacher.engine.trainer import train

    cfg = replace(defaults_for("sample"), project=str(project), name=name, exist_ok=True, **changes)
    done = project / name / "results.csv"
    if reuse and done.exists() and (project / name / "weights/best.pt").exists():
        from effteacher.config import load_yaml, to_dict

        def key(c) -> dict:  # a supervised run never reads the ssod section
            d = to_dict(c)
            return {k: v for k, v in d.items() if not (c.supervised and k == "ssod")}

        if key(load_yaml(project / name / "args.yaml")) == key(cfg) and len(rows(project / name)) == cfg.epochs:
            print(f"reusing finished run {project / name} (same config)")
            return project / name
    return train(cfg)


def rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "results.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def best(rs: list[dict[str, float]]) -> dict[str, float]:
    """The epoch with the best fitness (0.1 mAP50 + 0.9 mAP50-95), as best.pt is chosen."""
    return max(rs, key=lambda r: 0.1 * r["metrics/mAP50"] + 0.9 * r["metrics/mAP50-95"])


def below_supervised(after: list[dict[str, float]], sup_rows: list[dict[str, float]], burn_in: int, bl: int,
                     bu: int) -> str:
    """Compare every validated SSOD epoch after burn-in with the supervised run at the same step.

    The supervised value is linearly interpolated between its validated epochs (it validates less
    often); steps are optimizer steps (burn-in epochs have bl, SSOD epochs bu batches).
    """
    sup = [(r["epoch"] * bl, r["metrics/mAP50-95"]) for r in sup_rows if r["metrics/mAP50"] > 0]
    if not after or len(sup) < 2:
        return "no post-burn-in comparison"
    worst, n_below = (0.0, 0), 0
    for r in after:
        step = burn_in * bl + (r["epoch"] - burn_in) * bu
        ref = None
        for (s0, m0), (s1, m1) in zip(sup, sup[1:]):
            if s0 <= step <= s1:
                ref = m0 + (m1 - m0) * (step - s0) / max(s1 - s0, 1)
        if ref is None:
            continue
        d = r["metrics/mAP50-95"] - ref
        if d < 0:
            n_below += 1
            if d < worst[0]:
                worst = (d, int(step))
    tail = f" (worst {worst[0]:+.3f} at step {worst[1]})" if n_below else ""
    return f"below the supervised run at the same step in {n_below} of {len(after)} post-burn-in validations{tail}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=None, help="SSOD total epochs (default: the sample profile)")
    ap.add_argument("--burn-in", type=int, default=None)
    ap.add_argument("--full-epochs", type=int, default=None, help="epochs of the 100%% supervised run")
    ap.add_argument("--val-every", type=int, default=2)
    ap.add_argument("--project", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs in --project whose args.yaml match")
    args = ap.parse_args()

    from effteacher.config import defaults_for

    prof = defaults_for("sample")
    epochs = args.epochs or prof.epochs
    burn_in = args.burn_in if args.burn_in is not None else prof.burn_in
    project = args.project or Path(tempfile.mkdtemp(prefix="ssod_gain_"))
    t0 = time.time()
    common = dict(val_every=args.val_every, workers=2, reuse=args.reuse)
    lines, ok = [], True
    res: dict[str, dict[str, float]] = {}
    for seed in args.seeds:
        ssod_dir = run(project, f"ssod10_s{seed}", labeled="10%", seed=seed, epochs=epochs, burn_in=burn_in, **common)
        ssod_rows = rows(ssod_dir)
        n_l = len((ssod_dir / "split/labeled.txt").read_text().split())
        n_u = len((ssod_dir / "split/unlabeled.txt").read_text().split())
        bl = math.ceil(n_l / prof.batch)
        bu = math.ceil(n_u / prof.batch)
        steps = burn_in * bl + (epochs - burn_in) * bu
        sup_epochs = math.ceil(steps / bl)
        sup_dir = run(project, f"sup10_s{seed}", labeled="10%", seed=seed, supervised=True, epochs=sup_epochs,
                      val_every=max(args.val_every, sup_epochs // 20), workers=2, reuse=args.reuse)
        sup_rows = rows(sup_dir)
        s, b = best(ssod_rows), best(sup_rows)
        after = [r for r in ssod_rows if r["epoch"] > burn_in and r["metrics/mAP50"] > 0]
        min_after = min((r["metrics/mAP50-95"] for r in after), default=float("nan"))
        below = below_supervised(after, sup_rows, burn_in, bl, bu)
        res[f"ssod{seed}"], res[f"sup{seed}"] = s, b
        lines.append(f"- seed {seed}: supervised 10% ({sup_epochs} epochs = {steps} steps) mAP50-95 "
                     f"{b['metrics/mAP50-95']:.4f} / mAP50 {b['metrics/mAP50']:.4f} (best epoch {int(b['epoch'])}); "
                     f"SSOD 10% ({epochs} epochs, burn-in {burn_in}) mAP50-95 {s['metrics/mAP50-95']:.4f} / mAP50 "
                     f"{s['metrics/mAP50']:.4f} (best epoch {int(s['epoch'])}); lowest SSOD mAP50-95 after burn-in "
                     f"{min_after:.4f}; {below}")
    full_epochs = args.full_epochs or max(epochs - burn_in, 1)
    full_dir = run(project, "sup100", labeled="100%", supervised=True, epochs=full_epochs,
                   val_every=max(1, full_epochs // 20), workers=2, reuse=args.reuse)
    f = best(rows(full_dir))
    lines.append(f"- supervised 100% ({full_epochs} epochs) mAP50-95 {f['metrics/mAP50-95']:.4f} / mAP50 "
                 f"{f['metrics/mAP50']:.4f}")
    parts = []
    for seed in args.seeds:
        s, b = res[f"ssod{seed}"]["metrics/mAP50-95"], res[f"sup{seed}"]["metrics/mAP50-95"]
        gain = s / b if b > 0 else float("inf")
        gap = f["metrics/mAP50-95"] - b
        closed = (s - b) / gap if gap > 0 else float("nan")
        ok &= gain >= 1.3 and closed >= 0.4
        parts.append(f"s{seed} sup10 {b:.3f} ssod10 {s:.3f} ({gain:.2f}x, gap closed {closed:.0%})")
    line = (f"ssod_gain: {'; '.join(parts)}; sup100 {f['metrics/mAP50-95']:.3f} (mAP50-95, n, sample data); "
            f"target {'met' if ok else 'NOT met'}")
    lines.append(f"- wall time {(time.time() - t0) / 60:.1f} min; runs in {project}")
    record("ssod_gain", line, "\n".join(lines))


if __name__ == "__main__":
    main()
