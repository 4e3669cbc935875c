"""The peers of benchmarks/peer_accuracy.py: effteacher's labeled split as a plain YOLO dataset, the original
YOLOv5n (`yolov5` package) and ultralytics YOLOv5n-u trained on it offline by their own train entry points,
each in a child process (resumable from its own last.pt), and an adapter scoring ultralytics' anchor-free
model with effteacher's Evaluator.

Offline: both read their font (``Arial.ttf``, used only for plots, still checked by their dataset checks)
from a config folder in the work folder, where matplotlib's DejaVuSans is copied under that name;
``YOLO_OFFLINE=1`` stops ultralytics' update checks and events. The `yolov5` package asks the Hugging Face
hub about every weights path (even ``--weights ''``): its ``attempt_download_from_hub`` is replaced by "not on
the hub" in the child. It also loads its own checkpoints with ``torch.load``'s default, which torch >= 2.6
made weights-only: the child sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for files the child wrote itself.

    python -m benchmarks.peer_runs yolov5|ultralytics PARAMS.json   (the child; peer_accuracy starts it)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.branch import _done, _elapsed, _track
from effteacher.export.backend import Backend
from effteacher.utils.files import file_lock

PEERS = ("yolov5", "ultralytics")


def export_split(data: str, labeled: str, seed: int, out: Path) -> Path:
    """Write effteacher's labeled split of ``data`` (the split ``train --labeled L --seed S`` makes) as a YOLO
    dataset in ``out``: labeled train images (symlinks) and the val images, labels written from the records
    effteacher read, no unlabeled image. Returns its YAML; ``out/split`` holds effteacher's split manifest.

    Arms started side by side share ``out``: the first writes it under a lock, the others wait and reuse it (a
    rewrite would delete the images a running peer reads); data.yaml is written last, so it marks a whole export."""
    yml = out / "data.yaml"
    with file_lock(out / ".export.lock"):
        if not yml.is_file():
            _write_split(data, labeled, seed, out, yml)
    return yml


def _write_split(data: str, labeled: str, seed: int, out: Path, yml: Path) -> None:
    from effteacher.data.dataset import scan_labeled
    from effteacher.data.spec import load_spec
    from effteacher.data.split import build_split, write_split

    spec = load_spec(data)
    train = scan_labeled(spec.train, spec.names).records
    val = scan_labeled(spec.val, spec.names).records
    split = build_split(train, labeled, seed, nc=spec.nc, root=spec.root)
    write_split(split, train, out / "split", spec.names)
    for part, recs in (("train", [train[i] for i in sorted(split.labeled)]), ("val", val)):
        imgs, labs = out / "images" / part, out / "labels" / part
        shutil.rmtree(imgs, ignore_errors=True), shutil.rmtree(labs, ignore_errors=True)
        imgs.mkdir(parents=True), labs.mkdir(parents=True)
        stems = [Path(r.path).stem for r in recs]
        unique = len(set(stems)) == len(stems)
        for i, r in enumerate(recs):
            src = Path(r.path)
            name = src.name if unique else f"{i:06d}_{src.name}"  # images of several folders may share a name
            (imgs / name).symlink_to(src.resolve())
            rows = [f"{int(c)} {' '.join(f'{v:.6f}' for v in b)}" for c, b in zip(r.cls, r.boxes)]
            (labs / f"{Path(name).stem}.txt").write_text("".join(row + "\n" for row in rows))
    yml.write_text(yaml.safe_dump({"path": str(out.resolve()), "train": "images/train", "val": "images/val",
                                   "names": dict(enumerate(spec.names))}, sort_keys=False))


def config_dir(work: Path) -> Path:
    """The peers' config folder (YOLOV5_CONFIG_DIR, YOLO_CONFIG_DIR) with their font already in place."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    cfg = work / "peer_config"
    for d in (cfg, cfg / "Ultralytics"):
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "Arial.ttf").is_file():
            shutil.copyfile(font, d / "Arial.ttf")
    return cfg


