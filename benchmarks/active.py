"""Active selection vs random: does `effteacher rank` choose the next labels better than a random draw?

From a seeded 5% labeled split of the dataset's train images, a supervised model (``base5``) is trained;
then the next 5% of train is chosen two ways and a supervised model is retrained from scratch on each
resulting 10%, all with the same fixed schedule:

- ``ranked10``: the 5% plus the ``rank`` picks of ``base5`` (uncertainty, flip disagreement, rarity, k-center);
- ``random10_s{0,1,2}``: the 5% plus a seeded uniform draw from the remaining train images.

Target: ranked best mAP50-95 >= random mean + 1 std. Resumable: finished runs (``done.json``) and the rank
output are reused, a killed run resumes from its last.pt. SSOD arms are left out (they do not fit a
30-minute single-thread budget).

    OMP_NUM_THREADS=1 python -m benchmarks.active --data sample --epochs 120 --imgsz 128 --project runs/bench/active
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.branch import rows, run_arm, wall_s
from benchmarks.common import record

MAP = "metrics/mAP50-95"
SEEDS = (0, 1, 2)


def best(rs: list[dict[str, float]]) -> dict[str, float]:
    """The validation with the best fitness (0.1 mAP50 + 0.9 mAP50-95), as best.pt is chosen; zeros when none scored."""
    if not rs:
        return {MAP: 0.0, "metrics/mAP50": 0.0, "epoch": 0.0}
    return max(rs, key=lambda r: 0.1 * r["metrics/mAP50"] + 0.9 * r[MAP])


def write_list(path: Path, paths: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p + "\n" for p in sorted(paths)))
    return path


def ranked_picks(project: Path, base5: Path, data: str, k: int, workers: int) -> list[str]:
    """The ``rank`` picks of base5 (computed once, then reused from project/rank/to_label.txt)."""
    from effteacher.labeling.rank import run_rank

    out = project / "rank"
    if not (out / "to_label.txt").is_file():
        t0 = time.time()
        run_rank(weights=base5 / "weights" / "best.pt", data=data, budget=k, labeled=str(base5 / "split"),
                 workers=workers, project=project, name="rank", exist_ok=True)
        (out / "wall_s.txt").write_text(f"{time.time() - t0:.1f}")
    return (out / "to_label.txt").read_text().splitlines()


def arms(project: Path, data: str, epochs: int, val_every: int, workers: int, imgsz: int) -> None:
    from effteacher.config import defaults_for, replace

    base = replace(defaults_for(data), data=data, supervised=True, epochs=epochs, val_every=val_every,
                   workers=workers, seed=0, imgsz=imgsz)
    base5 = run_arm(project, "base5", base, labeled="5%")
    labeled = (base5 / "split" / "labeled.txt").read_text().splitlines()
    unlabeled = (base5 / "split" / "unlabeled.txt").read_text().splitlines()
    k = len(labeled)  # the next 5%: as many again
    picks = ranked_picks(project, base5, data, k, workers)
    assert len(set(picks)) == k and not set(picks) & set(labeled), "rank must pick k new unlabeled images"
    lst = write_list(project / "lists" / "ranked10.txt", labeled + picks)
    run_arm(project, "ranked10", base, labeled=str(lst))
    for seed in SEEDS:
        draw = np.random.default_rng(seed).choice(len(unlabeled), k, replace=False)
        lst = write_list(project / "lists" / f"random10_s{seed}.txt", labeled + [unlabeled[i] for i in draw])
        run_arm(project, f"random10_s{seed}", base, labeled=str(lst))


def picked_boxes(project: Path, name: str) -> tuple[int, int] | None:
    """(ground-truth boxes, background images) among the images an arm added to the 5% (reporting only)."""
    from effteacher.data.spec import img2label_path

    lst, base = project / "lists" / f"{name}.txt", project / "base5" / "split" / "labeled.txt"
    if not lst.is_file() or not base.is_file():
        return None
    old = set(base.read_text().splitlines())
    boxes = bg = 0
    for p in (p for p in lst.read_text().splitlines() if p not in old):
        lbl = img2label_path(p)
        n = sum(1 for line in lbl.read_text().splitlines() if line.strip()) if lbl.is_file() else 0
        boxes, bg = boxes + n, bg + (n == 0)
    return boxes, bg


def summarise(project: Path, data: str, epochs: int, imgsz: int, cpu_s: float | None = None, note: str = "") -> None:
    """Record the finished arms in RESULTS.md (pending ones are named; the verdict needs ranked10 and 2+ random)."""
    names = ["base5", "ranked10", *(f"random10_s{s}" for s in SEEDS)]
    done = {n: project / n for n in names if (project / n / "done.json").is_file()}
    pending = [n for n in names if n not in done]
    res = {n: best(rows(p)) for n, p in done.items()}
    rnd = [res[f"random10_s{s}"][MAP] for s in SEEDS if f"random10_s{s}" in res]
    ranked = res["ranked10"][MAP] if "ranked10" in res else float("nan")
    mean = statistics.mean(rnd) if rnd else float("nan")
    std = statistics.stdev(rnd) if len(rnd) > 1 else float("nan")
    if "ranked10" not in res or len(rnd) < 2:
        verdict = f"pending ({', '.join(pending)} not finished)"
    elif max(rnd + [ranked]) == 0:
        verdict = "not measurable (every arm at 0 mAP)"
    else:
        verdict = "met" if ranked >= mean + std else "NOT met"
    base = f"{res['base5'][MAP]:.4f}" if "base5" in res else "pending"
    line = (f"active ({data}): ranked 10% {ranked:.4f} vs random 10% {mean:.4f} +- {std:.4f} "
            f"({', '.join(f'{v:.4f}' for v in rnd)}), base 5% {base} (mAP50-95, n, supervised, "
            f"{epochs} epochs at {imgsz} px); target ranked >= random mean + 1 std {verdict}")
    wall = project / "rank" / "wall_s.txt"
    n_unl = len((project / "base5" / "split" / "unlabeled.txt").read_text().splitlines()) if "base5" in done else 0
    details = [
        f"- every arm: YOLOv5n from scratch, supervised, {epochs} epochs at {imgsz} px (a short schedule sized for a "
        "30-minute single-thread budget; far from converged), the dataset profile otherwise, split seed 0; best "
        "validation mAP50-95 of each run",
        *(f"- {n}: best mAP50-95 {r[MAP]:.4f} / mAP50 {r['metrics/mAP50']:.4f} at epoch {int(r['epoch'])}, "
          f"{wall_s(done[n]) / 60:.1f} min wall" for n, r in res.items()),
        *(f"- {n}: not finished when recorded" for n in pending),
        "- images added to the 5% (ground-truth boxes / backgrounds): " + ", ".join(
            f"{n} {b[0]} / {b[1]}" for n in names[1:] if (b := picked_boxes(project, n)) is not None),
        f"- rank of base5 over the {n_unl} other train images: "
        f"{wall.read_text().strip() if wall.is_file() else '?'} s wall; picks and scores in {project / 'rank/rank.csv'}",
        *([f"- CPU time of the recording invocation: {cpu_s / 60:.1f} min (wall times above are inflated by the "
           "shared, oversubscribed CPU)"] if cpu_s is not None else []),
        *([f"- the 2-core CPU is shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end)"]
          if cpu_s is not None else []),
        "- SSOD arms not run: a 10% SSOD run alone takes longer than this whole budget on this CPU",
        *([f"- {note}"] if note else []),
        f"- runs in {project}; command: OMP_NUM_THREADS=1 python -m benchmarks.active --data {data} --epochs {epochs} "
        f"--imgsz {imgsz} --project {project.parent} (--record: record the finished arms, train nothing)",
    ]
    record(f"active ({data})", line, "\n".join(details))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="sample", choices=["sample", "sample-large"])
    ap.add_argument("--epochs", type=int, default=120, help="epochs of every supervised run")
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=128, help="image size of every run (the sample profile's is 256)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--project", type=Path, default=Path("runs/bench/active"))
    ap.add_argument("--record", action="store_true", help="record the finished arms in RESULTS.md; train nothing")
    ap.add_argument("--note", default="", help="one more line for the record")
    a = ap.parse_args()
    project = a.project / a.data
    if a.record:
        summarise(project, a.data, a.epochs, a.imgsz, note=a.note)
        return
    arms(project, a.data, a.epochs, a.val_every, a.workers, a.imgsz)
    summarise(project, a.data, a.epochs, a.imgsz, cpu_s=time.process_time(), note=a.note)


if __name__ == "__main__":
    main()
