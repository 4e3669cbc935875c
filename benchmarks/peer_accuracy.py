"""Accuracy against what users would use instead: YOLOv5n (original `yolov5` package) and ultralytics YOLOv5n-u
trained on effteacher's labeled split, next to effteacher supervised, SSOD and the lambda_u 0 control.

One invocation = one dataset and one seed; every arm is resumable (a killed arm continues from its own last
checkpoint; a finished one is reused) and ``--arms`` picks some. Arms, all n from scratch at the dataset
profile's image size and batch:

- ``yolov5``: `python -m yolov5.train` equivalent (``yolov5.train.run``) with ``--weights '' --cfg yolov5n.yaml``,
  hyp.scratch-low.yaml (flips as the dataset profile: none for digits), ``--noplots``, early stopping
  ``--patience``, at most ``--epochs`` epochs; offline (see benchmarks/peer_runs.py);
- ``ultralytics``: ``YOLO('yolov5nu.yaml').train(pretrained=False, plots=False, ...)`` likewise;
- ``ssod``: effteacher SSOD with the default auto schedule;
- ``sup``, ``ctrl``: branched from the SSOD run's burn-in state (its supervised plateau): ``sup`` goes on as
  ``--supervised`` does (polishing, ``sched.polish_factor``), ``ctrl`` is the SSOD phase at ``ssod.lambda_u 0``;
  all three share one plateau. Finished runs of the same names (``sup10_s{seed}``, ``ssod10_s{seed}``,
  ``ctrl10_s{seed}``) under ``--project`` are reused.

``--record`` then scores every finished arm's best weights with ONE evaluator, effteacher's (pycocotools,
conf 0.001, IoU 0.6, the dataset's val images), next to each run's own validation number, and writes the
``peer_accuracy (<dataset>)`` section of RESULTS.md. ultralytics' anchor-free head has no effteacher
counterpart and its ONNX output (B, 4+nc, A, no objectness, no names) is not our export layout, so it is
scored through ``peer_runs.UltralyticsBackend`` (its model, our NMS and metrics).

    python -m benchmarks.peer_accuracy --data sample-large --seed 0 --project /work/bench
    python -m benchmarks.peer_accuracy --data sample-large --record --project /work/bench
"""

from __future__ import annotations

import argparse
import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.branch import baselines, branch, rows, run_arm, wall_s
from benchmarks.common import parse_arms, record
from benchmarks.peer_runs import PEERS, UltralyticsBackend, export_split, run_peer, yolov5_hyp

ARMS = (*PEERS, "sup", "ssod", "ctrl")
SSOD_TARGET = {"sample-large": 1.2, "sample": 1.3}  # SSOD mAP50-95 / best peer's, issue 35
# each run's own mAP50-95 and mAP50 columns in its results.csv
OWN_COLUMNS = {"yolov5": ("metrics/mAP_0.5:0.95", "metrics/mAP_0.5"),
               "ultralytics": ("metrics/mAP50-95(B)", "metrics/mAP50(B)")}


def tag(labeled: str) -> str:
    """Run-name part of a --labeled value: '10%' -> '10' (ssod_gain's names), anything else sanitised."""
    s = str(labeled).strip().removesuffix("%")
    return "".join(c if c.isalnum() else "_" for c in s)


def run_names(labeled: str, seed: int) -> dict[str, str]:
    t = tag(labeled)
    return {"yolov5": f"yolov5n_{t}_s{seed}", "ultralytics": f"yolov5nu_{t}_s{seed}", "sup": f"sup{t}_s{seed}",
            "ssod": f"ssod{t}_s{seed}", "ctrl": f"ctrl{t}_s{seed}"}


