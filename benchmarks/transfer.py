"""What a pretrained start is worth: fine-tune from weights pretrained on another set vs from scratch, same split.

Arms (all YOLOv5n at 128 px, the sample-large native size; resumable: a killed invocation picks up where it
stopped, finished arms are reused):

- ``pre``: supervised on ``sample`` at 100% labels (500 images, digits 0-9) for ``--pre-epochs`` epochs;
- ``ft_pretrained``: supervised on ``sample-large`` at 10% labels (300 of 3,000 images, digits 3 5 6 8 9,
  other digits are unlabeled clutter) for ``--epochs`` epochs, starting from ``pre``'s best.pt. The class
  sets differ: backbone, neck and box/objectness rows transfer, and the rows of 3, 5, 6, 8 and 9 are kept by
  name; ``--weights`` prints "transferred N/M tensors";
- ``ft_scratch``: the same run from random weights (same seed, so the same labeled split and batches);
- with ``--ssod``: ``ssod_pretrained`` / ``ssod_scratch``, burn-in ``--epochs`` epochs then ``--ssod-epochs``
  SSOD epochs over the 2,700 unlabeled images (each SSOD epoch costs about 10 supervised ones).

Sizes (defaults): pre 10 epochs x 32 batches of 16, fine-tune 15 epochs x 19 batches of 16 per arm,
validation on the 500 sample-large val images every 5 epochs: 890 batches, about 20 minutes at
OMP_NUM_THREADS=1 when a core is free (~1.1 s per batch measured with a third of a core free; the shared
2-core CPU was often far busier, see RESULTS.md for the wall times). The ``--ssod`` arms add about
7 minutes per SSOD epoch each (169 batches of 16 labeled + 16 unlabeled). ``--record-only`` records
what the finished (or partly finished) arms hold without training.

    OMP_NUM_THREADS=1 python -m benchmarks.transfer --project runs/transfer
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from benchmarks.branch import rows, run_arm, wall_s
from benchmarks.common import record

MAP = "metrics/mAP50-95"
IMGSZ = 128  # sample-large v2's native size (RESULTS.md's transfer numbers were measured on v1 at 160 px)


def fitness(r: dict[str, float]) -> float:
    return 0.1 * r["metrics/mAP50"] + 0.9 * r[MAP]


def _rows(run: Path) -> list[dict[str, float]]:
    return rows(run) if (run / "results.csv").is_file() else []


def best_map(run: Path) -> float:
    rs = _rows(run)
    return max(rs, key=fitness)[MAP] if rs else float("nan")


def _epochs(run: Path) -> list[dict[str, str]]:
    """Every logged epoch of a run (validated or not)."""
    f = run / "results.csv"
    return list(csv.DictReader(f.open())) if f.is_file() else []


def curve(run: Path) -> str:
    """'epoch:mAP50-95' at every validation, '(unfinished)' when the arm did not complete."""
    text = " ".join(f"{int(r['epoch'])}:{r[MAP]:.4f}" for r in _rows(run)) or "not validated"
    return text if (run / "done.json").is_file() else f"{text} (unfinished)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("runs/transfer"))
    ap.add_argument("--pre-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--val-every", type=int, default=5)
    ap.add_argument("--ssod", action="store_true", help="also the SSOD arms (pretrained and scratch)")
    ap.add_argument("--ssod-epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record-only", action="store_true", help="record the arms as they are, train nothing")
    ap.add_argument("--note", default="", help="a line added to the recorded details")
    a = ap.parse_args()

    from effteacher.config import defaults_for, replace

    project = a.project.resolve()
    run = (lambda p, name, *_, **__: p / name) if a.record_only else run_arm
    pre_cfg = replace(defaults_for("sample"), data="sample", imgsz=IMGSZ, workers=a.workers, burn_in="auto",
                      val_every=a.pre_epochs)
    pre = run(project, "pre", pre_cfg, labeled="100%", supervised=True, epochs=a.pre_epochs, seed=a.seed)
    # best.pt exists once pre validated (its last epoch); last.pt holds the same EMA weights otherwise
    weights = str(pre / "weights/best.pt") if (pre / "weights/best.pt").is_file() else str(pre / "weights/last.pt")
    ft_cfg = replace(defaults_for("sample-large"), data="sample-large", imgsz=IMGSZ, workers=a.workers,
                     val_every=a.val_every)
    arms = {
        "ft_pretrained": dict(supervised=True, epochs=a.epochs, weights=weights),
        "ft_scratch": dict(supervised=True, epochs=a.epochs),
    }
    if a.ssod:
        ssod = dict(supervised=False, epochs=a.epochs + a.ssod_epochs, burn_in=a.epochs)
        arms["ssod_pretrained"] = dict(ssod, weights=weights)
        arms["ssod_scratch"] = dict(ssod)
    runs = {name: run(project, name, ft_cfg, labeled="10%", seed=a.seed, model="n", **kw) for name, kw in arms.items()}

    res = {k: best_map(v) for k, v in runs.items()}
    s = res["ft_scratch"]
    gain = f"{res['ft_pretrained'] / s:.2f}x" if s >= 0.01 else "from scratch has not started to learn by then"
    pre_epochs = len(_epochs(pre)) or a.pre_epochs
    line = (f"transfer: sample-large 10% labels, n@{IMGSZ}, {a.epochs} supervised epochs: from weights pretrained "
            f"on sample ({pre_epochs} epochs) best mAP50-95 {res['ft_pretrained']:.4f} "
            f"vs from scratch {s:.4f} ({gain})")
    if a.ssod:
        line += (f"; SSOD (+{a.ssod_epochs} epochs): pretrained {res['ssod_pretrained']:.4f} vs scratch "
                 f"{res['ssod_scratch']:.4f}")
    walls = ", ".join(f"{k} {wall_s(v) / 60:.1f} min" for k, v in {"pre": pre, **runs}.items())
    details = "\n".join([
        f"- wall time (OMP_NUM_THREADS=1, 2-core CPU shared with other jobs): {walls}",
        f"- pre (sample 100%, {pre_epochs} epochs, {len(_epochs(pre)) * 32} batches): {curve(pre)}",
        *[f"- {k} (epoch:mAP50-95): {curve(v)}" for k, v in runs.items()],
        f"- same seed and split in every fine-tune arm; pretrained arms start from {Path(weights).relative_to(project)} "
        "(backbone, neck, box/objectness outputs, and the outputs of classes 3 5 6 8 9 kept by name)",
        f"- `python -m benchmarks.transfer --project runs/transfer --pre-epochs {a.pre_epochs} --epochs {a.epochs}"
        f"{' --ssod --ssod-epochs ' + str(a.ssod_epochs) if a.ssod else ''}`",
        *([f"- {a.note}"] if a.note else []),
    ])
    record("transfer", line, details)


if __name__ == "__main__":
    main()
