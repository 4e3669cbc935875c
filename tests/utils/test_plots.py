"""Every plot function on hand-made inputs: results, labels, image batches, pseudo boxes, PR curve, confusion."""


import cv2
import numpy as np
import torch

from effteacher.train.results_csv import CSVLogger
from effteacher.utils.plots import (
    plot_confusion_matrix,
    plot_images,
    plot_labels,
    plot_pr_curve,
    plot_pseudo_batch,
    plot_results,
)

COLS = ["epoch", "time", "train/box_loss", "metrics/mAP50", "lr"]
NAMES = ["cat", "dog", "bird"]


def _readable(path) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 0
    img = cv2.imread(str(path))
    assert img is not None and img.size > 0
    return img


# ----------------------------------------------------------------------------------------- plots
def test_plot_results(tmp_path):
    p = tmp_path / "results.csv"
    log = CSVLogger(p, COLS)
    for e in range(1, 4):
        log.log({"epoch": e, "time": e, "train/box_loss": 1.0 / e, "metrics/mAP50": 0.1 * e, "lr": 0.01})
    out = plot_results(p)
    assert out == tmp_path / "results.png"
    _readable(out)
    empty = tmp_path / "e" / "results.csv"
    CSVLogger(empty, COLS).truncate(0)  # header only
    _readable(plot_results(empty))
    _readable(plot_results(tmp_path / "missing" / "results.csv"))


def test_plot_labels(tmp_path):
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 3, 50)
    boxes = rng.uniform(0.05, 0.5, (50, 4)).astype(np.float32)
    _readable(plot_labels(cls, boxes, NAMES, tmp_path / "labels.jpg"))
    _readable(plot_labels(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), NAMES, tmp_path / "l0.jpg"))
    _readable(plot_labels(None, None, [], tmp_path / "l1.jpg"))


def test_plot_images_draws_boxes(tmp_path):
    imgs = torch.full((3, 3, 64, 96), 128, dtype=torch.uint8)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5], [2, 2, 0.3, 0.3, 0.2, 0.4]])
    img = _readable(plot_images(imgs, targets, ["a/x.jpg", "b/y.jpg", "c/z.jpg"], NAMES, tmp_path / "tb0.jpg"))
    assert img.shape[1] > 2 * 96  # a 2x2 mosaic
    plain = _readable(plot_images(imgs, torch.zeros(0, 6), None, NAMES, tmp_path / "tb_empty.jpg"))
    assert np.abs(img.astype(int) - plain.astype(int)).sum() > 0  # boxes/labels were drawn
    with_conf = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.3, 0.9], [1, 1, 0.5, 0.5, 0.3, 0.3, 0.1]])
    _readable(plot_images(imgs.numpy(), with_conf, None, NAMES, tmp_path / "pred.jpg"))
    _readable(plot_images(torch.zeros(0, 3, 64, 64, dtype=torch.uint8), None, [], NAMES, tmp_path / "none.jpg"))


def test_plot_images_large_batch_is_bounded(tmp_path):
    imgs = torch.zeros(16, 3, 640, 640, dtype=torch.uint8)
    img = _readable(plot_images(imgs, None, None, NAMES, tmp_path / "big.jpg"))
    assert max(img.shape[:2]) <= 1920 + 16


def test_plot_pseudo_batch_two_styles(tmp_path):
    weak = torch.full((2, 3, 96, 96), 200, dtype=torch.uint8)
    strong = torch.full((2, 3, 96, 96), 200, dtype=torch.uint8)
    dets = [torch.tensor([[10.0, 10, 50, 50, 0.9, 0, 0.95], [60, 60, 90, 90, 0.3, 1, 0.5]]), torch.zeros(0, 7)]
    targets = torch.tensor([[0, 0, 0.3, 0.3, 0.4, 0.4, 1, 1, -1], [0, 1, 0.8, 0.8, 0.3, 0.3, 0, 0, 0.5]])
    img = _readable(plot_pseudo_batch(weak, strong, dets, targets, NAMES, tmp_path / "pb0.jpg", 0.6))
    assert img.shape[0] > 96 and img.shape[1] > 2 * 96
    tau = np.array([0.5, 0.2, 0.5])  # per-class tau2: the second box becomes reliable
    _readable(plot_pseudo_batch(weak, strong, dets, targets, NAMES, tmp_path / "pb1.jpg", tau))
    _readable(plot_pseudo_batch(weak, strong, [torch.zeros(0, 7)] * 2, torch.zeros(0, 9), NAMES,
                                tmp_path / "pb_empty.jpg", 0.6))
    _readable(plot_pseudo_batch(None, None, [], None, NAMES, tmp_path / "pb_none.jpg", 0.6))


def test_dashed_and_solid_differ(tmp_path):
    """The same box drawn reliable vs uncertain gives different pixels (two visible styles)."""
    weak = torch.full((1, 3, 96, 96), 255, dtype=torch.uint8)
    box = [[20.0, 20, 70, 70, 0.5, 0, 0.9]]
    a = cv2.imread(str(plot_pseudo_batch(weak, weak, [torch.tensor(box)], None, NAMES, tmp_path / "a.png", 0.4)))
    b = cv2.imread(str(plot_pseudo_batch(weak, weak, [torch.tensor(box)], None, NAMES, tmp_path / "b.png", 0.6)))
    dark_a = (a < 200).any(-1).sum()
    dark_b = (b < 200).any(-1).sum()
    assert dark_a > dark_b > 0  # solid+label covers more pixels than dashed thin


def test_plot_pr_curve(tmp_path):
    px = np.linspace(0, 1, 1000)
    py = np.stack([1 - px, np.ones_like(px) * 0.5, np.sqrt(1 - px)])
    _readable(plot_pr_curve(px, py, np.array([0.5, 0.5, 0.6]), NAMES, tmp_path / "PR_curve.png"))
    _readable(plot_pr_curve(px, np.zeros((0, 1000)), np.zeros(0), NAMES, tmp_path / "PR_empty.png"))
    many = np.tile(py, (10, 1))
    _readable(plot_pr_curve(px, many, np.full(30, 0.4), [str(i) for i in range(30)], tmp_path / "PR_many.png"))


def test_plot_confusion_matrix(tmp_path):
    m = np.array([[5, 1, 0, 1], [0, 3, 0, 0], [0, 0, 2, 2], [1, 0, 1, 0]], dtype=np.float64)
    _readable(plot_confusion_matrix(m, NAMES, tmp_path / "confusion_matrix.png"))
    _readable(plot_confusion_matrix(m, NAMES, tmp_path / "cm_counts.png", normalize=False))
    _readable(plot_confusion_matrix(np.zeros((0, 0)), [], tmp_path / "cm_empty.png"))
    _readable(plot_confusion_matrix(np.zeros((4, 4)), NAMES, tmp_path / "cm_zeros.png"))
