"""Where a training step's time goes on a GPU: model (forward + backward), the loss's target assignment, the rest
of the loss, and the optimizer step, per batch size and precision (fp32, AMP), from torch.profiler; and the data
loader's img/s next to the model's, to tell a loader-bound run from a model-bound one. On CUDA it also counts the
loss's host-device syncs and times the step with the loss's two target assignments: masked candidates (the GPU
default, no sync) and compacted positives (the CPU default).

    python -m benchmarks.gpu_profile                  # a GPU machine: batch 16 and 64 at 640 px, fp32 and AMP
    python -m benchmarks.gpu_profile --smoke          # any machine (CPU in CI): tiny sizes, seconds, not recorded
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.common import record, step_rate, sync
from effteacher.config import LossConfig
from effteacher.losses import detection
from effteacher.losses.detection import DetectionLoss
from effteacher.models.build import build_model

PARTS = ("forward", "assign", "loss", "backward", "optimizer")  # the labelled regions of one step


@contextlib.contextmanager
def labelled_assign() -> Iterator[None]:
    """The loss's target assignment as its own profiler region (the loss calls it by module name)."""
    inners = {name: getattr(detection, name) for name in ("assign_targets", "assign_candidates")}

    def labelled(inner: Any) -> Any:
        def assign(*a: Any, **k: Any) -> Any:
            with record_function("assign"):
                return inner(*a, **k)
        return assign

    for name, inner in inners.items():
        setattr(detection, name, labelled(inner))
    try:
        yield
    finally:
        for name, inner in inners.items():
            setattr(detection, name, inner)


def loss_syncs(loss_fn: DetectionLoss, raw: list[torch.Tensor], targets: torch.Tensor) -> int:
    """Host-device syncs one loss call makes (CUDA's sync debug mode warns once per sync)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loss_fn(raw, targets)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def step_profile(dev: torch.device, imgsz: int, batch: int, amp: bool, steps: int,
                 sync_free: bool | None = None) -> dict[str, float]:
    """ms per step of each region (device time on CUDA, CPU time elsewhere; 'assign' is inside 'loss'),
    the step's img/s measured without the profiler, and on CUDA the loss's host-device syncs ('syncs').
    ``sync_free``: the loss's target assignment (None: its default for the device)."""
    torch.manual_seed(0)
    model = build_model("n", 80).to(dev).train()
    loss_fn = DetectionLoss(model, LossConfig(), imgsz)
    loss_fn.sync_free = sync_free
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.rand(batch, 3, imgsz, imgsz, device=dev)
    g = torch.Generator().manual_seed(0)
    n_t = batch * 8  # 8 boxes per image
    t = torch.cat([torch.arange(batch).repeat_interleave(8)[:, None].float(),
                   torch.randint(0, 80, (n_t, 1), generator=g).float(),
                   torch.rand(n_t, 2, generator=g) * 0.6 + 0.2, torch.rand(n_t, 2, generator=g) * 0.3 + 0.02], 1)
    t = t.to(dev)

    def step() -> None:
        with torch.autocast(dev.type, enabled=amp):
            with record_function("forward"):
                raw = model(x)
            with record_function("loss"):
                loss, _ = loss_fn(raw, t)
        with record_function("backward"):
            scaler.scale(loss).backward()
        with record_function("optimizer"):
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)

    rate = step_rate(step, steps, batch, dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with labelled_assign(), profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync(dev)
    out = {"img/s": rate}
    if dev.type == "cuda":
        with torch.autocast(dev.type, enabled=amp):
            out["syncs"] = float(loss_syncs(loss_fn, model(x), t))
    for ev in prof.key_averages():
        if ev.key in PARTS:
            us = getattr(ev, "device_time_total", 0.0) if dev.type == "cuda" else ev.cpu_time_total
            out[ev.key] = us / 1000 / steps
    return out


def loader_rate(imgsz: int, batch: int, workers: int, n_images: int) -> float:
    """img/s of the augmented labeled loader (mosaic, mixup, affine, HSV) on generated JPEGs, workers as given."""
    from benchmarks.data_speed import images_per_second, make_images
    from effteacher.config import AugmentConfig
    from effteacher.data.loaders import LabeledDataset
    from effteacher.data.sampling import build_loader

    with tempfile.TemporaryDirectory() as tmp:
        recs = make_images(Path(tmp), n_images)
        return images_per_second(build_loader(LabeledDataset(recs, imgsz, AugmentConfig(), augment=True), batch,
                                              workers, True, seed=0))


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device, nothing recorded")
    ap.add_argument("--device", default=None, help="cuda index or 'cpu' (default: cuda:0 if available)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)
    if args.smoke:
        args.imgsz, args.batches, args.steps, args.workers = 64, [2, 4], 1, 0
    name = args.device if args.device is not None else ("0" if torch.cuda.is_available() else "cpu")
    dev = torch.device("cpu" if name == "cpu" else f"cuda:{name}")
    lines, rates = [], []
    for batch in args.batches:
        for amp in (False, True) if dev.type == "cuda" else (False,):
            r = step_profile(dev, args.imgsz, batch, amp, args.steps)
            rates.append(r["img/s"])
            ms = ", ".join(f"{k} {r[k]:.1f}" for k in PARTS if k in r)
            syncs = f"; loss syncs {r['syncs']:.0f}" if "syncs" in r else ""
            lines.append(f"batch {batch} {'amp' if amp else 'fp32'}: {r['img/s']:.1f} img/s; ms/step {ms}{syncs}")
    if dev.type == "cuda":  # the loss's two target assignments side by side, at the largest batch
        b = max(args.batches)
        masked, compact = (step_profile(dev, args.imgsz, b, False, args.steps, sync_free=v) for v in (True, False))
        lines.append(f"batch {b} fp32 loss assignment: masked candidates {masked['img/s']:.1f} img/s, "
                     f"{masked['syncs']:.0f} syncs per loss; compacted positives {compact['img/s']:.1f} img/s, "
                     f"{compact['syncs']:.0f} syncs")
    model_rate = max(rates)
    data = loader_rate(args.imgsz, max(args.batches), args.workers, 4 * max(args.batches))
    bound = "loader-bound" if data < model_rate else "model-bound"
    lines.append(f"loader {data:.1f} img/s ({args.workers} workers) vs best model step {model_rate:.1f} img/s: "
                 f"{bound}")
    for line in lines:
        print(line, flush=True)
    if not args.smoke:
        record("gpu_profile", f"gpu_profile ({dev}, {args.imgsz} px): " + " | ".join(lines),
               "- regions: forward, assign (inside loss), loss, backward, optimizer; device time on CUDA")
    return lines


if __name__ == "__main__":
    main()
