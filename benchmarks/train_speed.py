"""Training throughput: engine vs a bare PyTorch loop (n model, CPU), and the SSOD step cost.

Prints one line and records it in RESULTS.md. The engine figure is a real `Trainer` epoch (loader,
augmentation, loss, optimizer, EMA, progress bar); the bare figure is the same model, loss and
optimizer on pre-made tensors. FLOP utilisation = training GFLOPs per image (3 x forward) x img/s
over this machine's measured conv GFLOPS.

    python -m benchmarks.train_speed [--sizes 320 640] [--batch 8] [--steps 6] [--precisions fp32 auto]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import record


def conv_gflops(seconds: float = 3.0) -> float:
    """Measured dense conv throughput of this machine (a 3x3 conv, 64->64 channels, 160 px, batch 8)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    x = torch.randn(8, 64, 160, 160)
    flops = 2 * 64 * 64 * 9 * 160 * 160 * 8
    with torch.no_grad():
        conv(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conv(x)
            n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


def forward_gflops(model: torch.nn.Module, imgsz: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, imgsz, imgsz)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(x)
    model.train()
    return fc.get_total_flops() / 1e9


def bare_loop(trainer, imgsz: int, batch: int, steps: int) -> float:
    """img/s of forward + loss + backward + SGD step on fixed tensors (no data loading)."""
    parts = trainer.parts
    model, loss_fn, opt = parts.model, parts.loss_sup, parts.optimizer
    x = torch.rand(batch, 3, imgsz, imgsz)
    t = torch.tensor([[i, i % 10, 0.5, 0.5, 0.2, 0.3] for i in range(batch)], dtype=torch.float32)
    model.train()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        loss, _ = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return batch * steps / (time.perf_counter() - t0)


def make_trainer(data_yaml: Path, imgsz: int, batch: int, supervised: bool, run_dir: Path, precision: str = "fp32",
                 workers: int = 2):
    from effteacher.config import defaults_for, replace
    from effteacher.utils.dist import DistContext
    from effteacher.train.trainer import Trainer

    cfg = replace(defaults_for("sample"), data=str(data_yaml), imgsz=imgsz, batch=batch, workers=workers,
                  supervised=supervised, labeled="100%" if supervised else "50%", epochs=3, burn_in=1,
                  project=str(run_dir), name=f"{'sup' if supervised else 'ssod'}{imgsz}", amp=False, precision=precision,
                  **{"optim.nbs": batch})
    tr = Trainer(cfg, DistContext.from_env("cpu"))
    tr.setup()
    return tr


def timed_epoch(tr, phase, epoch: int) -> float:
    from effteacher.train.phases import run_epoch

    t0 = time.perf_counter()
    run_epoch(phase, tr.parts, epoch, show=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "auto"], help="training precisions to compare")
    args = ap.parse_args()

    from effteacher.data.sample import SampleConfig, generate
    from effteacher.train.precision import cpu_has_bf16

    machine_gflops = conv_gflops()
    parts, details = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for imgsz in args.sizes:
            n_img = args.batch * args.steps
            data = generate(Path(tmp) / f"d{imgsz}", SampleConfig(n_train=n_img, n_val=4, imgsz=imgsz), progress=False)
            for prec in args.precisions:
                tr = make_trainer(data, imgsz, args.batch, True, Path(tmp) / f"runs-{prec}", prec)
                timed_epoch(tr, tr.burn_in, 0)  # warm-up: workers, allocator
                engine = n_img / timed_epoch(tr, tr.burn_in, 1)
                with tr.parts.autocast():
                    bare = bare_loop(tr, imgsz, args.batch, args.steps)
                gf = forward_gflops(tr.parts.model, imgsz)
                util = gf * 3 * engine / machine_gflops
                parts.append(f"n@{imgsz} {prec}: engine {engine:.2f} img/s, bare {bare:.2f} img/s "
                             f"({engine / bare:.0%}), util {util:.0%}")
                details.append(f"- n @ {imgsz}, precision {prec}: {gf:.2f} forward GFLOPs/img; engine {engine:.2f} "
                               f"img/s vs bare loop {bare:.2f} img/s = {engine / bare:.2f}x; implied "
                               f"{gf * 3 * engine:.1f} GFLOPS of {machine_gflops:.1f} measured fp32 conv GFLOPS "
                               f"({util:.0%})")
                tr.close()
        # SSOD step cost vs a supervised step with the same labeled batch, at the smallest size.
        imgsz = min(args.sizes)
        data = Path(tmp) / f"d{imgsz}" / "sample.yaml"
        for prec in args.precisions:
            tr = make_trainer(data, imgsz, args.batch, False, Path(tmp) / f"runs-ssod-{prec}", prec)
            timed_epoch(tr, tr.burn_in, 0)
            sup_step = timed_epoch(tr, tr.burn_in, 0) / len(tr.parts.labeled_loader)
            ssod = tr.phase_for(tr.parts.plan.burn)  # the hand-over
            timed_epoch(tr, ssod, 1)
            ssod_step = timed_epoch(tr, ssod, 2) / len(ssod.loader())
            ratio = ssod_step / sup_step
            parts.append(f"SSOD step {prec} {ssod_step:.2f} s = {ratio:.2f}x supervised")
            details.append(f"- SSOD step at {imgsz} px, precision {prec} (batch {args.batch} labeled + {args.batch} "
                           f"unlabeled, teacher forward, domain discriminator): {ssod_step:.2f} s vs supervised step "
                           f"{sup_step:.2f} s = {ratio:.2f}x (target <= 2.5x)")
            tr.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    details.append(f"- CPU bf16: {'native (auto = bf16)' if cpu_has_bf16() else 'none (auto = fp32)'}; peak RSS of "
                   f"the benchmark process: {rss:.0f} MB (loader workers not included)")
    record("train_speed", "train_speed: " + "; ".join(parts) + f"; peak RSS {rss:.0f} MB", "\n".join(details))


if __name__ == "__main__":
    main()
