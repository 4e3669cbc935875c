"""Which part of the unlabeled loss helps or hurts: SSOD variants branched from ONE burn-in state.

Trains the burn-in of the sample-profile SSOD run once (10% labels, n, 256 px), stops at the
hand-over with its last.pt, then runs each variant for ``--n-ssod`` SSOD epochs from a copy of
that state (same weights, optimizer, LR position, RNG), so variants differ only in their
overrides. A variant with ``ssod.lambda_u: 0`` is the control: the same SSOD steps and labeled
batches without pseudo labels. Research tool: it patches Trainer methods to branch the run
(``--resume`` itself refuses config changes, on purpose).

    python -m benchmarks.ssod_ablation --root /tmp/abl --seed 1 --do-burnin \
        --variant 'control:{"ssod.lambda_u": 0.0}' 'default:{}' 'no_ucls:{"ssod.unsup_cls": 0.0}'
    python -m benchmarks.ssod_ablation --root /tmp/abl --record   # summarise every variant run so far

Special overrides (not config keys): ``_agnostic: true`` = class-agnostic teacher NMS;
``_tau2_floor: x`` = Epoch Adaptor tau2 lower bound x.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch


class _Stop(Exception):
    pass


def burn_in(root: Path, seed: int, epochs: int, burn: int) -> Path:
    """Run the SSOD config up to the hand-over; returns the run folder holding last.pt at burn-in end."""
    from effteacher.config import defaults_for, replace
    from effteacher.engine import trainer as T

    cfg = replace(defaults_for("sample"), project=str(root), name=f"burn_s{seed}", exist_ok=True, labeled="10%",
                  seed=seed, epochs=epochs, burn_in=burn, val_every=50, workers=2)

    def stop(self: Any) -> None:
        raise _Stop()

    orig = T.Trainer._hand_over
    T.Trainer._hand_over = stop
    try:
        T.train(cfg)
    except _Stop:
        pass
    finally:
        T.Trainer._hand_over = orig
    return root / f"burn_s{seed}"


def variant(root: Path, seed: int, name: str, n_ssod: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Copy the burn-in state, apply ``overrides`` and train ``n_ssod`` SSOD epochs; returns the summary row."""
    from effteacher.config import defaults_for, replace
    from effteacher.engine import trainer as T

    special = {k: overrides.pop(k) for k in list(overrides) if k.startswith("_")}
    src, dst = root / f"burn_s{seed}", root / f"{name}_s{seed}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    saved = {k: getattr(T.Trainer, k) for k in ("_end_epoch", "_restore", "_teacher_predict")}
    orig_rc = T.resumed_config

    def end(self: Any, epoch: int, *a: Any, **k: Any) -> bool:
        return saved["_end_epoch"](self, epoch, *a, **k) or epoch + 1 >= self.cfg.burn_in + n_ssod

    def restore(self: Any, ck: dict[str, Any]) -> None:
        self.thresholds.load_state_dict = lambda st: None  # burn-in thresholds are the initial ones
        if "_tau2_floor" in special:
            self.thresholds.tau2_bounds = (float(special["_tau2_floor"]), 0.9)
        saved["_restore"](self, ck)

    @torch.no_grad()
    def agnostic_predict(self: Any, x_w: torch.Tensor) -> list[torch.Tensor]:
        from effteacher.engine.postprocess import non_max_suppression
        from effteacher.models.head import decode

        t = self.ema.module
        pred = decode(t(x_w), t.anchors, t.stride)
        floor = min(0.05, float(self.thresholds.tau1.min()))
        return non_max_suppression(pred.float(), conf_thres=floor, iou_thres=self.cfg.ssod.nms_iou, return_obj=True,
                                   max_det=300, agnostic=True, return_probs=self.cfg.ssod.soft_cls)

    T.resumed_config = lambda ck, c, p: replace(orig_rc(ck, c, p), **overrides)
    T.Trainer._end_epoch, T.Trainer._restore = end, restore
    if special.get("_agnostic"):
        T.Trainer._teacher_predict = agnostic_predict
    try:
        T.train(replace(defaults_for("sample"), project=str(root), resume=str(dst / "weights/last.pt"), workers=2, epochs=0))
    finally:
        T.resumed_config = orig_rc
        for k, v in saved.items():
            setattr(T.Trainer, k, v)
    from benchmarks.branch import rows as validated_rows

    keys = ["metrics/mAP50-95", "metrics/mAP50", "pseudo/precision", "pseudo/precision_agnostic", "pseudo/recall",
            "pseudo/reliable", "pseudo/uncertain"]
    rows = [[int(r["epoch"])] + [None if k not in r else round(r[k], 4) for k in keys]  # None: not measured
            for r in validated_rows(dst)][-(n_ssod + 1):]
    out = {"name": name, "seed": seed, "overrides": {**overrides, **special}, "columns": ["epoch", *keys], "rows": rows}
    with open(root / "summary.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
    print("RESULT", json.dumps(out), flush=True)
    return out


def _f2(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def summarise(root: Path) -> None:
    from benchmarks.common import record

    runs = [json.loads(line) for line in (root / "summary.jsonl").read_text().splitlines() if line.strip()]
    if not runs:
        raise SystemExit(f"no variants in {root / 'summary.jsonl'}")
    start = runs[0]["rows"][0]
    n = min(len(r["rows"]) for r in runs) - 1
    parts, details = [], []
    for r in runs:
        end = r["rows"][n]
        parts.append(f"{r['name']} {end[1]:.3f}")
        prec = ", ".join(f"{_f2(row[3])}/{_f2(row[4])}" for row in r["rows"][1:n + 1])
        details.append(f"- {r['name']} (seed {r['seed']}, {json.dumps(r['overrides'])}): mAP50-95 "
                       + " -> ".join(f"{row[1]:.3f}" for row in r["rows"][: n + 1])
                       + (f"; reliable pseudo precision class/agnostic per epoch {prec}" if any(row[4] for row in r["rows"][1:]) else ""))
    line = (f"ssod_ablation: burn-in end {start[1]:.3f} mAP50-95; after {n} SSOD epochs: " + ", ".join(parts)
            + " (n, sample 10%)")
    record("ssod_ablation", line, "\n".join(details))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=270, help="the SSOD run's total epochs (sets the LR schedule)")
    ap.add_argument("--burn-in", type=int, default=250)
    ap.add_argument("--do-burnin", action="store_true")
    ap.add_argument("--n-ssod", type=int, default=4)
    ap.add_argument("--variant", nargs="*", default=[], help="name:json_overrides")
    ap.add_argument("--record", action="store_true", help="summarise summary.jsonl into RESULTS.md")
    a = ap.parse_args()
    if a.do_burnin:
        burn_in(a.root, a.seed, a.epochs, a.burn_in)
    for v in a.variant:
        name, js = v.split(":", 1)
        variant(a.root, a.seed, name, a.n_ssod, json.loads(js))
    if a.record:
        summarise(a.root)


if __name__ == "__main__":
    main()