def train_arms(project: Path, data: str, labeled: str, seed: int, which: list[str], a: argparse.Namespace) -> None:
    """Train (or resume, or reuse) the arms in ``which``, in ARMS order."""
    from effteacher.config import defaults_for, replace

    base = replace(defaults_for(data), data=data, workers=a.workers, epochs=0, burn_in="auto", device=a.device)
    if a.imgsz:
        base = replace(base, imgsz=a.imgsz)
    if a.max_epochs:  # a short cap (tests): half burn-in, half SSOD
        base = replace(base, epochs=a.max_epochs, burn_in=max(1, a.max_epochs // 2))
    names = run_names(labeled, seed)
    work = project / f"yolo_{tag(labeled)}_s{seed}"
    if any(k in which for k in PEERS):
        yml = export_split(data, labeled, seed, work)
        params = {"data": str(yml), "imgsz": base.imgsz, "batch": base.batch, "epochs": a.max_epochs or a.epochs,
                  "patience": a.patience, "workers": a.workers, "project": str(project), "device": a.device,
                  "seed": seed, "fliplr": base.aug.fliplr}
        if "yolov5" in which:
            run_peer("yolov5", {**params, "name": names["yolov5"], "hyp": str(yolov5_hyp(work, base.aug.fliplr))},
                     work)
        if "ultralytics" in which:
            run_peer("ultralytics", {**params, "name": names["ultralytics"]}, work)
    if "ssod" in which:
        run_arm(project, names["ssod"], base, labeled=labeled, seed=seed)
    src = project / names["ssod"]
    for arm, overrides in baselines(base).items():
        if arm in which:
            if not (src / "weights/burn_in.pt").is_file():
                raise SystemExit(f"--arms {arm}: {src} has no burn-in state yet; train --arms ssod first")
            branch(src, project / names[arm], overrides, base)


@dataclass
class Arm:
    """One finished arm: mAP50-95 / mAP50 under our evaluator, its own best validation, band, epochs, wall time."""

    name: str
    ours: float
    ours50: float
    own: float
    band: float
    epochs: int
    wall_s: float


def own_rows(kind: str, run: Path) -> list[dict[str, float]]:
    """A run's validations as {'map': mAP50-95, 'map50': mAP50} from its own results.csv, one per epoch.

    A peer writes an epoch's row before its last.pt, so a run killed between the two and resumed trains that
    epoch again and writes a second row for it: the later row (the epoch as it now stands) is kept.
    """
    if kind not in OWN_COLUMNS:
        return [{"map": r["metrics/mAP50-95"], "map50": r["metrics/mAP50"]} for r in rows(run)]
    m, m50 = OWN_COLUMNS[kind]
    with open(run / "results.csv") as f:
        per_epoch = {int(float(r["epoch"])): {"map": float(r[m]), "map50": float(r[m50])}
                     for r in ({k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f))}
    return [per_epoch[e] for e in sorted(per_epoch)]


def evaluate(kind: str, weights: Path, data: str, imgsz: int, device: str) -> Any:
    """Score ``weights`` with effteacher's Evaluator on the dataset's val images (conf 0.001, IoU 0.6)."""
    from effteacher.data.dataset import scan_labeled
    from effteacher.data.spec import load_spec
    from effteacher.export.runtime import load_backend
    from effteacher.utils.dist import select_device
    from effteacher.val.evaluator import Evaluator

    spec = load_spec(data)
    dev = select_device(device)
    backend = UltralyticsBackend(weights, dev) if kind == "ultralytics" else load_backend(weights, dev)
    ev = Evaluator(scan_labeled(spec.val, spec.names).records, spec.names, imgsz, 16, 0, 0.001, 0.6, dev)
    return ev.run(backend, verbose=False)


def score(project: Path, data: str, labeled: str, seed: int, device: str, imgsz: int = 0) -> dict[str, Arm]:
    """Every finished arm of one seed, scored at ``imgsz`` (0: the dataset profile's)."""
    from effteacher.config import defaults_for

    imgsz = imgsz or defaults_for(data).imgsz
    out = {}
    for kind, name in run_names(labeled, seed).items():
        run = project / name
        if not (run / "done.json").is_file() or not (run / "weights/best.pt").is_file():
            continue
        vals = own_rows(kind, run)
        best = max(vals, key=lambda r: 0.1 * r["map50"] + 0.9 * r["map"])  # as best.pt is chosen
        tail = [r["map"] for r in vals[-5:]]
        res = evaluate(kind, run / "weights/best.pt", data, imgsz, device)
        out[kind] = Arm(name, res.map, res.map50, best["map"], max(tail) - min(tail), len(vals), wall_s(run))
    return out


def summarise(project: Path, data: str, labeled: str, seeds: list[int], device: str, cap: int,
              imgsz: int = 0) -> dict[int, dict[str, Arm]]:
    """Score the finished arms of ``seeds`` and write the RESULTS.md section; returns the scores per seed."""
    per_seed = {s: score(project, data, labeled, s, device, imgsz) for s in seeds}
    per_seed = {s: arms for s, arms in per_seed.items() if arms}
    if not per_seed:
        raise SystemExit(f"no finished arm in {project} for seeds {seeds}")
    lines, parts, ok = [], [], True
    for s, arms in per_seed.items():
        peers = [arms[k] for k in PEERS if k in arms]
        for k, a in arms.items():
            capped = f", reached the {cap}-epoch cap (not plateaued)" if k in PEERS and a.epochs >= cap else ""
            lines.append(f"- seed {s} {k} ({a.name}): ours mAP50-95 {a.ours:.4f} (mAP50 {a.ours50:.4f}), its own "
                         f"val {a.own:.4f}, band {a.band:.4f} (last 5 own validations), {a.epochs} validations, "
                         f"{a.wall_s / 60:.0f} min{capped}")
        checks = [] if peers else ["no peer arm finished: targets not checked"]
        top = max(peers, key=lambda a: a.ours) if peers else None
        if top and "sup" in arms:
            met = arms["sup"].ours >= top.ours - top.band
            ok &= met
            checks.append(f"supervised {arms['sup'].ours:.3f} >= best peer {top.ours:.3f} - band {top.band:.3f}: "
                          f"{'met' if met else 'NOT met'}")
        if top and "ssod" in arms:
            ratio = arms["ssod"].ours / top.ours if top.ours > 0 else float("nan")
            need = SSOD_TARGET.get(data, SSOD_TARGET["sample-large"])
            ok &= ratio >= need
            checks.append(f"SSOD {arms['ssod'].ours:.3f} = {ratio:.2f}x best peer (target {need}x): "
                          f"{'met' if ratio >= need else 'NOT met'}")
        ok &= top is not None and "sup" in arms and "ssod" in arms
        parts.append("; ".join([f"s{s} " + ", ".join(f"{k} {a.ours:.3f}" for k, a in arms.items()), *checks]))
    arms_all = {k for arms in per_seed.values() for k in arms}
    for k in (k for k in ARMS if k in arms_all):
        vals = [arms[k].ours for arms in per_seed.values() if k in arms]
        if len(vals) > 1:
            lines.append(f"- {k} across {len(vals)} seeds: {statistics.mean(vals):.4f} +- {statistics.stdev(vals):.4f}")
    lines.append("- ours: effteacher's Evaluator (pycocotools mAP, conf 0.001, IoU 0.6, one label a box) on the val "
                 "images for every arm; own: the run's own best validation (yolov5: conf 0.001 IoU 0.6 multi-label; "
                 "ultralytics: IoU 0.7)")
    lines.append(f"- runs in {project}; command: python -m benchmarks.peer_accuracy --data {data} --seed S "
                 f"--project {project.parent}, then --record")
    line = f"peer_accuracy ({data}, mAP50-95, n from scratch, --labeled {labeled}): " + " | ".join(parts) + \
        f"; targets {'met' if ok and parts else 'NOT met'}"
    record(f"peer_accuracy ({data})", line, "\n".join(lines + ["- the machine may have been shared during the runs"]))
    return per_seed


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="sample-large", help="sample, sample-large or a dataset YAML")
    ap.add_argument("--imgsz", type=int, default=0, help="image size of every arm (default: the dataset profile's)")
    ap.add_argument("--labeled", default="10%", help="effteacher's --labeled (the split every arm trains on)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--epochs", type=int, default=1000, help="the peers' epoch budget (they stop early on --patience)")
    ap.add_argument("--patience", type=int, default=100,
                    help="the peers' early-stopping patience in epochs (100: both peers' own default; 0: off)")
    ap.add_argument("--max-epochs", type=int, default=0, help="cap every arm at this many epochs (tests)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or a GPU index, for every arm and the evaluator")
    ap.add_argument("--project", type=Path, default=Path("runs/bench"))
    ap.add_argument("--record", action="store_true", help="score the finished arms into RESULTS.md; train nothing")
    ap.add_argument("--seeds", default="", help="with --record: seeds to combine (default: --seed)")
    a = ap.parse_args(argv)
    project = a.project / Path(a.data).stem  # sample-large, or a dataset YAML's name
    if a.record:
        seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else [a.seed]
        return summarise(project, a.data, a.labeled, seeds, a.device, a.max_epochs or a.epochs, a.imgsz)
    which = parse_arms(a.arms, ARMS)
    train_arms(project, a.data, a.labeled, a.seed, which, a)
    return None


if __name__ == "__main__":
    main()
