"""Labeled/unlabeled datasets and loaders: formats, rect val batches, determinism, resume, no label leakage."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from effteacher.config import AugmentConfig
from effteacher.data.augment import load_resized, strong_view, weak_view
from effteacher.data.geometry import transform_and_filter
from effteacher.data.loaders import LabeledDataset, UnlabeledDataset, rect_batch_shapes
from effteacher.data.records import ImageRecord
from effteacher.data.sampling import InfiniteLoader, build_loader, set_loader_epoch
from effteacher.errors import DatasetError
from effteacher.utils.boxes import scale_boxes, xywhn2xyxy

RED = np.array([255, 0, 0])
GREY = np.array([100, 100, 100])
SIZES = [(64, 96), (96, 64), (80, 80), (72, 128), (128, 72), (100, 90)]  # (h, w)


def make_records(tmp_path, sizes=SIZES) -> list[ImageRecord]:
    """Grey images with one red rectangle each; the label is that rectangle (class = index % 3)."""
    recs = []
    for i, (h, w) in enumerate(sizes):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = GREY
        x1, y1, x2, y2 = w // 4, h // 3, 3 * w // 4, 2 * h // 3
        img[y1:y2, x1:x2] = RED
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        box = np.array([[(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]], np.float32)
        recs.append(ImageRecord(str(p), (h, w), np.array([i % 3], np.int64), box))
    return recs


def red_box(img_chw: torch.Tensor) -> np.ndarray:
    img = img_chw.permute(1, 2, 0).numpy().astype(np.int32)
    closer = np.abs(img - RED).sum(-1) < np.minimum(np.abs(img - GREY).sum(-1), np.abs(img - 114).sum(-1))
    ys, xs = np.nonzero(closer)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def batches_equal(a, b) -> bool:
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(a, b)
    )


def test_labeled_train_output_formats(tmp_path):
    recs = make_records(tmp_path)
    ds = LabeledDataset(recs, 96, AugmentConfig(mixup=0.5), augment=True)
    img, labels, path, shapes = ds[0]
    assert img.shape == (3, 96, 96) and img.dtype == torch.uint8
    assert labels.dtype == torch.float32 and labels.shape[1] == 6 and shapes is None
    loader = build_loader(ds, 4, 0, True, seed=0)
    imgs, targets, paths, shapes = next(iter(loader))
    assert imgs.shape == (4, 3, 96, 96) and imgs.dtype == torch.uint8
    assert targets.shape[1] == 6 and targets.dtype == torch.float32 and len(targets) > 0
    assert set(targets[:, 0].long().tolist()) <= {0, 1, 2, 3}
    assert set(targets[:, 1].long().tolist()) <= {0, 1, 2}
    assert (targets[:, 2:] >= 0).all() and (targets[:, 2:] <= 1).all()
    assert len(paths) == 4 and all(p.endswith(".png") for p in paths)
    assert loader.pin_memory is False or torch.cuda.is_available()


def test_labeled_no_mosaic_box_tracks_pixels(tmp_path):
    recs = make_records(tmp_path)
    aug = dataclasses.replace(AugmentConfig(), mosaic=0.0, hsv_h=0, hsv_s=0, hsv_v=0, degrees=5.0)
    ds = LabeledDataset(recs, 96, aug, augment=True)
    for i in range(len(ds)):
        img, labels, _, _ = ds[i]
        assert labels.shape == (1, 6)
        box = xywhn2xyxy(labels[:, 2:].numpy(), 96, 96)[0]
        assert iou(box, red_box(img)) > 0.85


def test_set_mosaic_reaches_persistent_workers(tmp_path):
    recs = make_records(tmp_path)
    ds = LabeledDataset(recs, 64, AugmentConfig(mosaic=1.0), augment=True)
    loader = build_loader(ds, 3, 2, True, seed=0)
    n_mosaic = sum(len(t) for _, t, _, _ in loader)
    ds.set_mosaic(False)
    set_loader_epoch(loader, 1)
    counts = [len(t) for _, t, _, _ in loader]
    assert n_mosaic > len(ds)  # mosaic brings boxes of 4 images
    assert sum(counts) <= len(ds)  # without mosaic: at most each image's own box


def test_rect_val_batches_and_letterbox_undo(tmp_path):
    recs = make_records(tmp_path)
    ds = LabeledDataset(recs, 128, None, augment=False, rect=True, batch_size=2)
    ars = [r.shape[0] / r.shape[1] for r in ds.records]
    assert ars == sorted(ars)  # sorted by aspect ratio
    # sorted h/w: 72/128, 64/96 | 80/80, 100/90 | 96/64, 128/72
    np.testing.assert_array_equal(ds.batch_shapes, [[96, 128], [128, 128], [128, 96]])
    loader = build_loader(ds, 2, 0, False, seed=0)
    seen = 0
    for b, (imgs, targets, paths, shapes) in enumerate(loader):
        assert tuple(imgs.shape[2:]) == tuple(ds.batch_shapes[b]) and imgs.dtype == torch.uint8
        h, w = imgs.shape[2:]
        for j in range(len(paths)):
            rec = ds.records[seen + j]
            t = targets[targets[:, 0] == j]
            assert t.shape == (1, 6) and t[0, 1].item() == rec.cls[0]
            box = xywhn2xyxy(t[:, 2:].numpy().astype(np.float64), w, h)
            assert iou(box[0], red_box(imgs[j])) > 0.9
            orig = scale_boxes((h, w), box, shapes[j][0], shapes[j][1])
            h0, w0 = rec.shape
            np.testing.assert_allclose(orig[0], xywhn2xyxy(rec.boxes.astype(np.float64), w0, h0)[0], atol=0.6)
        seen += len(paths)
    with pytest.raises(ValueError, match="rect"):
        build_loader(ds, 2, 0, True, seed=0)


def test_rect_batch_shapes_square_and_pad():
    hw = np.array([[50, 100], [100, 100], [200, 100]], np.float64)
    np.testing.assert_array_equal(rect_batch_shapes(hw, 640, 1, 32), [[320, 640], [640, 640], [640, 320]])
    np.testing.assert_array_equal(rect_batch_shapes(hw[:2], 640, 2, 32, pad=0.5), [[672, 672]])


def test_unlabeled_outputs_and_hidden_in_weak_view(tmp_path):
    recs = make_records(tmp_path)
    ds = UnlabeledDataset(recs, 96, AugmentConfig(), seed=1)
    for i in range(len(ds)):
        weak, strong, m, path, hidden = ds[i]
        assert weak.shape == strong.shape == (3, 96, 96) and weak.dtype == strong.dtype == torch.uint8
        assert m.shape == (3, 3) and m.dtype == torch.float32 and path == recs[i].path
        assert hidden.shape == (1, 6)
        box = xywhn2xyxy(hidden[:, 2:].numpy(), 96, 96)[0]
        assert iou(box, red_box(weak)) > 0.9
    loader = build_loader(ds, 4, 0, False, seed=0)
    weak, strong, m, paths, hidden = next(iter(loader))
    assert weak.shape == strong.shape == (4, 3, 96, 96) and m.shape == (4, 3, 3)
    assert hidden[:, 0].tolist() == [0, 1, 2, 3]


def test_strong_view_never_reads_labels(tmp_path):
    recs = make_records(tmp_path)
    blind = [ImageRecord(r.path, r.shape) for r in recs]  # same images, no labels at all
    aug = AugmentConfig(cutout=1.0)
    a, b = UnlabeledDataset(recs, 96, aug, seed=3), UnlabeledDataset(blind, 96, aug, seed=3)
    for i in range(len(recs)):
        wa, sa, ma, _, ha = a[i]
        wb, sb, mb, _, hb = b[i]
        assert torch.equal(wa, wb) and torch.equal(sa, sb) and torch.equal(ma, mb)
        assert len(ha) == 1 and len(hb) == 0


def test_determinism_across_runs_and_worker_counts(tmp_path):
    recs = make_records(tmp_path)

    def run(ds_factory, workers):
        loader = build_loader(ds_factory(), 2, workers, True, seed=7)
        out = []
        for epoch in range(2):
            set_loader_epoch(loader, epoch)
            out.extend(list(loader))
        return out

    for factory in (
        lambda: LabeledDataset(recs, 64, AugmentConfig(mixup=0.5), augment=True, seed=5),
        lambda: UnlabeledDataset(recs, 64, AugmentConfig(), seed=5),
    ):
        a, b, c = run(factory, 0), run(factory, 0), run(factory, 2)
        assert len(a) == 6
        assert all(batches_equal(x, y) for x, y in zip(a, b))
        assert all(batches_equal(x, y) for x, y in zip(a, c))
        assert not all(batches_equal(x, y) for x, y in zip(a[:3], a[3:]))  # epoch 1 differs from epoch 0
        ds = factory()
        assert not torch.equal(ds[(0, 0, True)][1], ds[(0, 1, True)][1])  # new draws each epoch


def test_cache_gives_same_items(tmp_path):
    recs = make_records(tmp_path)
    a = LabeledDataset(recs, 64, None, augment=True, seed=2)
    b = LabeledDataset(recs, 64, None, augment=True, seed=2, cache=True)
    expected = a[1]
    for p in tmp_path.glob("*.png"):
        p.unlink()  # the cached dataset no longer needs the files
    assert batches_equal(b[1], expected)
    with pytest.raises(DatasetError, match="img"):
        a[1]


def test_infinite_loader_resume_exact(tmp_path):
    recs = make_records(tmp_path)[:5]
    ds = UnlabeledDataset(recs, 64, AugmentConfig(), seed=0)
    ref = InfiniteLoader(build_loader(ds, 2, 0, True, seed=1))
    assert len(ref) == 3
    batches = [next(ref) for _ in range(8)]  # crosses two epoch boundaries (3 batches per epoch)
    assert ref.state_dict() == {"epoch": 2, "index": 2}
    probe = InfiniteLoader(build_loader(ds, 2, 0, True, seed=1))
    for _ in range(4):
        next(probe)
    state = probe.state_dict()
    assert state == {"epoch": 1, "index": 1}
    resumed = InfiniteLoader(build_loader(UnlabeledDataset(recs, 64, AugmentConfig(), seed=0), 2, 0, True, seed=1))
    resumed.load_state_dict(state)
    for k in range(4, 8):
        assert batches_equal(next(resumed), batches[k])
    # an epoch's order differs from the next one's
    assert [p for b in batches[:3] for p in b[3]] != [p for b in batches[3:6] for p in b[3]]


def test_distributed_shards_are_disjoint(tmp_path):
    recs = make_records(tmp_path)
    ds = UnlabeledDataset(recs, 64, AugmentConfig(), seed=0)
    shards = []
    for rank in range(2):
        loader = build_loader(ds, 3, 0, True, seed=0, rank=rank, world_size=2)
        shards.append({p for b in loader for p in b[3]})
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == len(recs)


def test_rect_with_augment_uses_batch_shapes_without_mosaic(tmp_path):
    recs = make_records(tmp_path)
    ds = LabeledDataset(recs, 128, AugmentConfig(), augment=True, rect=True, batch_size=2)
    assert ds.mosaic is False
    ds.set_mosaic(True)
    assert ds.mosaic is False  # rect batches cannot hold a square mosaic
    for i in range(len(ds)):
        img, labels, _, shapes = ds[i]
        assert tuple(img.shape[1:]) == tuple(ds.batch_shapes[i // 2]) and shapes is None
        assert len(labels) <= 1


# unlabeled mosaic: 8 images, each a background and a rectangle (its label, class k) of colours no other image has
PALETTE = (np.array([c for c in np.ndindex(3, 3, 3) if c != (1, 1, 1)])[:16] * 127.5).round().astype(np.int32)
MOSAIC_SIZES = [(64, 96), (96, 64), (80, 80), (72, 128), (128, 72), (100, 90), (96, 96), (60, 120)]
GEOM = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, color_jitter=0.0, blur=0.0, noise=0.0, cutout=0.0)


def make_colour_records(tmp_path) -> list[ImageRecord]:
    recs = []
    for k, (h, w) in enumerate(MOSAIC_SIZES):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = PALETTE[2 * k]
        x1, y1, x2, y2 = w // 5, h // 4, 4 * w // 5, 3 * h // 4
        img[y1:y2, x1:x2] = PALETTE[2 * k + 1]
        p = tmp_path / f"col{k}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        box = np.array([[(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]], np.float32)
        recs.append(ImageRecord(str(p), (h, w), np.array([k], np.int64), box))
    return recs


def nearest_colour(img_chw: torch.Tensor) -> np.ndarray:
    """(H, W) index of the nearest PALETTE colour (len(PALETTE) for the grey 114 padding)."""
    img = img_chw.permute(1, 2, 0).numpy().astype(np.int32)
    colours = np.concatenate([PALETTE, np.full((1, 3), 114)], 0)
    return np.abs(img[:, :, None] - colours[None, None]).sum(-1).argmin(-1)


def share_of_colour(labels: np.ndarray, box: np.ndarray, colour: int) -> float:
    """Share of the pixels inside ``box`` (shrunk by 1 px against edge blending) whose nearest colour is ``colour``."""
    x1, y1 = np.ceil(box[:2] + 1).astype(int)
    x2, y2 = np.floor(box[2:] - 1).astype(int)
    return float((labels[y1:y2, x1:x2] == colour).mean())


def test_unlabeled_mosaic_hidden_labels_follow_the_mosaic_into_the_strong_view(tmp_path):
    recs = make_colour_records(tmp_path)
    aug = dataclasses.replace(GEOM, unlabeled_mosaic=1.0, weak_fliplr=0.5, strong_fliplr=0.5)
    ds = UnlabeledDataset(recs, 96, aug, seed=4)
    checked, most, classes_seen = 0, 0, set()
    for i in range(len(ds)):
        weak, strong, m, _, hidden = ds[i]
        lw, ls = nearest_colour(weak), nearest_colour(strong)
        boxes_w = xywhn2xyxy(hidden[:, 2:].numpy().astype(np.float64), 96, 96)
        boxes_s, keep = transform_and_filter(boxes_w.astype(np.float32), m.numpy().astype(np.float64), (96, 96))
        for box_w, box_s, k in zip(boxes_w[keep], boxes_s, hidden[keep, 1].long().tolist()):
            if min(box_s[2:] - box_s[:2]) < 8 or min(box_w[2:] - box_w[:2]) < 8:
                continue  # too thin to tell from edge blending
            assert share_of_colour(lw, box_w, 2 * k + 1) > 0.9, (i, k, box_w)
            assert share_of_colour(ls, box_s, 2 * k + 1) > 0.9, (i, k, box_s)
            checked += 1
            classes_seen.add(k)
        most = max(most, len(set(hidden[:, 1].long().tolist())))
    assert checked >= len(ds) and len(classes_seen) >= 4 and most >= 3  # the labels of the other images came along


def test_unlabeled_mosaic_weak_view_holds_four_images(tmp_path):
    recs = make_colour_records(tmp_path)
    # the labeled mosaic's affine off: the weak view is the mosaic canvas' central crop, pixels copied exactly
    aug = dataclasses.replace(GEOM, unlabeled_mosaic=1.0, degrees=0.0, translate=0.0, scale=0.0)
    plain = UnlabeledDataset(recs, 96, dataclasses.replace(aug, unlabeled_mosaic=0.0), seed=2)
    ds = UnlabeledDataset(recs, 96, aug, seed=2)
    counts = []
    for i in range(len(ds)):
        for epoch in range(2):
            weak = ds[(i, epoch, False)][0].permute(1, 2, 0).numpy()
            present = {k for k in range(len(recs)) if (weak == PALETTE[2 * k]).all(-1).sum() >= 20}
            counts.append(len(present))  # a mosaic centre near the canvas edge can hide a quadrant (YOLOv5 too)
            weak_plain = plain[(i, epoch, False)][0].permute(1, 2, 0).numpy()
            assert {k for k in range(len(recs)) if (weak_plain == PALETTE[2 * k]).all(-1).any()} == {i}
    assert max(counts) == 4 and np.mean(counts) > 2.5, counts


def test_unlabeled_mosaic_views_never_read_labels(tmp_path):
    recs = make_colour_records(tmp_path)
    rng = np.random.default_rng(0)
    other = [ImageRecord(r.path, r.shape, rng.integers(0, 8, 3), rng.uniform(0.2, 0.6, (3, 4)).astype(np.float32))
             for r in recs]  # same images, different label files
    aug = AugmentConfig(unlabeled_mosaic=1.0, cutout=1.0)
    a, b = UnlabeledDataset(recs, 96, aug, seed=3), UnlabeledDataset(other, 96, aug, seed=3)
    for i in range(len(recs)):
        for epoch in range(2):
            wa, sa, ma, _, ha = a[(i, epoch, False)]
            wb, sb, mb, _, hb = b[(i, epoch, False)]
            assert torch.equal(wa, wb) and torch.equal(sa, sb) and torch.equal(ma, mb)
            assert not torch.equal(ha, hb)


def test_unlabeled_without_mosaic_is_the_weak_and_strong_view_of_the_item_generator(tmp_path):
    """unlabeled_mosaic 0 (the default) keeps the items of before; at 0.5 an item not drawn for mosaic is the same."""
    recs = make_colour_records(tmp_path)
    aug = AugmentConfig()
    ds = UnlabeledDataset(recs, 96, aug, seed=6)
    half = UnlabeledDataset(recs, 96, dataclasses.replace(aug, unlabeled_mosaic=0.5), seed=6)
    same = 0
    for i in range(len(recs)):
        for epoch in range(2):
            rng = np.random.default_rng([6, epoch, i])
            weak, _ = weak_view(load_resized(recs[i].path, 96, fast=True)[0], rng, 96, aug)
            strong, m = strong_view(weak, rng, aug)
            item = ds[(i, epoch, False)]
            assert np.array_equal(item[0].permute(1, 2, 0).numpy(), weak)
            assert np.array_equal(item[1].permute(1, 2, 0).numpy(), strong)
            assert torch.equal(item[2], torch.from_numpy(m.astype(np.float32)))
            other = half[(i, epoch, False)]
            same += batches_equal(item, other)
            if not batches_equal(item, other):
                assert not torch.equal(item[0], other[0])  # a mosaic
    assert 0 < same < 2 * len(recs)
