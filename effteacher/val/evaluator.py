"""Validation: letterboxed rect batches -> decode -> NMS -> COCO json -> pycocotools mAP, P/R, plots."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from effteacher.config.commands import ValOptions, with_overrides
from effteacher.data.dataset import scan_labeled
from effteacher.data.loaders import LabeledDataset
from effteacher.data.records import ImageRecord
from effteacher.data.sampling import build_loader
from effteacher.data.spec import load_spec
from effteacher.errors import ConfigError, DatasetError
from effteacher.export.runtime import as_backend, load_backend
from effteacher.models.postprocess import detections_from_output
from effteacher.utils.boxes import scale_boxes, xywhn2xyxy
from effteacher.utils.console import info
from effteacher.utils.files import run_folder
from effteacher.utils.plots import plot_confusion_matrix, plot_pr_curve
from effteacher.utils.progress import print_val_table
from effteacher.val.metrics import ConfusionMatrix, ap_per_class, coco_evaluate, match_predictions


@dataclass
class ValResult:
    """Metrics of one validation pass. per_class rows: dicts ``cls images instances p r map50 map``
    (the ``all`` row first, cls -1), as ``effteacher.utils.progress.print_val_table`` takes them."""

    precision: float = 0.0
    recall: float = 0.0
    map50: float = 0.0
    map: float = 0.0
    per_class: list[dict[str, Any]] = field(default_factory=list)
    speed: dict[str, float] = field(default_factory=dict)  # ms per image: preprocess, inference, nms
    n_images: int = 0
    n_instances: int = 0

    def fitness(self) -> float:
        """0.1 * mAP50 + 0.9 * mAP50-95 (YOLOv5's model-selection score)."""
        return 0.1 * self.map50 + 0.9 * self.map

    def as_dict(self) -> dict[str, float]:
        """The results.csv metric columns."""
        return {
            "metrics/precision": float(self.precision),
            "metrics/recall": float(self.recall),
            "metrics/mAP50": float(self.map50),
            "metrics/mAP50-95": float(self.map),
        }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Evaluator:
    """Scores a Detector (nn.Module) or an exported-model Backend on labeled records.

    records: images with labels (original-image normalised boxes); names: class names. The same
    object is reused every epoch by the trainer (the dataset is built once per input geometry).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        names: Sequence[str],
        imgsz: int,
        batch: int = 16,
        workers: int = 0,
        conf: float = 0.001,
        iou: float = 0.6,
        device: str | torch.device = "cpu",
        max_det: int = 300,
        half: bool = False,
    ) -> None:
        self.records = list(records)
        self.names = [str(n) for n in names]
        self.imgsz = int(imgsz)
        self.batch = max(int(batch), 1)
        self.workers = int(workers)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.device = torch.device(device)
        self.half = half
        self.index = {str(r.path): i for i, r in enumerate(self.records)}
        self._loaders: dict[tuple, Any] = {}

    def _loader(self, imgsz: int, rect: bool, stride: int) -> Any:
        key = (imgsz, rect, stride)
        if key not in self._loaders:
            ds = LabeledDataset(self.records, imgsz, aug=None, augment=False, rect=rect, batch_size=self.batch,
                                stride=stride)
            self._loaders[key] = build_loader(ds, self.batch, self.workers, shuffle=False, seed=0)
        return self._loaders[key]

    def _geometry(self, backend: Any) -> tuple[int, bool]:
        """(imgsz, rect) the backend can take: rect batches unless its input shape is static."""
        fixed = getattr(backend, "fixed_shape", None)
        if fixed is None:
            return self.imgsz, True
        if fixed[0] != fixed[1]:
            raise ConfigError(f"the model only accepts a non-square input {tuple(fixed)}; validation letterboxes "
                              "to squares: re-export with a square --imgsz or with --dynamic")
        return int(fixed[0]), False

    def run(self, model_or_backend: Any, save_dir: str | Path | None = None, plots: bool = False,
            half: bool | None = None, verbose: bool = True) -> ValResult:
        """Evaluate; writes predictions.json (and PR curve / confusion matrix with ``plots``) to save_dir."""
        half = self.half if half is None else half
        module = model_or_backend if isinstance(model_or_backend, torch.nn.Module) else None
        was_training = module.training if module is not None else False
        backend = as_backend(model_or_backend, self.names, self.imgsz,
                             next(module.parameters()).device if module is not None else self.device)
        if backend.nc != len(self.names):
            raise DatasetError(f"the model predicts {backend.nc} classes ({backend.names}) but the dataset has "
                               f"{len(self.names)} ({self.names}); use weights trained on this dataset")
        try:
            return self._run(backend, save_dir, plots, bool(half), verbose)
        finally:
            if module is not None:
                module.train(was_training)

    @torch.inference_mode()
    def _run(self, backend: Any, save_dir: str | Path | None, plots: bool, half: bool, verbose: bool) -> ValResult:
        nc = len(self.names)
        dev = backend.device
        imgsz, rect = self._geometry(backend)
        cm = ConfusionMatrix(nc)
        stats: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (correct (n, 10), conf, cls)
        jdict: list[dict[str, Any]] = []
        t = np.zeros(3)
        seen = 0
        autocast = half and dev.type == "cuda"
        loader = self._loader(imgsz, rect, max(int(backend.stride), 32)) if self.records else []
        for imgs, _, paths, shapes in loader:
            t0 = time.perf_counter()
            x = imgs.to(dev, non_blocking=True).float() / 255.0
            _sync(dev)
            t1 = time.perf_counter()
            with torch.autocast(dev.type, enabled=autocast):
                out = backend(x)
            _sync(dev)
            t2 = time.perf_counter()
            dets = detections_from_output(out, backend.has_nms, self.conf, self.iou, self.max_det)
            _sync(dev)
            t += (t1 - t0, t2 - t1, time.perf_counter() - t2)
            hw1 = tuple(x.shape[2:])
            for det, path, shape in zip(dets, paths, shapes):
                seen += 1
                idx = self.index[str(path)]
                rec = self.records[idx]
                h0, w0 = rec.shape
                det = det.detach().float().cpu().clone()
                boxes = scale_boxes(hw1, det[:, :4], (h0, w0), shape[1]).numpy().astype(np.float64)
                scores, cls = det[:, 4].numpy().astype(np.float64), det[:, 5].numpy().astype(np.int64)
                gt = xywhn2xyxy(np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4), w0, h0)
                stats.append((match_predictions(boxes, cls, gt, rec.cls), scores, cls))
                cm.process(boxes, scores, cls, gt, rec.cls)
                wh = boxes[:, 2:] - boxes[:, :2]
                for b, s, c, (bw, bh) in zip(boxes.tolist(), scores.tolist(), cls.tolist(), wh.tolist()):
                    jdict.append({"image_id": idx, "category_id": int(c),
                                  "bbox": [round(b[0], 3), round(b[1], 3), round(bw, 3), round(bh, 3)],
                                  "score": round(s, 5)})
        return self._finish(stats, jdict, cm, t, seen, save_dir, plots, verbose)

    def _finish(self, stats: list, jdict: list, cm: ConfusionMatrix, t: np.ndarray, seen: int,
                save_dir: str | Path | None, plots: bool, verbose: bool) -> ValResult:
        nc = len(self.names)
        target_cls = np.concatenate([r.cls for r in self.records] + [np.zeros(0, np.int64)]).astype(np.int64)
        n_img_cls = np.zeros(nc, dtype=np.int64)
        for r in self.records:  # images containing each class
            n_img_cls[np.unique(r.cls).astype(np.int64)] += 1
        if stats:
            tp, conf, pcls = (np.concatenate(z, 0) for z in zip(*stats))
        else:
            tp, conf, pcls = np.zeros((0, 10), bool), np.zeros(0), np.zeros(0, np.int64)
        pr = ap_per_class(tp, conf, pcls, target_cls, nc)
        coco = coco_evaluate(self.records, jdict, self.names)
        present = pr["n_gt"] > 0
        mp = float(pr["p"][present].mean()) if present.any() else 0.0
        mr = float(pr["r"][present].mean()) if present.any() else 0.0
        rows = [{"cls": -1, "images": len(self.records), "instances": int(len(target_cls)), "p": mp, "r": mr,
                 "map50": coco["map50"], "map": coco["map"]}]
        for c in np.nonzero(present)[0].tolist() if nc > 1 else []:
            rows.append({"cls": c, "images": int(n_img_cls[c]), "instances": int(pr["n_gt"][c]),
                         "p": float(pr["p"][c]), "r": float(pr["r"][c]),
                         "map50": float(coco["per_class_ap50"][c]), "map": float(coco["per_class_map"][c])})
        n = max(seen, 1)
        speed = {"preprocess": 1e3 * t[0] / n, "inference": 1e3 * t[1] / n, "nms": 1e3 * t[2] / n}
        result = ValResult(mp, mr, coco["map50"], coco["map"], rows, speed, len(self.records), int(len(target_cls)))
        if verbose:
            print_val_table(rows, self.names)
        if save_dir is not None:
            save_dir = Path(save_dir)
            save_dir.mkdir(parents=True, exist_ok=True)
            (save_dir / "predictions.json").write_text(json.dumps(jdict))
            if plots:
                self._plots(pr, cm, save_dir)
        return result

    def _plots(self, pr: dict[str, np.ndarray], cm: ConfusionMatrix, save_dir: Path) -> None:
        plot_pr_curve(pr["px"], pr["py"], pr["ap"][:, 0], self.names, save_dir / "PR_curve.png")
        plot_confusion_matrix(cm.matrix, self.names, save_dir / "confusion_matrix.png")


def run_val(weights: str | Path, *, options: ValOptions | None = None, **overrides: Any) -> ValResult:
    """`effteacher val`: score any weights format on a dataset split; writes runs/val/exp{N}
    (``options``, or its defaults with the keyword ``overrides``)."""
    o = with_overrides(ValOptions, options, overrides)
    if o.split not in ("val", "test", "train"):
        raise ConfigError(f"--split {o.split!r} is unknown; use val or test")
    spec = load_spec(o.data)
    sources = getattr(spec, o.split)
    if not sources:
        raise DatasetError(f"{spec.yaml_path or o.data}: has no '{o.split}' images; add a {o.split}: entry or pick "
                           "another --split")
    backend = load_backend(weights, o.device, half=o.half)
    if backend.nc != len(spec.names):
        raise DatasetError(f"{weights}: the model has {backend.nc} classes {backend.names} but "
                           f"{spec.yaml_path or o.data} has {len(spec.names)} {spec.names}; use matching weights")
    records = scan_labeled(sources, spec.names).records
    size = o.imgsz or max(backend.imgsz)
    with run_folder(o.project, o.name, o.exist_ok) as save_dir:
        ev = Evaluator(records, spec.names, size, o.batch, o.workers, o.conf, o.iou, backend.device, half=o.half)
        result = ev.run(backend, save_dir=save_dir, plots=True)
    sp = result.speed
    shape = f"({o.batch}, 3, {size}, {size})"
    info(f"Speed: {sp['preprocess']:.1f}ms pre-process, {sp['inference']:.1f}ms inference, "
         f"{sp['nms']:.1f}ms NMS per image at shape {shape}")
    info(f"Results saved to [bold]{save_dir}[/bold]")
    return result
