"""CPU latency (ms/img, batch 1, NMS included) of eager PyTorch, TorchScript, onnxruntime and OpenVINO exports."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from benchmarks.common import record

VARIANTS = ("n", "s")
SIZES = (640, 320)
WARMUP, ITERS = 3, 15
CONF, IOU = 0.25, 0.45
# One intra-op thread for every runtime: on this shared 2-core machine, 2 OpenMP threads made eager
# PyTorch spin-wait on busy cores (2.6 s instead of ~75 ms per n@640 forward), measuring contention.
THREADS = 1
BACKENDS = ("pytorch", "torchscript", "onnxruntime", "openvino")


def interleaved_ms(fns: dict[str, Callable[[], object]], warmup: int = WARMUP, iters: int = ITERS) -> dict[str, float]:
    """Median wall time (ms) of each ``fn()``, run in turn each iteration so CPU contention hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def runners(variant: str, size: int, folder: Path) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """x -> decoded (1, A, 5+nc) for eager PyTorch, TorchScript, onnxruntime and OpenVINO (same random-init weights).

    OpenVINO runs through the runtime layer's OpenVINOBackend (fp32, torch's thread count) on an fp32 export.
    """
    import onnxruntime as ort

    from effteacher.export.onnx import export_onnx
    from effteacher.export.openvino import OpenVINOBackend, export_openvino
    from effteacher.export.torchscript import export_torchscript, load_torchscript
    from effteacher.models.build import build_model
    from effteacher.models.head import DeployModel

    torch.manual_seed(0)
    model = DeployModel(build_model(variant, nc=80)).eval().requires_grad_(False)
    onnx_path = export_onnx(model, folder / f"{variant}{size}.onnx", (size, size))
    ts_path = export_torchscript(model, folder / f"{variant}{size}.torchscript", (size, size))
    scripted = load_torchscript(ts_path)[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])

    def run_ort(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["output0"], {"images": x.numpy()})[0])

    meta = {"names": [str(i) for i in range(80)], "imgsz": [size, size], "stride": 32}
    ov_backend = OpenVINOBackend(export_openvino(onnx_path, folder / f"{variant}{size}_openvino_model", False, meta),
                                 torch.device("cpu"))
    return {"pytorch": model, "torchscript": scripted, "onnxruntime": run_ort, "openvino": ov_backend}


def main() -> None:
    from effteacher.models.postprocess import non_max_suppression

    torch.set_num_threads(THREADS)
    results: dict[tuple[str, int, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for variant in VARIANTS:
            for size in SIZES:
                x = torch.rand(1, 3, size, size)
                fns = {name: (lambda fn=fn: non_max_suppression(fn(x), CONF, IOU, max_det=300))
                       for name, fn in runners(variant, size, Path(tmp)).items()}
                for name, ms in interleaved_ms(fns).items():
                    results[variant, size, name] = ms
    rows = [
        f"| {v} | {s} | " + " | ".join(f"{results[v, s, b]:.1f}" for b in BACKENDS)
        + f" | {results[v, s, 'pytorch'] / results[v, s, 'onnxruntime']:.2f}x"
        + f" | {results[v, s, 'onnxruntime'] / results[v, s, 'openvino']:.2f}x |"
        for v in VARIANTS
        for s in SIZES
    ]
    speedup = results["n", 640, "pytorch"] / results["n", 640, "onnxruntime"]
    line = (
        f"export_speed: n@640 ms/img pytorch {results['n', 640, 'pytorch']:.1f}, "
        f"torchscript {results['n', 640, 'torchscript']:.1f}, onnxruntime {results['n', 640, 'onnxruntime']:.1f}, "
        f"openvino {results['n', 640, 'openvino']:.1f} (onnxruntime {speedup:.2f}x eager; target >= 1.3x)"
    )
    details = "\n".join([
        f"CPU, batch 1, {THREADS} intra-op thread (torch, onnxruntime and OpenVINO; more threads on this shared CPU "
        f"measured contention, see THREADS), median of {ITERS} interleaved runs "
        f"after {WARMUP} warm-up, random-init models with nc=80, NMS included "
        f"(models.postprocess.non_max_suppression, conf {CONF}, iou {IOU}). The machine's CPU is shared with "
        "other engineers' jobs, so expect noise of 10-30%.",
        "",
        "| model | imgsz | pytorch ms | torchscript ms | onnxruntime ms | openvino ms | ort speed-up | "
        "openvino vs ort |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    record("export_speed", line, details)


if __name__ == "__main__":
    main()
