"""One pass of a trained model over a list of images: detections with objectness and class probabilities, pooled features.

Used by `effteacher pseudo` (labels to review) and `effteacher rank` (what to label next). Images are
letterboxed to a square ``imgsz``; detections come back in each image's original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from effteacher.data.augment import letterbox, load_resized
from effteacher.errors import CheckpointError, DatasetError
from effteacher.models.blocks import fuse_conv_bn
from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint
from effteacher.models.head import decode
from effteacher.models.postprocess import non_max_suppression
from effteacher.ssod.teacher import mirror_raw
from effteacher.utils.boxes import scale_boxes
from effteacher.utils.console import warn

# Detection columns: x1 y1 x2 y2 score cls obj, then the nc class probabilities.
SCORE, CLS, OBJ, PROBS = 4, 5, 6, 7


@dataclass
class ImagePrediction:
    """What the model says about one image.

    dets: (n, 7 + nc) ``x1 y1 x2 y2 score cls obj p_0 .. p_nc-1`` in original pixels (the flip
    ensemble with ``flip``); views: with ``views=True`` the detections of the image alone and of its
    mirror image alone (mapped back), same layout; feature: (C,) unit-norm pooled neck features.
    """

    path: str
    shape: tuple[int, int]
    dets: np.ndarray
    feature: np.ndarray
    views: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class PassConfig:
    """NMS and input settings of a teacher pass (training's teacher NMS by default)."""

    imgsz: int
    conf: float = 0.05  # NMS floor; callers split reliable / uncertain above it
    iou: float = 0.65
    agnostic: bool = False
    max_det: int = 300
    flip: bool = False  # detections from the Humble-Teacher flip ensemble
    views: bool = False  # also the two single-view detection sets (flip disagreement)
    batch: int = 16
    workers: int = 0


def load_model(weights: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(Detector in eval mode with BatchNorm folded into its convolutions, checkpoint dict) from an effteacher .pt;
    other formats get one clear error."""
    p = Path(weights)
    if p.suffix.lower() != ".pt":
        raise CheckpointError(f"{p}: pseudo labels and ranking need an effteacher .pt checkpoint (they read the "
                              "model's objectness, class probabilities and features); pass weights/best.pt")
    ckpt = load_checkpoint(p)
    return fuse_conv_bn(model_from_checkpoint(ckpt, device).eval()), ckpt


class _Images(Dataset):
    """Letterboxed RGB uint8 (3, S, S) images; unreadable files give None (the pass warns and skips them)."""

    def __init__(self, paths: Sequence[str], imgsz: int) -> None:
        self.paths, self.imgsz = [str(p) for p in paths], int(imgsz)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, Any, str]:
        try:
            img, (h0, w0), (h, w) = load_resized(self.paths[i], self.imgsz)
        except DatasetError as e:
            return i, None, None, str(e)
        img, _, pad = letterbox(img, self.imgsz, auto=False)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return i, x, ((h0, w0), ((h / h0, w / w0), pad)), ""


def _collate(batch: list) -> list:
    return batch


def pooled_features(feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Neck feature maps [(B, C_i, H_i, W_i)] -> (B, sum C_i): per level global mean, unit norm, levels weighted equally."""
    parts = [torch.nn.functional.normalize(f.float().mean((2, 3)), dim=1) for f in feats]
    return torch.cat(parts, 1) / len(parts) ** 0.5


def _nms(pred: torch.Tensor, cfg: PassConfig) -> list[torch.Tensor]:
    return non_max_suppression(pred.float(), conf_thres=cfg.conf, iou_thres=cfg.iou, agnostic=cfg.agnostic,
                               max_det=cfg.max_det, return_obj=True, return_probs=True)


def _to_original(det: torch.Tensor, hw: tuple[int, int], shape0: tuple[int, int], ratio_pad: Any) -> np.ndarray:
    """Detections in original pixels, clipped; boxes that clipping made identical (same class) keep their best score."""
    d = det.float().cpu().numpy().astype(np.float64)
    d[:, :4] = scale_boxes(hw, d[:, :4], shape0, ratio_pad)
    if len(d) > 1:
        key = np.concatenate([np.round(d[:, :4], 2), d[:, CLS:CLS + 1]], 1)
        _, first = np.unique(key, axis=0, return_index=True)  # NMS output is sorted by score: first = best
        d = d[np.sort(first)]
    return d.astype(np.float32)


@torch.no_grad()
def teacher_pass(model: torch.nn.Module, paths: Sequence[str | Path], cfg: PassConfig) -> Iterator[ImagePrediction]:
    """Run ``model`` (a Detector) over ``paths`` in batches; yields one ImagePrediction per readable image, in order.

    Unreadable images are skipped with a warning. With ``cfg.flip`` the detections come from the
    average of the decoded predictions of each image and its mirror image (as the flip teacher in
    training); with ``cfg.views`` the two single-view detection sets come too.
    """
    smax = int(model.stride.max())
    if cfg.imgsz % smax:
        raise DatasetError(f"--imgsz {cfg.imgsz} must be a multiple of the model stride {smax}")
    device = next(model.parameters()).device
    model.eval()
    loader = DataLoader(_Images([str(p) for p in paths], cfg.imgsz), batch_size=max(cfg.batch, 1), shuffle=False,
                        num_workers=cfg.workers, collate_fn=_collate)
    for batch in loader:
        ok = [b for b in batch if b[1] is not None]
        for b in batch:
            if b[1] is None:
                warn(b[3])
        if not ok:
            continue
        x = torch.stack([b[1] for b in ok]).to(device).float() / 255.0
        raw, feats = model(x, return_features=True)
        pred = decode(raw, model.anchors, model.stride)
        pred_f = None
        if cfg.flip or cfg.views:
            pred_f = decode([mirror_raw(r) for r in model(x.flip(-1))], model.anchors, model.stride)
        main = _nms(0.5 * (pred + pred_f) if cfg.flip else pred, cfg)
        views = (_nms(pred, cfg), _nms(pred_f, cfg)) if cfg.views else None
        emb = pooled_features(feats).cpu().numpy()
        hw = tuple(x.shape[2:])
        for j, (i, _, (shape0, ratio_pad), _) in enumerate(ok):
            yield ImagePrediction(
                path=str(paths[i]), shape=(int(shape0[0]), int(shape0[1])),
                dets=_to_original(main[j], hw, shape0, ratio_pad), feature=emb[j],
                views=None if views is None else (_to_original(views[0][j], hw, shape0, ratio_pad),
                                                  _to_original(views[1][j], hw, shape0, ratio_pad)),
            )
