"""Datasets and data loaders: labeled (train/val) and unlabeled (weak + strong views), reproducible.

Reproducibility: every item's random Generator is derived from (seed, epoch, index), and the
epoch (and the mosaic switch) travel with each index through the sampler, so results do not
depend on the number of workers, and persistent workers see epoch changes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from effteacher.config import AugmentConfig
from effteacher.data.augment import (
    labeled_view,
    letterbox,
    load_resized,
    mixup,
    mosaic4,
    photometric_and_flips,
    strong_view,
    weak_flip,
    weak_view,
)
from effteacher.data.records import ImageRecord
from effteacher.utils.boxes import clip_boxes, transform_boxes, xywhn2xyxy, xyxy2xywhn

Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]]


def _to_chw(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _labels(cls: np.ndarray, boxes_xyxy: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """(n,) classes + (n, 4) xyxy px in an image of ``hw`` -> (n, 6) [0, cls, cx, cy, w, h] norm."""
    n = len(cls)
    out = np.zeros((n, 6), dtype=np.float32)
    if n:
        out[:, 1] = cls
        out[:, 2:] = xyxy2xywhn(np.asarray(boxes_xyxy, dtype=np.float32), hw[1], hw[0])
    return torch.from_numpy(out)


def _cat_targets(labels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-image (n_i, 6) labels into (N, 6) with column 0 = image index in the batch."""
    for i, lb in enumerate(labels):
        lb[:, 0] = i
    return torch.cat(list(labels), 0) if labels else torch.zeros((0, 6))


class _ImageStore(Dataset):
    """Records + image loading (long side = imgsz) with an optional RAM cache of resized images."""

    aug: AugmentConfig

    def __init__(
        self, records: Sequence[ImageRecord], imgsz: int, cache: bool, seed: int, fast_resize: bool
    ) -> None:
        self.records = list(records)
        self.fast_resize = fast_resize  # bilinear instead of area resize (augmented views)
        self.imgsz = int(imgsz)
        self.seed = int(seed)
        self.epoch = 0
        self._cache: list[tuple[np.ndarray, tuple[int, int], tuple[int, int]]] | None = None
        if cache:
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                self._cache = list(pool.map(lambda r: load_resized(r.path, self.imgsz, fast_resize), self.records))

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by direct indexing ``ds[i]`` (loaders pass the epoch with each index)."""
        self.epoch = int(epoch)

    def key(self, index: int, epoch: int) -> tuple[int, int, bool]:
        """What a sampler yields for ``index``: (index, epoch, mosaic enabled)."""
        return (int(index), int(epoch), bool(getattr(self, "mosaic", False)))

    def _unkey(self, item: int | tuple[int, int, bool]) -> tuple[int, int, bool]:
        if isinstance(item, (tuple, list)):
            return int(item[0]), int(item[1]), bool(item[2])
        return self.key(int(item), self.epoch)

    def _rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def load(self, index: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """(img RGB (h, w, 3), (h0, w0), (h, w)); resized so the long side is imgsz."""
        if self._cache is not None:
            return self._cache[index]
        return load_resized(self.records[index].path, self.imgsz, self.fast_resize)

    def _boxes_px(self, index: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The record's labels in its image resized to ``hw``: (boxes (n, 4) xyxy px float32, cls (n,) int64)."""
        rec = self.records[index]
        boxes = xywhn2xyxy(np.asarray(rec.boxes, dtype=np.float32).reshape(-1, 4), hw[1], hw[0])
        return boxes, np.asarray(rec.cls, dtype=np.int64).reshape(-1)

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """4-image mosaic of ``index`` and 3 images drawn from ``rng``: (img (S, S, 3), boxes (n, 4) xyxy px, cls (n,)).

        The labels ride along: neither the pixels nor the draws depend on them.
        """
        idx = [index, *rng.integers(0, len(self), 3).tolist()]
        imgs, boxes, classes = [], [], []
        for i in idx:
            img, _, hw = self.load(i)
            b, c = self._boxes_px(i, hw)
            imgs.append(img)
            boxes.append(b)
            classes.append(c)
        return mosaic4(imgs, boxes, classes, self.imgsz, rng, self.aug)


