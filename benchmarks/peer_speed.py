"""CPU speed side by side: effteacher vs the original YOLOv5 (`yolov5` package) vs ultralytics YOLOv5n-u.

The same images (the generated sample at one size), batch and thread count for all. Each model trains as a
bare step (forward + its own loss + backward + SGD step) and predicts (forward + its own NMS) at batch 1 and
``--batch`` with a copy of the model fused as each tool's predict runs it (BatchNorm folded into the
convolutions: effteacher's .pt backend, YOLOv5's detect.py and ultralytics' predict all do); effteacher also in bf16 autocast (CPUs with native bf16) and channels-last, and as a real
``Trainer`` epoch (loader, augmentation, EMA) in fp32 and in its default precision. Runs are interleaved
(one of each per round) and quoted as min/median/max img/s. GFLOPs of every model come from one counter
(torch.utils.flop_counter.FlopCounterMode) at 640 px, batch 1, forward.

    python -m benchmarks.peer_speed [--imgsz 320] [--batch 16] [--steps 3] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import record
from effteacher.train.precision import BF16_FLAGS, autocast, cpu_flags, cpu_has_bf16

NC = 10  # the sample's digit classes


@dataclass
class Entry:
    """One model (and precision) under test: a training step, a predict call, its forward GFLOPs, its timings."""

    name: str
    model: torch.nn.Module
    train: Callable[[], None]
    predict: Callable[[torch.Tensor], Any] | None  # None: not measured (effteacher predicts in fp32 only)
    gflops: float
    rates: dict[str, list[float]] = field(default_factory=dict)


def load_batch(root: Path, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` generated images (float 0-1, BCHW) and their labels as rows [img, cls, cx, cy, w, h] (normalised)."""
    imgs, rows = [], []
    for i, p in enumerate(sorted((root / "images" / "train").iterdir())[:batch]):
        imgs.append(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))
        lab = root / "labels" / "train" / f"{p.stem}.txt"
        for line in lab.read_text().splitlines() if lab.exists() else []:
            rows.append([i, *map(float, line.split())])
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    return x, torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def forward_gflops(model: torch.nn.Module, imgsz: int = 640) -> float:
    """Forward GFLOPs of one image (eval mode), from torch's own FLOP counter: the same counter for every model."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, imgsz, imgsz))
    model.train()
    return fc.get_total_flops() / 1e9


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss: Callable[[Any], torch.Tensor], x: torch.Tensor,
         dtype: torch.dtype | None = None) -> None:
    with autocast(x.device, dtype):
        total = loss(model(x))
    total.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def effteacher_entries(x: torch.Tensor, t: torch.Tensor, imgsz: int) -> list[Entry]:
    """effteacher n: fp32, channels-last, and bf16 (+ channels-last) where the CPU has native bf16."""
    from effteacher.config import TrainConfig
    from effteacher.losses.detection import DetectionLoss
    from effteacher.models.blocks import fuse_conv_bn
    from effteacher.models.build import build_model
    from effteacher.models.head import decode
    from effteacher.models.postprocess import non_max_suppression

    modes = [("fp32", None, False), ("fp32 channels-last", None, True)]
    if cpu_has_bf16():
        modes += [("bf16", torch.bfloat16, False), ("bf16 channels-last", torch.bfloat16, True)]
    out = []
    for label, dtype, cl in modes:
        torch.manual_seed(0)
        model = build_model("n", NC)
        gf = forward_gflops(model)
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = model.to(memory_format=fmt)
        xi = x.contiguous(memory_format=fmt)
        crit, opt = DetectionLoss(model, TrainConfig().loss, imgsz), sgd(model)

        def train(m=model, o=opt, c=crit, xi=xi, d=dtype) -> None:
            step(m, o, lambda raw: c(raw, t)[0], xi, d)

        pm = fuse_conv_bn(copy.deepcopy(model).eval()).to(memory_format=fmt)  # as the .pt backend runs it

        def predict(xb: torch.Tensor, m=pm) -> Any:
            return non_max_suppression(decode(m(xb.contiguous(memory_format=fmt)), m.anchors, m.stride), 0.25, 0.45)

        out.append(Entry(f"effteacher n {label}", model, train, None if dtype else predict, gf))
    return out


def yolov5_entry(x: torch.Tensor, t: torch.Tensor) -> Entry | None:
    """The original YOLOv5n: its models/yolo.py Model (yolov5n.yaml) and utils/loss.py ComputeLoss, fp32."""
    try:
        import yolov5
        from yolov5.models.yolo import Model
        from yolov5.utils.general import non_max_suppression
        from yolov5.utils.loss import ComputeLoss
    except ImportError:
        return None
    import yaml

    root = Path(yolov5.__file__).parent
    torch.manual_seed(0)
    model = Model(str(root / "models" / "yolov5n.yaml"), nc=NC)
    model.hyp = yaml.safe_load((root / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    gf = forward_gflops(model)
    crit, opt = ComputeLoss(model), sgd(model)
    pm = copy.deepcopy(model).eval().fuse()  # detect.py: DetectMultiBackend(fuse=True)

    def predict(xb: torch.Tensor) -> Any:
        return non_max_suppression(pm(xb)[0], 0.25, 0.45)

    return Entry("yolov5 7.0 n", model, lambda: step(model, opt, lambda p: crit(p, t)[0], x), predict, gf)


def ultralytics_entry(x: torch.Tensor, t: torch.Tensor) -> Entry | None:
    """ultralytics YOLOv5n-u: its DetectionModel (yolov5nu.yaml, anchor-free head) and v8DetectionLoss, fp32."""
    try:
        import ultralytics
        from ultralytics.cfg import get_cfg
        from ultralytics.nn.tasks import DetectionModel
        from ultralytics.utils.loss import v8DetectionLoss
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        return None
    torch.manual_seed(0)
    model = DetectionModel("yolov5nu.yaml", nc=NC, verbose=False)
    model.args = get_cfg()
    gf = forward_gflops(model)
    crit, opt = v8DetectionLoss(model), sgd(model)
    batch = {"batch_idx": t[:, 0], "cls": t[:, 1:2], "bboxes": t[:, 2:6]}
    pm = copy.deepcopy(model).eval().fuse(verbose=False)  # its predictor fuses the model it loads

    def predict(xb: torch.Tensor) -> Any:
        out = pm(xb)  # eval mode: (decoded, raw) or the decoded tensor alone
        return non_max_suppression(out[0] if isinstance(out, tuple) else out, 0.25, 0.45)

    return Entry(f"ultralytics {ultralytics.__version__} yolov5nu", model, lambda: step(
        model, opt, lambda p: crit(p, batch)[0].sum(), x), predict, gf)


def timed(fn: Callable[[], Any], images: int, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return images * reps / (time.perf_counter() - t0)


def measure(entries: list[Entry], x: torch.Tensor, steps: int, rounds: int) -> None:
    """Interleaved rounds: per round, each entry's train img/s then predict img/s at batch 1 and the full batch."""
    b = x.shape[0]
    for e in entries:  # warm-up (allocator, oneDNN kernels)
        e.model.train()
        e.train()
        with torch.no_grad():
            e.model.eval()
            if e.predict is not None:
                e.predict(x[:1]), e.predict(x)
    for _ in range(rounds):
        for e in entries:
            e.model.train()
            e.rates.setdefault("train", []).append(timed(e.train, b, steps))
            if e.predict is None:
                continue
            e.model.eval()
            with torch.no_grad():
                e.rates.setdefault("predict b1", []).append(timed(lambda: e.predict(x[:1]), 1, steps * 2))
                e.rates.setdefault(f"predict b{b}", []).append(timed(lambda: e.predict(x), b, 1))