def child_env(work: Path) -> dict[str, str]:
    cfg = str(config_dir(work))
    return {**os.environ, "YOLOV5_CONFIG_DIR": cfg, "YOLO_CONFIG_DIR": cfg, "YOLO_OFFLINE": "1",
            "YOLOv5_AUTOINSTALL": "false", "WANDB_MODE": "disabled", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH")]))}


def launch(kind: str, params: dict[str, Any], work: Path) -> subprocess.Popen:
    """Start the child training one peer arm (its output appended to ``<project>/<name>.log``)."""
    run = Path(params["project"]) / params["name"]
    run.parent.mkdir(parents=True, exist_ok=True)
    params = {**params, "resume": str(run / "weights" / "last.pt") if (run / "weights/last.pt").is_file() else ""}
    spec = run.parent / f"{params['name']}.params.json"
    spec.write_text(json.dumps(params, indent=1))
    log = open(run.parent / f"{params['name']}.log", "a")
    try:
        return subprocess.Popen([sys.executable, "-m", "benchmarks.peer_runs", kind, str(spec)], stdout=log,
                                stderr=subprocess.STDOUT, env=child_env(work))
    finally:
        log.close()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal the child (its dataloader workers exit with it) and wait for it."""
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait()


def run_peer(kind: str, params: dict[str, Any], work: Path) -> Path:
    """Train one peer arm into project/name, resume it from its last.pt if it was killed, or skip it if done."""
    run = Path(params["project"]) / params["name"]
    if _done(run):
        print(f"{run}: done, reused", flush=True)
        return run
    last = run / "weights/last.pt"
    if last.is_file() and not zipfile.is_zipfile(last):  # the peers write it in place: a kill can cut it short
        raise SystemExit(f"{last}: truncated (the {kind} arm was killed while saving it); delete {run} to "
                         "train that arm again")
    prior, t0 = _elapsed(run), time.time()
    print(f"{run}: {'resuming' if last.is_file() else 'training'} {kind}", flush=True)

    def train() -> None:
        proc = launch(kind, params, work)
        try:
            rc = proc.wait()
        finally:
            stop(proc)  # the parent was killed: its child goes with it, to be resumed with it
        if rc != 0:
            raise SystemExit(f"{kind} arm {run} failed (exit {rc}); see {run.parent / (params['name'] + '.log')}")

    _track(run, t0, prior, train)
    return run


def yolov5_offline_compat() -> None:
    """What the `yolov5` package needs to train here: its hub lookups answered "not on the hub" (from scratch and
    offline), and numpy's ``trapz`` (removed in numpy 2; its metrics integrate AP with it) as ``trapezoid``."""
    import numpy as np
    import yolov5.models.common as common
    import yolov5.train as train
    import yolov5.utils.downloads as downloads

    for mod in (train, common, downloads):
        mod.attempt_download_from_hub = lambda *a, **k: None
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid


def _yolov5(p: dict[str, Any]) -> None:
    import yolov5.train as train

    yolov5_offline_compat()
    if p["resume"]:
        train.run(resume=p["resume"])
        return
    train.run(data=p["data"], weights="", cfg="yolov5n.yaml", hyp=p["hyp"], imgsz=p["imgsz"], batch_size=p["batch"],
              epochs=p["epochs"], patience=p["patience"], noplots=True, workers=p["workers"], project=p["project"],
              name=p["name"], exist_ok=True, device=p["device"], seed=p["seed"])


def _ultralytics(p: dict[str, Any]) -> None:
    from ultralytics import YOLO, settings

    loggers = ("tensorboard", "wandb", "mlflow", "clearml", "comet", "dvc", "neptune", "raytune", "hub")
    settings.update({"sync": False, **{k: False for k in loggers if k in settings}})  # no events, no loggers
    if p["resume"]:
        YOLO(p["resume"]).train(resume=True)
        return
    YOLO("yolov5nu.yaml").train(data=p["data"], epochs=p["epochs"], imgsz=p["imgsz"], batch=p["batch"],
                                patience=p["patience"], workers=p["workers"], project=p["project"], name=p["name"],
                                exist_ok=True, pretrained=False, plots=False, seed=p["seed"], fliplr=p["fliplr"],
                                device=p["device"])


def yolov5_hyp(work: Path, fliplr: float) -> Path:
    """YOLOv5's hyp.scratch-low.yaml with the dataset profile's horizontal flip (digits: none)."""
    spec = importlib.util.find_spec("yolov5")  # not imported here: it changes the process's environment
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--arms yolov5 needs the yolov5 package: pip install --no-deps yolov5==7.0.14 (see Makefile)")
    root = Path(next(iter(spec.submodule_search_locations)))
    hyp = yaml.safe_load((root / "data/hyps/hyp.scratch-low.yaml").read_text())
    hyp["fliplr"] = fliplr
    out = work / "hyp.scratch-low.yaml"
    out.write_text(yaml.safe_dump(hyp, sort_keys=False))
    return out


class UltralyticsBackend(Backend):
    """An ultralytics detection .pt for effteacher's Evaluator: its raw eval output (B, 4+nc, A) (boxes cx cy w h
    in input pixels, class probabilities, no objectness) as our layout (B, A, 5+nc) with objectness 1, so our NMS
    and metrics score it exactly like our own models."""

    format = "ultralytics"

    def __init__(self, path: Path, device: str | torch.device = "cpu") -> None:
        from ultralytics.nn.tasks import load_checkpoint

        model, ckpt = load_checkpoint(str(path), device=torch.device(device))
        names = model.names if isinstance(model.names, list) else [model.names[i] for i in range(len(model.names))]
        imgsz = int(ckpt.get("train_args", {}).get("imgsz", 640))
        super().__init__(names, (imgsz, imgsz), int(model.stride.max()), torch.device(device))
        self.model = model.eval()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        return torch.cat([y[:, :4], torch.ones_like(y[:, :1]), y[:, 4:]], 1).transpose(1, 2)


def main() -> None:
    kind, spec = sys.argv[1], Path(sys.argv[2])
    {"yolov5": _yolov5, "ultralytics": _ultralytics}[kind](json.loads(spec.read_text()))


if __name__ == "__main__":
    main()