def rect_batch_shapes(
    shapes_hw: np.ndarray, imgsz: int, batch_size: int, stride: int = 32, pad: float = 0.0
) -> np.ndarray:
    """Per-batch (h, w) letterbox shapes for images already sorted by aspect ratio h/w.

    Each batch gets the smallest stride-multiple rectangle that holds every image of the batch
    resized to long side ``imgsz``. shapes_hw: (n, 2). Returns (n_batches, 2) int.
    """
    ar = shapes_hw[:, 0] / shapes_hw[:, 1]
    nb = math.ceil(len(ar) / batch_size)
    rel = np.ones((nb, 2))
    for b in range(nb):  # one step per batch, not per box
        a = ar[b * batch_size : (b + 1) * batch_size]
        if a.max() < 1:
            rel[b] = (a.max(), 1.0)
        elif a.min() > 1:
            rel[b] = (1.0, 1.0 / a.min())
    return (np.ceil(rel * imgsz / stride + pad) * stride).astype(np.int64)


class LabeledDataset(_ImageStore):
    """Labeled images: augmented train view (mosaic, mixup, affine, HSV, flips) or letterboxed val view.

    ``augment=False, rect=True`` is the validation mode: records are SORTED by aspect ratio
    (``self.records`` is the new order) and each batch of ``batch_size`` shares a stride-multiple
    rectangle; iterate without shuffling, with the same batch size.
    __getitem__ -> (img uint8 (3, H, W), labels (n, 6) [0, cls, cx, cy, w, h] norm, path, shapes)
    shapes = ((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h))) for scale_boxes; None for augmented
    images (their geometry is random, there is nothing to undo).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        imgsz: int,
        aug: AugmentConfig | None,
        augment: bool,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        cache: bool = False,
        seed: int = 0,
        pad: float = 0.0,  # extra stride fraction of rect batch shapes (YOLOv5 val uses 0.5)
    ) -> None:
        records = list(records)
        if rect:
            ar = np.array([r.shape[0] / r.shape[1] for r in records], dtype=np.float64)
            records = [records[i] for i in np.argsort(ar, kind="stable")]
        super().__init__(records, imgsz, cache, seed, fast_resize=augment)
        self.aug = aug or AugmentConfig()
        self.augment = bool(augment)
        self.rect = bool(rect)
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self.mosaic = self.augment and not self.rect and self.aug.mosaic > 0
        self.batch_shapes: np.ndarray | None = None
        if rect and records:
            hw = np.array([r.shape for r in records], dtype=np.float64)
            self.batch_shapes = rect_batch_shapes(hw, self.imgsz, self.batch_size, self.stride, pad)

    def set_mosaic(self, enabled: bool) -> None:
        """Turn mosaic (and mixup) on or off, e.g. for the last ``close_mosaic`` epochs."""
        self.mosaic = bool(enabled) and self.augment and not self.rect and self.aug.mosaic > 0

    def out_shape(self, index: int) -> tuple[int, int]:
        """(h, w) of the image this dataset returns for ``index`` (before any mosaic)."""
        if self.batch_shapes is not None:
            h, w = self.batch_shapes[index // self.batch_size]
            return int(h), int(w)
        return self.imgsz, self.imgsz

    def __getitem__(self, item: int | tuple[int, int, bool]) -> tuple[torch.Tensor, torch.Tensor, str, Shapes | None]:
        index, epoch, mosaic = self._unkey(item)
        path = self.records[index].path
        if not self.augment:
            img, (h0, w0), (h, w) = self.load(index)
            out, ratio, pad = letterbox(img, self.out_shape(index), auto=False, scaleup=False)
            boxes = xywhn2xyxy(
                np.asarray(self.records[index].boxes, dtype=np.float32).reshape(-1, 4),
                w * ratio[1], h * ratio[0], pad[0], pad[1],
            )
            cls = np.asarray(self.records[index].cls, dtype=np.int64).reshape(-1)
            shapes = ((h0, w0), ((h / h0 * ratio[0], w / w0 * ratio[1]), pad))
            return _to_chw(out), _labels(cls, boxes, out.shape[:2]), path, shapes
        rng = self._rng(index, epoch)
        if mosaic and rng.random() < self.aug.mosaic:
            out, boxes, cls = self._mosaic(index, rng)
            if rng.random() < self.aug.mixup:
                out2, boxes2, cls2 = self._mosaic(int(rng.integers(0, len(self))), rng)
                out, boxes, cls = mixup(out, boxes, cls, out2, boxes2, cls2, rng)
            out, boxes = photometric_and_flips(out, boxes, rng, self.aug)
        else:
            img, _, hw = self.load(index)
            boxes, cls = self._boxes_px(index, hw)
            out, boxes, cls = labeled_view(img, boxes, cls, self.out_shape(index), rng, self.aug)
        return _to_chw(out), _labels(cls, boxes, out.shape[:2]), path, None

    @staticmethod
    def collate_fn(batch: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
        """-> (imgs uint8 (B, 3, H, W), targets (N, 6) [img_idx, cls, cx, cy, w, h], paths, shapes)."""
        imgs, labels, paths, shapes = zip(*batch)
        return torch.stack(imgs, 0), _cat_targets(labels), tuple(paths), tuple(shapes)


class UnlabeledDataset(_ImageStore):
    """Unlabeled images as (weak, strong) view pairs and the exact weak -> strong pixel transform.

    __getitem__ -> (weak uint8 (3, S, S), strong uint8 (3, S, S), M (3, 3) float32, path, hidden (n, 6))
    M maps weak-view pixel coords (x, y, 1) to strong-view pixel coords. ``hidden`` are the
    record's labels mapped into the weak view (norm), for REPORTING pseudo-label quality only;
    the views are made without them.

    With probability ``aug.unlabeled_mosaic`` the weak view is a 4-image mosaic (then the weak flip);
    that decision, the 3 other images and the mosaic geometry come from a second generator of the
    item, so an item without mosaic is the same as with ``unlabeled_mosaic: 0``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        imgsz: int,
        aug: AugmentConfig,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        super().__init__(records, imgsz, cache, seed, fast_resize=True)
        self.aug = aug

    def __getitem__(
        self, item: int | tuple[int, int, bool]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str, torch.Tensor]:
        index, epoch, _ = self._unkey(item)
        rng = self._rng(index, epoch)
        p = self.aug.unlabeled_mosaic
        mosaic_rng = self._mosaic_rng(index, epoch) if p > 0 else None
        if mosaic_rng is not None and mosaic_rng.random() < p:
            canvas, boxes, cls = self._mosaic(index, mosaic_rng)  # boxes: reporting only
            weak, m_weak = weak_flip(canvas, rng, self.aug)
        else:
            img, _, (h, w) = self.load(index)
            weak, m_weak = weak_view(img, rng, self.imgsz, self.aug)
            rec = self.records[index]  # reporting only
            boxes = xywhn2xyxy(np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4), w, h)
            cls = np.asarray(rec.cls).reshape(-1)
        strong, m = strong_view(weak, rng, self.aug)
        s = weak.shape[:2]
        labels = _labels(cls, clip_boxes(transform_boxes(boxes, m_weak), s), s)
        path = self.records[index].path
        return _to_chw(weak), _to_chw(strong), torch.from_numpy(m.astype(np.float32)), path, labels

    def _mosaic_rng(self, index: int, epoch: int) -> np.random.Generator:
        """The item's second generator (mosaic decision, images and geometry), independent of ``_rng``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index], spawn_key=(1,)))

    @staticmethod
    def collate_fn(batch: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple, torch.Tensor]:
        """-> (weak (B, 3, S, S), strong (B, 3, S, S), M (B, 3, 3), paths, hidden (N, 6))."""
        weak, strong, m, paths, hidden = zip(*batch)
        return torch.stack(weak, 0), torch.stack(strong, 0), torch.stack(m, 0), tuple(paths), _cat_targets(hidden)


