"""One-command GPU readiness check: CUDA, NCCL, AMP training, fp16 ONNX parity, TensorRT, predict/train img/s.

    python -m benchmarks.gpu_check            # a GPU machine: at most ~5 minutes, recorded in RESULTS.md
    python -m benchmarks.gpu_check --smoke    # any machine (CPU in CI): tiny sizes, seconds, nothing recorded

Prints one line per check (``name: result``). A check that cannot run here says ``skipped: why``;
a check that breaks says ``FAILED: why`` and the others still run; the exit code is 1 if any
failed. The engine's own output (progress bars, tables) goes to ``<out>/gpu_check.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.common import step_rate, sync


@dataclass(frozen=True)
class Sizes:
    """How big each check is: the full GPU run, or the seconds-long smoke run."""

    train_images: int
    val_images: int
    train_imgsz: int
    train_batch: int
    predict_imgsz: int
    predict_batches: tuple[int, ...]
    speed_imgsz: int
    speed_batch: int
    speed_models: tuple[str, ...]
    speed_steps: int
    predict_seconds: float


FULL = Sizes(train_images=64, val_images=16, train_imgsz=256, train_batch=16, predict_imgsz=640,
             predict_batches=(1, 32), speed_imgsz=640, speed_batch=16, speed_models=("n", "s"), speed_steps=10,
             predict_seconds=3.0)
SMOKE = Sizes(train_images=8, val_images=2, train_imgsz=64, train_batch=4, predict_imgsz=64, predict_batches=(1, 4),
              speed_imgsz=64, speed_batch=2, speed_models=("n",), speed_steps=1, predict_seconds=0.0)


Check = tuple[str, str]  # (the printed line's result, its short form in the recorded summary)


def check_cuda() -> Check:
    """Whether torch sees a GPU, which one, and the CUDA / cuDNN / NCCL versions torch was built with."""
    built = f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}"
    if not torch.cuda.is_available():
        return f"not visible ({built}); CUDA-only checks are skipped", "not visible"
    n = torch.cuda.device_count()
    p = torch.cuda.get_device_properties(0)
    nccl = _nccl_version() if torch.distributed.is_nccl_available() else "n/a"
    return (f"visible, {n} GPU{'s' if n > 1 else ''}: {p.name} (sm_{p.major}{p.minor}, "
            f"{p.total_memory / 2**30:.0f} GiB), {built}, cuDNN {torch.backends.cudnn.version()}, NCCL {nccl}",
            p.name)


def _nccl_version() -> str:
    v = torch.cuda.nccl.version()
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def check_nccl(dev: torch.device) -> Check:
    """A 1-process NCCL group on this GPU: all_reduce, object broadcast and gather (what the trainer uses)."""
    import datetime

    import torch.distributed as dist

    from effteacher.utils.dist import free_port

    if dev.type != "cuda":
        return "skipped: needs CUDA (gloo DDP is covered by tests/train/test_multinode.py)", "skipped (no CUDA)"
    if not dist.is_nccl_available():
        raise RuntimeError("this torch build has no NCCL")
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    try:
        t = torch.arange(4.0, device=dev)
        dist.all_reduce(t)
        box = [{"stop": False, "burn": 3}]
        dist.broadcast_object_list(box, src=0, device=dev)
        gathered: list = [None]
        dist.all_gather_object(gathered, {"loss": 1.0})
        if t.tolist() != [0.0, 1.0, 2.0, 3.0] or box[0]["burn"] != 3 or gathered[0] != {"loss": 1.0}:
            raise RuntimeError(f"NCCL collectives returned wrong values: {t.tolist()}, {box}, {gathered}")
    finally:
        dist.destroy_process_group()
    return f"NCCL {_nccl_version()} group on {dev}: all_reduce, broadcast_object_list, all_gather_object ok", "ok"


def train_tiny(folder: Path, device: str, s: Sizes) -> tuple[Path, bool, list[dict[str, str]], float]:
    """2 epochs (1 burn-in + 1 SSOD) on a generated dataset with AMP requested.

    Returns (run folder, AMP in use after the trainer's self-check, results.csv rows, seconds).
    """
    from effteacher.config import defaults_for, replace
    from effteacher.data.sample import SampleConfig, generate
    from effteacher.train.trainer import Trainer
    from effteacher.utils.dist import DistContext

    data = generate(folder / "data", SampleConfig(n_train=s.train_images, n_val=s.val_images, imgsz=s.train_imgsz,
                                                  min_digit=s.train_imgsz / 8, max_digit=s.train_imgsz / 2.5,
                                                  max_digits=3), progress=False)
    cfg = replace(defaults_for("sample"), data=str(data), imgsz=s.train_imgsz, batch=s.train_batch, epochs=2,
                  burn_in=1, labeled="50%", workers=0, device=device, amp=True, project=str(folder / "runs"),
                  name="amp", exist_ok=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, DistContext.from_env(device))
    run = trainer.fit()
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return run, bool(trainer.parts.amp), rows, time.perf_counter() - t0


def amp_line(dev: torch.device, amp: bool, rows: list[dict[str, str]], seconds: float, s: Sizes) -> Check:
    """The AMP-training line; raises if a loss is not finite or the SSOD epoch is missing."""
    keys = [k for k in rows[0] if k.startswith(("train/", "unsup/")) and k != "train/iterations"]
    # empty cells are not measured (e.g. unsup losses during burn-in); every measured loss must be finite
    bad = [f"{k}={r[k]}" for r in rows for k in keys if r[k] != "" and not math.isfinite(float(r[k]))]
    if bad:
        raise RuntimeError(f"non-finite losses in results.csv: {', '.join(bad[:4])}")
    if len(rows) != 2:
        raise RuntimeError(f"expected 2 epochs in results.csv, found {len(rows)}")
    last = rows[-1]
    if dev.type == "cuda":
        selfcheck, short = (("AMP self-check passed, fp16 autocast on", "self-check passed") if amp
                            else ("AMP self-check FAILED, the trainer fell back to fp32", "self-check FAILED (fp32)"))
    else:
        selfcheck, short = "AMP self-check not applicable on CPU (fp32)", "fp32 on CPU"
    return (f"2 epochs (1 burn-in + 1 SSOD), n @ {s.train_imgsz} px, batch {s.train_batch}, on {dev}: losses finite "
            f"(box {float(last['train/box_loss']):.4f}, unsup obj {float(last['unsup/obj_loss']):.4f}); "
            f"{selfcheck}; {seconds:.1f} s", f"SSOD losses finite, {short}")


def _probe(imgsz: int, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(dev, dtype)


def _diffs(best: Path, runtime: Callable[[torch.Tensor], torch.Tensor], imgsz: int, dev: torch.device,
           half: bool) -> tuple[float, float]:
    """Max |diff| (boxes px, scores) between the checkpoint in PyTorch and an exported runtime."""
    from effteacher.export.api import output_diffs
    from effteacher.export.runtime import TorchBackend
    from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(best)
    ref = TorchBackend(model_from_checkpoint(ckpt, dev), list(ckpt["model"]["names"]), imgsz, dev, half=half)
    x = _probe(imgsz, dev, torch.float32)
    return output_diffs(ref(x), runtime(x))


def check_onnx(best: Path, dev: torch.device, imgsz: int) -> Check:
    """fp16 ONNX export (fp32 without CUDA) checked in onnxruntime against PyTorch."""
    import onnxruntime as ort

    from effteacher.export.api import run_export, tolerances
    from effteacher.export.runtime import OnnxBackend

    half = dev.type == "cuda"
    providers = ort.get_available_providers()
    device = str(dev.index or 0) if half else "cpu"
    path = run_export(best, format="onnx", imgsz=imgsz, batch=2, half=half, device=device)
    backend = OnnxBackend(path, dev)
    used = backend.session.get_providers()[0]
    box, score = _diffs(best, backend, imgsz, dev, half)
    atol, satol = tolerances(half, (imgsz, imgsz))
    if not (box <= atol and score <= satol):
        raise RuntimeError(f"onnxruntime output differs from PyTorch: boxes {box:.3g} px (tol {atol:g}), "
                           f"scores {score:.3g} (tol {satol:g})")
    what = "fp16" if half else "fp32 (fp16 needs CUDA, skipped)"
    note = ""
    if half and used != "CUDAExecutionProvider":
        note = " (onnxruntime has no CUDAExecutionProvider: pip install onnxruntime-gpu)"
    return (f"{what} export ok, onnxruntime {ort.__version__} {used}{note}: parity boxes {box:.2e} px "
            f"(tol {atol:g}), scores {score:.2e} (tol {satol:g}); providers here: {', '.join(providers)}",
            f"{'fp16' if half else 'fp32'} parity ok on {used.replace('ExecutionProvider', '')} "
            f"(boxes {box:.1e} px, scores {score:.1e})")


def check_tensorrt(best: Path, dev: torch.device, imgsz: int) -> Check:
    """fp16 TensorRT engine built from the ONNX export and checked against PyTorch (CUDA + tensorrt only)."""
    if importlib.util.find_spec("tensorrt") is None:
        return "skipped: not installed (pip install tensorrt on a CUDA machine)", "skipped (not installed)"
    if dev.type != "cuda":
        return "skipped: needs a CUDA GPU", "skipped (no CUDA)"
    import tensorrt as trt

    from effteacher.export.api import run_export, tolerances
    from effteacher.export.tensorrt import TensorRTBackend

    t0 = time.perf_counter()
    path = run_export(best, format="engine", imgsz=imgsz, batch=2, half=True, device=str(dev.index or 0))
    built = time.perf_counter() - t0
    box, score = _diffs(best, TensorRTBackend(path, dev), imgsz, dev, half=False)  # fp32 reference, as export
    atol, satol = tolerances(True, (imgsz, imgsz))
    if not (box <= atol and score <= satol):
        raise RuntimeError(f"TensorRT output differs from PyTorch: boxes {box:.3g} px (tol {atol:g}), "
                           f"scores {score:.3g} (tol {satol:g})")
    return (f"fp16 engine (TensorRT {trt.__version__}) built in {built:.1f} s, parity boxes {box:.2e} px, "
            f"scores {score:.2e}", f"fp16 engine parity ok (boxes {box:.1e} px, scores {score:.1e})")


def _rate(fn: Callable[[], Any], images: int, dev: torch.device, seconds: float, warmup: int = 3) -> float:
    """Images per second of ``fn`` (one call = ``images`` images), timed for about ``seconds``."""
    for _ in range(warmup):
        fn()
    sync(dev)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if time.perf_counter() - t0 >= seconds and n >= 2:
            break
    sync(dev)
    return images * n / (time.perf_counter() - t0)


def check_predict(dev: torch.device, s: Sizes) -> Check:
    """Model + NMS throughput of an n model (nc=80, random weights) on pre-made tensors, fp16 on CUDA."""
    from effteacher.export.runtime import TorchBackend
    from effteacher.models.build import build_model
    from effteacher.models.postprocess import non_max_suppression

    torch.manual_seed(0)
    half = dev.type == "cuda"
    backend = TorchBackend(build_model("n", 80), [str(i) for i in range(80)], s.predict_imgsz, dev, half=half)
    parts = []
    for b in s.predict_batches:
        x = torch.rand(b, 3, s.predict_imgsz, s.predict_imgsz, device=dev)
        with torch.inference_mode():
            rate = _rate(lambda: non_max_suppression(backend(x), 0.25, 0.45, max_det=300), b, dev, s.predict_seconds,
                         warmup=3 if s.predict_seconds else 1)
        parts.append(f"batch {b} {rate:.1f} img/s")
    what = f"n @ {s.predict_imgsz} px {'fp16' if half else 'fp32'}"
    return f"{what} on {dev} (model + NMS): {', '.join(parts)}", f"{what} {', '.join(parts)}"


def train_rate(variant: str, dev: torch.device, imgsz: int, batch: int, steps: int, amp: bool) -> float:
    """img/s of forward + loss + backward + SGD step on fixed tensors (no data loading), optional AMP."""
    from effteacher.config import LossConfig
    from effteacher.losses.detection import DetectionLoss
    from effteacher.models.build import build_model

    torch.manual_seed(0)
    model = build_model(variant, 80).to(dev).train()
    loss_fn = DetectionLoss(model, LossConfig(), imgsz)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.rand(batch, 3, imgsz, imgsz, device=dev)
    t = torch.tensor([[i, i % 80, 0.5, 0.5, 0.2, 0.3] for i in range(batch)], dtype=torch.float32, device=dev)

    def step() -> None:
        with torch.autocast(dev.type, enabled=amp):
            loss, _ = loss_fn(model(x), t)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step_rate(step, steps, batch, dev, warmup=2 if steps > 1 else 1)


def check_train_speed(dev: torch.device, s: Sizes) -> Check:
    """Training img/s per model, fp32 and (on CUDA) AMP."""
    modes = (False, True) if dev.type == "cuda" else (False,)
    parts = []
    for v in s.speed_models:
        for amp in modes:
            rate = train_rate(v, dev, s.speed_imgsz, s.speed_batch, s.speed_steps, amp)
            parts.append(f"{v} {'amp' if amp else 'fp32'} {rate:.1f}")
    skip = "" if dev.type == "cuda" else " (AMP skipped: needs CUDA)"
    return (f"{s.speed_imgsz} px, batch {s.speed_batch}, on {dev}, img/s: {', '.join(parts)}{skip}",
            f"@{s.speed_imgsz} b{s.speed_batch} img/s {', '.join(parts)}")


def run_checks(out: Path, smoke: bool, device: str | None = None) -> tuple[list[str], list[str], bool]:
    """Run every check; returns (printed lines, short forms, all passed). Engine output: ``out/gpu_check.log``."""
    s = SMOKE if smoke else FULL
    out.mkdir(parents=True, exist_ok=True)
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device(f"cuda:{int(device or 0)}" if use_cuda else "cpu")
    lines: list[str] = []
    shorts: list[str] = []
    ok = True
    state: dict[str, Any] = {}
    log = open(out / "gpu_check.log", "w")

    def check(name: str, fn: Callable[[], Check]) -> None:
        nonlocal ok
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                result, short = fn()
        except Exception as e:  # noqa: BLE001 - every failure becomes one line; the other checks still run
            ok = False
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            result = short = f"FAILED: {type(e).__name__}: {msg}"
        line = f"{name}: {result}"
        if not result.startswith(("FAILED", "skipped")) and name != "cuda":
            line += f" [{time.perf_counter() - t0:.1f} s]"
        print(line, flush=True)
        lines.append(line)
        shorts.append(f"{name} {short}")

    def amp() -> Check:
        run, used, rows, secs = train_tiny(out, "0" if use_cuda else "cpu", s)
        state["best"] = run / "weights" / "best.pt"
        return amp_line(dev, used, rows, secs, s)

    def needs_best(fn: Callable[[Path, torch.device, int], Check]) -> Callable[[], Check]:
        def run() -> Check:
            if "best" not in state:
                raise RuntimeError("no checkpoint: the AMP training check failed")
            return fn(state["best"], dev, s.train_imgsz)
        return run

    try:
        check("cuda", check_cuda)
        check("nccl", lambda: check_nccl(dev))
        check("amp train", amp)
        check("onnx", needs_best(check_onnx))
        check("tensorrt", needs_best(check_tensorrt))
        check("predict", lambda: check_predict(dev, s))
        check("train speed", lambda: check_train_speed(dev, s))
    finally:
        log.close()
    return lines, shorts, ok


def summary(shorts: list[str], ok: bool, seconds: float) -> str:
    """The one line recorded in RESULTS.md."""
    return f"gpu_check ({'all passed' if ok else 'FAILURES'}, {seconds:.0f} s): " + "; ".join(shorts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for CI (CPU is fine); nothing recorded")
    ap.add_argument("--device", default=None, help="CUDA index (default 0 when CUDA is visible) or cpu")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        lines, shorts, ok = run_checks(out, args.smoke, args.device)
    line = summary(shorts, ok, time.perf_counter() - t0)
    if args.smoke or args.no_record:
        print(line, flush=True)
    else:
        from benchmarks.common import record

        record("gpu_check", line, "\n".join(f"- {x}" for x in lines)
               + "\n- Run: `python -m benchmarks.gpu_check` (one GPU, ~5 minutes at most)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