def engine_rates(data: Path, imgsz: int, batch: int, steps: int, rounds: int, tmp: Path) -> dict[str, list[float]]:
    """Trainer epochs (loader with augmentation, loss, optimizer, EMA) in fp32 and in the default precision."""
    from benchmarks.train_speed import make_trainer, timed_epoch

    out: dict[str, list[float]] = {}
    trainers = {p: make_trainer(data, imgsz, batch, True, tmp / p, precision=p) for p in ("fp32", "auto")}
    for tr in trainers.values():
        timed_epoch(tr, tr.burn_in, 0)
    n = len(trainers["fp32"].parts.labeled_ds)
    for r in range(rounds):
        for p, tr in trainers.items():
            out.setdefault(f"engine {p}", []).append(n / timed_epoch(tr, tr.burn_in, r + 1))
    return out


def default_name() -> str:
    """The entry that trains as `effteacher train` does by default (precision auto, contiguous)."""
    return "effteacher n bf16" if cpu_has_bf16() else "effteacher n fp32"


def mmm(v: list[float]) -> str:
    return f"{statistics.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-engine", action="store_true", help="skip the Trainer epochs")
    ap.add_argument("--no-record", action="store_true", help="print only, do not write RESULTS.md")
    args = ap.parse_args(argv)
    args.load0 = os.getloadavg()[0]  # quoted in the record: was the machine idle?

    from effteacher.data.sample import SampleConfig, generate

    env, path = dict(os.environ), list(sys.path)
    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "data", SampleConfig(n_train=args.batch * args.steps, n_val=2, imgsz=args.imgsz),
                        progress=False)
        x, t = load_batch(data.parent, args.batch)
        entries = effteacher_entries(x, t, args.imgsz)
        peers = [yolov5_entry(x, t), ultralytics_entry(x, t)]
        os.environ.clear(), os.environ.update(env)  # yolov5 sets thread variables and its sys.path on import
        sys.path[:] = path
        torch.set_num_threads(args.threads)
        entries += [p for p in peers if p is not None]
        measure(entries, x, args.steps, args.rounds)
        engine = {} if args.no_engine else engine_rates(data, args.imgsz, args.batch, args.steps, args.rounds,
                                                        Path(tmp) / "runs")
    return report(entries, engine, args)


