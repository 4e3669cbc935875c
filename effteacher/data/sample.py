"""Deterministic generators of the bundled datasets: digits on cluttered, textured backgrounds.

``demo`` (3 well-separated digit classes, large high-contrast digits, 400 train images at 128 px) is the
``make run`` demo, sized so pseudo labels pay within minutes on 2 CPU cores; ``sample`` (10 digit classes, 500
train images at 256 px) is the small benchmark; ``sample-large`` (5 confusable
digit classes, 3,000 train images at 128 px, small rotated low-contrast digits, other digits as unlabeled
clutter) is the users' regime of a few hundred labeled images and thousands of unlabeled ones.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from rich.progress import track
from sklearn.datasets import load_digits

from effteacher.errors import DatasetError
from effteacher.utils.console import console, info
from effteacher.utils.files import default_cache_dir, file_lock

SAMPLE_DIR = "sample-v2"
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX)
# Letters that do not look like a digit (no O, I, l, S, Z, B, G, b, g, q ...): unlabeled distractors.
DISTRACTOR_CHARS = "ACEFHKMNPRUVWXYacefhkmnprtuvwxy#%&+=?"


@dataclass(frozen=True)
class SampleConfig:
    """Size of the generated dataset; the defaults are the bundled sample."""

    n_train: int = 500
    n_val: int = 200
    imgsz: int = 256
    seed: int = 0
    background_frac: float = 0.05  # images without any digit
    min_digit: float = 20.0  # digit height range in pixels (log-uniform)
    max_digit: float = 72.0
    max_digits: int = 5
    digits: tuple[int, ...] = tuple(range(10))  # the classes, in order (class i = digit digits[i])
    digit_distractors: bool = False  # paint other digits (not in ``digits``) as unlabeled clutter
    min_contrast: float = 80.0  # luma difference a digit's colour aims for against its background
    max_rotate: float = 15.0  # digits are rotated by up to +- this many degrees
    occlusion: float = 0.3  # probability of one clutter item painted over the digits
    writer_split: bool = False  # handwritten digits: train draws from the first 2/3 of the bank, val from the rest
    folder: str = SAMPLE_DIR  # default folder under $EFFTEACHER_CACHE
    yaml_name: str = "sample.yaml"

    @property
    def names(self) -> list[str]:
        return [str(d) for d in self.digits]


# The bundled datasets by --data name. sample-large's difficulty was fixed before any SSOD run on it.
BUILTIN: dict[str, SampleConfig] = {
    "sample": SampleConfig(),
    # v2: v1 (4 classes, 14-48 px digits at 160 px) left a converged 10%/100% gap of only 0.030 mAP50-95; v2 was
    # made harder (5 confusable classes, smaller, rotated, low-contrast, occluded digits, unseen writers in val)
    # and cheaper (128 px) from that supervised measurement alone, before any SSOD run on either version.
    "sample-large": SampleConfig(n_train=3000, n_val=500, imgsz=128, seed=2, background_frac=0.05, min_digit=9.0,
                                 max_digit=32.0, max_digits=4, digits=(3, 5, 6, 8, 9), digit_distractors=True,
                                 min_contrast=40.0, max_rotate=25.0, occlusion=0.5, writer_split=True,
                                 folder="sample-large-v2", yaml_name="sample-large.yaml"),
    # demo: few distinct classes and large, upright, contrasting digits at 96 px, so a 40-image burn-in makes a
    # teacher that names what it finds; its difficulty was fixed from supervised 10%/100% runs alone.
    "demo": SampleConfig(n_train=400, n_val=100, imgsz=96, seed=3, background_frac=0.05, min_digit=18.0,
                         max_digit=42.0, max_digits=3, digits=(0, 1, 4), min_contrast=100.0, max_rotate=10.0,
                         occlusion=0.1, folder="demo-v1", yaml_name="demo.yaml"),
}


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits: images (1797, 8, 8) float32 0-1, targets (1797,)."""
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def split_bank(bank: tuple[np.ndarray, np.ndarray], split: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The handwritten digits each split draws from: the whole bank for both, or (``split``) the first 2/3 for
    train and the rest for val, so val's handwritten digits are instances train never saw."""
    if not split:
        return {"train": bank, "val": bank}
    cut = len(bank[0]) * 2 // 3
    return {"train": (bank[0][:cut], bank[1][:cut]), "val": (bank[0][cut:], bank[1][cut:])}


def _tight(mask: np.ndarray, thr: int = 96) -> np.ndarray:
    """Crop a uint8 mask to the bounding box of its pixels above ``thr``."""
    ys, xs = np.nonzero(mask > thr)
    if len(ys) == 0:
        return mask
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _text_mask(rng: np.random.Generator, text: str) -> np.ndarray:
    """A glyph drawn with a random Hershey font, thickness and italic flag: uint8 mask, tight."""
    font = int(FONTS[rng.integers(len(FONTS))]) | (cv2.FONT_ITALIC if rng.random() < 0.25 else 0)
    thick = int(rng.integers(1, 6))
    (tw, th), base = cv2.getTextSize(text, font, 2.0, thick)
    canvas = np.zeros((th + base + 20, tw + 20), np.uint8)
    cv2.putText(canvas, text, (10, th + 10), font, 2.0, 255, thick, cv2.LINE_AA)
    return _tight(canvas)


def _digit_mask(rng: np.random.Generator, digit: int, bank: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Half handwritten (sklearn digits upscaled and thresholded), half Hershey-font digits."""
    if rng.random() < 0.5:
        imgs, targets = bank
        idx = np.flatnonzero(targets == digit)
        im = imgs[idx[rng.integers(len(idx))]]
        up = cv2.resize(im, (48, 48), interpolation=cv2.INTER_CUBIC)
        thr = rng.uniform(0.3, 0.55)
        mask = cv2.GaussianBlur(((up > thr) * 255).astype(np.uint8), (3, 3), 0)
        return _tight(mask)
    return _text_mask(rng, str(digit))


def _warp(rng: np.random.Generator, mask: np.ndarray, height: float, rotate: float = 15.0) -> np.ndarray:
    """Scale a mask to ``height`` px (aspect jitter), rotate (+-``rotate`` deg) and shear (+-0.25); tight crop."""
    h, w = mask.shape
    s = height / max(h, 1)
    sx, sy = s * rng.uniform(0.75, 1.25), s
    a = np.deg2rad(rng.uniform(-rotate, rotate))
    sh = rng.uniform(-0.25, 0.25)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lin = rot @ np.array([[1.0, sh], [0.0, 1.0]]) @ np.diag([sx, sy])
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) @ lin.T
    lo, hi = corners.min(0), corners.max(0)
    M = np.concatenate([lin, (-lo + 2)[:, None]], 1)
    size = (int(np.ceil(hi[0] - lo[0])) + 4, int(np.ceil(hi[1] - lo[1])) + 4)
    return _tight(cv2.warpAffine(mask, M, size, flags=cv2.INTER_LINEAR))


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Smooth colour field + gradient + random rectangles + fine noise: (s, s, 3) uint8 BGR."""
    k = int(rng.integers(2, 9))
    img = cv2.resize(rng.uniform(0, 255, (k, k, 3)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-1, 1, s, dtype=np.float32)
    gx, gy = rng.uniform(-60, 60, 2)
    img += (gx * ramp[None, :] + gy * ramp[:, None])[..., None]
    for _ in range(int(rng.integers(1, 7))):
        x1, y1 = rng.integers(0, s, 2)
        x2, y2 = x1 + rng.integers(8, s // 2), y1 + rng.integers(8, s // 2)
        a = rng.uniform(0.2, 0.6)
        roi = img[y1:y2, x1:x2]
        roi *= 1 - a
        roi += a * rng.uniform(0, 255, 3).astype(np.float32)
    tex = cv2.resize(rng.standard_normal((s // 4, s // 4, 1), dtype=np.float32), (s, s),
                     interpolation=cv2.INTER_LINEAR)
    img += rng.uniform(5, 20) * tex.reshape(s, s, 1)
    img += rng.uniform(2, 10) * rng.standard_normal((s, s, 1), dtype=np.float32)
    return np.clip(img, 0, 255)


def _paint(img: np.ndarray, mask: np.ndarray, x: int, y: int, color: np.ndarray, alpha: float) -> None:
    """Alpha-blend a solid colour through ``mask`` at (x, y), in place (mask must fit)."""
    h, w = mask.shape
    a = (mask.astype(np.float32) * (alpha / 255.0))[..., None]
    roi = img[y:y + h, x:x + w]
    roi *= 1 - a
    roi += a * color


def _contrasting(rng: np.random.Generator, bg: np.ndarray, least: float = 80.0) -> np.ndarray:
    """A random BGR colour whose luma differs from ``bg``'s by at least ``least`` (usually, 24 tries)."""
    luma = np.array([0.114, 0.587, 0.299], np.float32)
    best, best_d = None, -1.0
    for _ in range(24):
        c = rng.uniform(0, 255, 3).astype(np.float32)
        d = abs(float((c - bg) @ luma))
        if d >= least:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _distractors(rng: np.random.Generator, img: np.ndarray, n: int, chars: str = DISTRACTOR_CHARS) -> None:
    """Unlabeled clutter: letters (from ``chars``), lines, ellipses and blobs in random colours, in place."""
    s = img.shape[0]
    lo, hi = np.log(14 * s / 256), np.log(70 * s / 256)
    for _ in range(n):
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        if kind == 0:
            m = _warp(rng, _text_mask(rng, str(chars[rng.integers(len(chars))])), float(np.exp(rng.uniform(lo, hi))))
            h, w = m.shape
            if h < s and w < s:
                x, y = int(rng.integers(0, s - w)), int(rng.integers(0, s - h))
                _paint(img, m, x, y, np.array(color, np.float32), rng.uniform(0.7, 1.0))
        elif kind == 1:
            p1, p2 = rng.integers(0, s, 2), rng.integers(0, s, 2)
            cv2.line(img, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), color, int(rng.integers(1, 5)),
                     cv2.LINE_AA)
        elif kind == 2:
            c, ax = rng.integers(0, s, 2), rng.integers(4, s // 5, 2)
            cv2.ellipse(img, (int(c[0]), int(c[1])), (int(ax[0]), int(ax[1])), float(rng.uniform(0, 180)), 0, 360,
                        color, int(rng.choice([-1, 1, 2, 3])), cv2.LINE_AA)
        else:
            c = rng.integers(0, s, 2)
            pts = (c + rng.normal(0, rng.uniform(5, 25), (int(rng.integers(3, 8)), 2))).astype(np.int32)
            cv2.fillPoly(img, [cv2.convexHull(pts)], color, cv2.LINE_AA)


def render_image(rng: np.random.Generator, cfg: SampleConfig, bank: tuple[np.ndarray, np.ndarray],
                 background: bool) -> tuple[np.ndarray, np.ndarray]:
    """One image: (img (S, S, 3) uint8 BGR, labels (n, 5) [cls, cx, cy, w, h] norm). Boxes are the tight ink box."""
    s = cfg.imgsz
    img = _background(rng, s)
    chars = DISTRACTOR_CHARS
    if cfg.digit_distractors:
        chars += "".join(str(d) for d in range(10) if d not in cfg.digits)
    _distractors(rng, img, int(rng.integers(1, 5)), chars)
    boxes: list[tuple[int, int, int, int]] = []
    labels = []
    n = 0 if background else int(rng.integers(1, cfg.max_digits + 1))
    for _ in range(n):
        k = int(rng.integers(len(cfg.digits)))
        digit = cfg.digits[k]
        height = min(float(np.exp(rng.uniform(np.log(cfg.min_digit), np.log(cfg.max_digit)))), 0.45 * s)
        m = _warp(rng, _digit_mask(rng, digit, bank), height, cfg.max_rotate)
        h, w = m.shape
        if h >= s - 2 or w >= s - 2:
            continue
        for _try in range(20):
            x, y = int(rng.integers(1, s - w)), int(rng.integers(1, s - h))
            inter = [max(0, min(x + w, bx + bw) - max(x, bx)) * max(0, min(y + h, by + bh) - max(y, by))
                     / min(w * h, bw * bh) for bx, by, bw, bh in boxes]
            if not inter or max(inter) < 0.1:
                break
        else:
            continue
        bg = img[y:y + h, x:x + w].reshape(-1, 3).mean(0)
        _paint(img, m, x, y, _contrasting(rng, bg, cfg.min_contrast), rng.uniform(0.8, 1.0))
        boxes.append((x, y, w, h))
        labels.append([k, (x + w / 2) / s, (y + h / 2) / s, w / s, h / s])
    if rng.random() < cfg.occlusion:  # a little clutter over the digits (partial occlusion)
        _distractors(rng, img, 1, chars)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(labels, np.float64).reshape(-1, 5)


def generate(root: Path, cfg: SampleConfig = SampleConfig(), progress: bool = True) -> Path:
    """Write ``images/{train,val}``, ``labels/{train,val}`` and the dataset YAML under ``root``; return the YAML."""
    root = Path(root)
    banks = split_bank(_sklearn_digits(), cfg.writer_split)
    jobs = [("train", i) for i in range(cfg.n_train)] + [("val", i) for i in range(cfg.n_val)]
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)

    def one(job: tuple[str, int]) -> None:
        split, i = job
        rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, i])
        background = rng.random() < cfg.background_frac
        quality = int(rng.integers(55, 96))
        img, lab = render_image(rng, cfg, banks[split], background)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        (root / "images" / split / f"{i:06d}.jpg").write_bytes(buf.tobytes())
        text = "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in lab)
        (root / "labels" / split / f"{i:06d}.txt").write_text(text)

    if progress:
        for job in track(jobs, description=f"Generating sample dataset in {root}", console=console(stderr=True),
                         transient=True):
            one(job)
    else:
        for job in jobs:
            one(job)
    data = {"path": ".", "train": "images/train", "val": "images/val", "names": dict(enumerate(cfg.names))}
    yaml_path = root / cfg.yaml_name
    yaml_path.write_text("# effteacher sample dataset: generated (deterministic, no download) by "
                         "effteacher.data.sample\n" + yaml.safe_dump(data, sort_keys=False))
    return yaml_path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_sample(root: str | Path | None = None, cfg: SampleConfig = SampleConfig()) -> Path:
    """Generate a bundled dataset once (into ``$EFFTEACHER_CACHE/<cfg.folder>`` by default); return its YAML.

    Generation goes to a hidden partial folder renamed into place with a completion marker, so a
    killed generation is redone and concurrent processes never see half a dataset.
    """
    root = Path(root).expanduser() if root is not None else default_cache_dir() / cfg.folder
    params = json.dumps(asdict(cfg), sort_keys=True)
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == params:
        return root / cfg.yaml_name
    with file_lock(root.parent / f".{root.name}.lock"):  # one generator at a time; the others then find it done
        if marker.is_file() and marker.read_text() == params:
            return root / cfg.yaml_name
        return _generate_into(root, cfg, params)


def _generate_into(root: Path, cfg: SampleConfig, params: str) -> Path:
    """Generate ``cfg`` into ``root`` via a partial folder renamed into place (the caller holds the lock)."""
    marker = root / ".complete"
    if root.exists():
        if marker.is_file():  # ours, generated with other parameters
            shutil.rmtree(root)
        elif root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        else:
            raise DatasetError(f"{root} exists but is not a complete effteacher sample dataset; delete it or use "
                               "another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in root.parent.glob(f".{root.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    generate(tmp, cfg)
    (tmp / ".complete").write_text(params)
    try:
        os.rename(tmp, root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (marker.is_file() and marker.read_text() == params):
            raise

    info(f"Dataset {cfg.folder}: {cfg.n_train} train + {cfg.n_val} val images at {cfg.imgsz} px generated in "
         f"{time.perf_counter() - t0:.1f}s -> {root}")
    return root / cfg.yaml_name
