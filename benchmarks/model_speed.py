"""Benchmark: parameters, GFLOPs at 640 and CPU latency (forward + decode + NMS, batch 1) of n, s, retina-r18."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import record
from effteacher.models.postprocess import non_max_suppression
from effteacher.models.build import build_model
from effteacher.models.head import DeployModel


def gflops(model: DeployModel, size: int = 640) -> float:
    """FLOPs of one forward at size x size, in G. FlopCounterMode counts 2 FLOPs per multiply-add,
    which is what YOLOv5 prints as GFLOPs (thop MACs x 2); BatchNorm/activations are not counted."""
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def latency_ms(model: DeployModel, size: int, reps: int, warmup: int = 3) -> float:
    """Best-of-reps ms per image, batch 1: forward + decode + NMS (conf 0.001, IoU 0.6 as in val).

    The minimum is robust to other jobs on a shared CPU."""
    x = torch.rand(1, 3, size, size)
    times = []
    with torch.inference_mode():
        for i in range(warmup + reps):
            t0 = time.perf_counter()
            non_max_suppression(model(x), conf_thres=0.001, iou_thres=0.6)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    rows, parts = [], []
    for name in ("n", "s", "retina-r18"):
        m = DeployModel(build_model(name, 80))
        params = sum(p.numel() for p in m.parameters()) / 1e6
        g = gflops(m)
        l640 = latency_ms(m, 640, reps=5 if name != "retina-r18" else 3)
        l320 = latency_ms(m, 320, reps=7)
        rows.append(f"| {name} | {params:.2f} | {g:.2f} | {l640:.1f} | {l320:.1f} |")
        parts.append(f"{name} {params:.2f}M {g:.2f}GFLOPs {l640:.0f}/{l320:.0f}ms")
    line = "model_speed (nc=80, params, GFLOPs@640, CPU ms/img b1 640/320): " + "; ".join(parts)
    details = (
        "| model | params (M) | GFLOPs @640 | CPU ms/img @640 | CPU ms/img @320 |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\n- torch threads: {torch.get_num_threads()}; the CPU is shared with other jobs, so latencies are noisy.\n"
        "- Latency = best of 3-7 runs (after 3 warm-up runs) of forward + decode + NMS (conf 0.001, IoU 0.6), batch 1, random-init weights, fp32.\n"
        "- GFLOPs from torch.utils.flop_counter (2 FLOPs per multiply-add, convs and matmuls only), comparable to"
        " YOLOv5's printed GFLOPs (thop MACs x 2): YOLOv5 reports 4.5 (n) and 16.5 (s).\n"
    )
    record("model_speed", line, details)


if __name__ == "__main__":
    main()