def report(entries: list[Entry], engine: dict[str, list[float]], args: argparse.Namespace) -> dict[str, Any]:
    flags = cpu_flags()
    isa = ", ".join(f for f in (*BF16_FLAGS, "amx_tile", "amx_int8", "avx512f") if f in flags) or "none of note"
    lines = [f"- setup: {args.imgsz} px, batch {args.batch}, {args.threads} thread(s), {args.steps} steps x "
             f"{args.rounds} interleaved rounds; median [min-max] img/s; CPU ISA: {isa}; torch CPU capability "
             f"{torch.backends.cpu.get_cpu_capability()}"]
    for e in entries:
        rates = ", ".join(f"{k} {mmm(v)}" for k, v in e.rates.items())
        lines.append(f"- {e.name}: {e.gflops:.2f} GFLOPs @640; {rates}")
    for k, v in engine.items():
        lines.append(f"- effteacher Trainer epoch, {k.split()[1]}: {mmm(v)} img/s")
    med = {e.name: statistics.median(e.rates["train"]) for e in entries}
    gfl = {e.name: e.gflops for e in entries}
    ours = [n for n in med if n.startswith("effteacher")]
    best = max(ours, key=med.__getitem__)
    ratios = []
    for peer in (n for n in med if not n.startswith("effteacher")):
        for mine in dict.fromkeys(n for n in ("effteacher n fp32", default_name(), best) if n in med):
            raw = med[mine] / med[peer]
            per = raw * gfl[mine] / gfl[peer]  # img/s per GFLOP: the same work normalised by model size
            ratios.append(f"{mine.removeprefix('effteacher n ')} vs {peer}: {raw:.2f}x raw, {per:.2f}x per GFLOP")
    line = f"peer_speed ({args.imgsz} px, batch {args.batch}, train img/s medians): " + "; ".join(
        f"{n} {v:.1f}" for n, v in med.items()) + (" | " + "; ".join(ratios) if ratios else "")
    if not args.no_record:
        load = f"- load average (1 min) when the run started: {getattr(args, 'load0', float('nan')):.1f} on {os.cpu_count()} CPUs"
        record("peer_speed", line, "\n".join(lines + [load]))
    else:
        print(line)
        print("\n".join(lines))
    return {"entries": entries, "engine": engine, "line": line}


if __name__ == "__main__":
    main()
