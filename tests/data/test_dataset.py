"""Image/label validation messages, scan summary, the label cache (reuse, rebuild, file mode) and read-only datasets."""

import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

import effteacher.data.label_cache as label_cache
from effteacher.data.dataset import image_shape, scan_labeled, scan_unlabeled, validate_rows
from effteacher.errors import DatasetError
from effteacher.utils.files import umask


def _img(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _item(root: Path, name: str, label: str | None, **kw) -> Path:
    p = _img(root / "images" / "train" / f"{name}.jpg", **kw)
    if label is not None:
        lbl = root / "labels" / "train" / f"{name}.txt"
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text(label)
    return p


@pytest.fixture()
def broken(tmp_path, monkeypatch):
    """A dataset with one image per problem, made by the test (names say what is wrong)."""
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "d"
    _item(root, "good", "0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n")
    _item(root, "background_missing", None)
    _item(root, "background_empty", "\n")
    _item(root, "wrong_columns", "0 0.5 0.5 0.2\n")
    _item(root, "non_numeric", "0 0.5 abc 0.2 0.2\n")
    _item(root, "class_out_of_range", "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.2 0.2\n")
    _item(root, "negative_class", "-1 0.5 0.5 0.2 0.2\n")
    _item(root, "non_normalized", "0 32 24 10 10\n")
    _item(root, "negative_coords", "0 -0.2 0.5 0.2 0.2\n")
    _item(root, "tiny_excess", "0 0.95 0.5 0.1005 0.2\n")  # right edge 1.00025: clipped, kept
    _item(root, "duplicates", "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    _item(root, "segment", "1 0.1 0.2 0.3 0.2 0.3 0.6\n")
    _item(root, "tiny_image", "0 0.5 0.5 0.2 0.2\n", h=8, w=8)
    corrupt = root / "images" / "train" / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a jpeg at all" * 10)
    full = _img(tmp_path / "tmp.jpg", h=64, w=64).read_bytes()
    (root / "images" / "train" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    return root


def test_validation_messages_and_summary(broken):
    before = {p: p.read_bytes() for p in broken.rglob("*") if p.is_file()}
    res = scan_labeled([broken / "images" / "train"], ["a", "b"], progress=False)
    lbl = broken / "labels" / "train"
    img = broken / "images" / "train"
    msgs = "\n".join(res.messages)
    expected = [
        f"{lbl}/wrong_columns.txt:1: 4 columns, expected 5 (cls cx cy w h)",
        f"{lbl}/non_numeric.txt:1: non-numeric value in '0 0.5 abc 0.2 0.2'",
        f"{lbl}/class_out_of_range.txt:3: class 7 >= nc 2",
        f"{lbl}/negative_class.txt:1: negative class -1",
        f"{lbl}/non_normalized.txt:1: non-normalized coordinates",
        f"{lbl}/negative_coords.txt:1: negative coordinates",
        f"{img}/corrupt.jpg: corrupt image",
        f"{img}/truncated.jpg: truncated JPEG",
        f"{img}/tiny_image.jpg: image size 8x8 < 10 px",
        f"{lbl}/duplicates.txt: 2 duplicate rows removed",
    ]
    for e in expected:
        assert e in msgs, e
    assert "skipped" in msgs and "fix or delete the row" in msgs  # what to do
    assert len(res.messages) == len(expected)
    # one bad row among valid ones: the row is skipped, the image keeps its other boxes
    bad_row = next(m for m in res.messages if "class_out_of_range.txt:3" in m)
    assert "row skipped (the image's other boxes are kept)" in bad_row
    # every row bad: the image is skipped, never turned into a background
    assert "image" in next(m for m in res.messages if "negative_class.txt:1" in m) and \
        "no valid row left" in next(m for m in res.messages if "negative_class.txt:1" in m)
    assert res.n_found == 15 and res.n_corrupt == 8 and res.n_duplicates == 2 and res.n_background == 2
    assert res.n_bad_rows == 6
    assert res.summary() == "15 images, 2 backgrounds, 8 corrupt, 6 bad rows skipped, 2 duplicates removed"
    by = {Path(r.path).stem: r for r in res.records}
    assert sorted(by) == ["background_empty", "background_missing", "class_out_of_range", "duplicates", "good",
                          "segment", "tiny_excess"]
    np.testing.assert_array_equal(by["class_out_of_range"].cls, [0, 1])
    assert by["good"].shape == (48, 64)
    np.testing.assert_array_equal(by["good"].cls, [0, 1])
    np.testing.assert_allclose(by["good"].boxes, [[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.1, 0.1]], atol=1e-6)
    assert by["good"].boxes.dtype == np.float32 and by["good"].cls.dtype == np.int64
    np.testing.assert_array_equal(by["duplicates"].cls, [0, 1])  # first occurrences, file order
    np.testing.assert_allclose(by["tiny_excess"].boxes, [[0.949875, 0.5, 0.10025, 0.2]], atol=1e-6)
    np.testing.assert_allclose(by["segment"].boxes, [[0.2, 0.4, 0.2, 0.4]], atol=1e-6)
    assert by["background_missing"].n == 0 and by["background_empty"].n == 0
    after = {p: p.read_bytes() for p in before}
    assert after == before  # user files never modified


def test_validate_rows_vectorised_known_answers():
    rows = np.array([[0, 0.5, 0.5, 0.2, 0.2], [2.5, 0.5, 0.5, 0.2, 0.2], [1, 0.5, 0.5, 0, 0.1],
                     [1, 1.0005, 0.5, 0.2, 0.2], [np.nan, 0.5, 0.5, 0.1, 0.1]])
    cls, boxes, errors = validate_rows(rows, [f"f.txt:{i}" for i in range(1, 6)], nc=3)
    assert errors == ["f.txt:2: class 2.5 is not an integer", "f.txt:3: zero or negative box size",
                      "f.txt:5: non-finite value"]
    np.testing.assert_allclose(boxes[3], [0.95, 0.5, 0.1, 0.2], atol=1e-6)  # clipped to the image


def test_image_shape_reads_header_and_exif(tmp_path):
    p = _img(tmp_path / "a.png", h=30, w=70)
    assert image_shape(p) == (30, 70)
    from PIL import Image

    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: cv2.imread returns 40x20
    im.save(tmp_path / "r.jpg", exif=exif)
    assert image_shape(tmp_path / "r.jpg") == (40, 20)
    assert cv2.imread(str(tmp_path / "r.jpg")).shape[:2] == (40, 20)


def test_no_usable_labeled_image(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    _item(tmp_path / "d", "bad", "5 0.5 0.5 0.2 0.2\n")
    _item(tmp_path / "d", "bg", None)
    with pytest.raises(DatasetError, match=r"no usable labeled image in .*2 images, 1 backgrounds, 1 corrupt.*"
                                           r"class 5 >= nc 1"):
        scan_labeled([tmp_path / "d" / "images" / "train"], ["a"], progress=False)


def test_cache_reused_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "d"
    for i in range(6):
        _item(root, f"{i}", f"{i % 2} 0.5 0.5 0.2 0.2\n", seed=i)
    src = [root / "images" / "train"]
    r1 = scan_labeled(src, ["a", "b"], progress=False)
    assert r1.n_cached == 0 and r1.cache_path == root / "labels" / "train.effteacher-labeled.npz"
    with np.load(r1.cache_path, allow_pickle=False) as z:  # pickle-free
        assert len(z["paths"]) == 6
    r2 = scan_labeled(src, ["a", "b"], progress=False)
    assert r2.n_cached == 6
    assert [(r.path, r.cls.tolist(), r.boxes.tolist()) for r in r2.records] == \
           [(r.path, r.cls.tolist(), r.boxes.tolist()) for r in r1.records]
    lbl = root / "labels" / "train" / "3.txt"
    lbl.write_text("0 0.25 0.25 0.1 0.1\n0 0.75 0.75 0.1 0.1\n")
    os.utime(lbl, ns=(lbl.stat().st_mtime_ns + 10**9,) * 2)
    r3 = scan_labeled(src, ["a", "b"], progress=False)
    assert r3.n_cached == 5
    assert next(r for r in r3.records if r.path.endswith("3.jpg")).cls.tolist() == [0, 0]
    r4 = scan_labeled(src, ["a", "b", "c"], progress=False)  # other names: everything rescanned
    assert r4.n_cached == 0


def test_read_only_dataset(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EFFTEACHER_CACHE", str(cache))
    root = tmp_path / "d"
    for i in range(3):
        _item(root, f"{i}", "0 0.5 0.5 0.2 0.2\n", seed=i)
    if os.geteuid() == 0:  # root ignores permissions: refuse writes under the dataset like a read-only mount
        real = label_cache.atomic_write

        def guarded(path, writer):
            if str(path).startswith(str(root)):
                raise PermissionError(13, "Read-only file system", str(path))
            return real(path, writer)

        monkeypatch.setattr(label_cache, "atomic_write", guarded)
    for p in [root, *root.rglob("*")]:
        p.chmod(stat.S_IREAD | stat.S_IEXEC if p.is_dir() else stat.S_IREAD)
    try:
        r1 = scan_labeled([root / "images" / "train"], ["a"], progress=False)
        assert len(r1.records) == 3
        assert r1.cache_path is not None and cache in r1.cache_path.parents
        assert not list(root.rglob("*.npz"))
        r2 = scan_labeled([root / "images" / "train"], ["a"], progress=False)
        assert r2.n_cached == 3
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_scan_unlabeled(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    _img(tmp_path / "u" / "a.jpg")
    _img(tmp_path / "u" / "sub" / "b.bmp", h=20, w=30)
    (tmp_path / "u" / "c.jpg").write_bytes(b"garbage")
    res = scan_unlabeled([tmp_path / "u"], progress=False)
    assert [Path(r.path).name for r in res.records] == ["a.jpg", "b.bmp"]
    assert res.records[1].shape == (20, 30) and res.records[1].n == 0
    assert res.n_corrupt == 1 and res.n_background == 0
    with pytest.raises(DatasetError, match="no usable image in unlabeled sources"):
        scan_unlabeled([tmp_path / "u" / "c.jpg"], progress=False)


@pytest.mark.slow
def test_check_and_train_report_a_broken_dataset_and_leave_it_untouched(broken, tmp_path):
    """`check` and a `train` attempt report the corrupt image, bad rows and an out-of-range class, and modify
    no file of the dataset (they may add only the label cache)."""
    import yaml
    from typer.testing import CliRunner

    from effteacher.cli import app

    _item(broken, "val_a", "0 0.5 0.5 0.2 0.4\n")
    (broken / "images" / "val").mkdir()
    (broken / "labels" / "val").mkdir()
    for d in ("images", "labels"):
        src = next((broken / d / "train").glob("val_a.*"))
        src.rename(broken / d / "val" / src.name)
    data = broken / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(broken), "train": "images/train", "val": "images/val",
                                    "names": ["a", "b"]}))
    before = {p: p.read_bytes() for p in broken.rglob("*") if p.is_file()}
    lbl, img = broken / "labels" / "train", broken / "images" / "train"
    reported = [f"{img}/corrupt.jpg: corrupt image", f"{lbl}/wrong_columns.txt:1: 4 columns, expected 5",
                f"{lbl}/class_out_of_range.txt:3: class 7 >= nc 2"]
    runs = tmp_path / "runs"
    commands = [["check", "--data", str(data)],
                ["train", "--data", str(data), "--supervised", "--labeled", "100%", "--epochs", "1", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--project", str(runs), "--name", "broken"]]
    for args in commands:
        res = CliRunner().invoke(app, args)
        assert "Traceback" not in res.output
        out = " ".join(res.output.split())
        for line in reported:
            assert line in out, (args[0], line, res.output)
        assert res.exit_code == (1 if args[0] == "check" else 0), res.output  # check gates CI; train skips them
        after = {p: p.read_bytes() for p in broken.rglob("*") if p.is_file()}
        assert {p: after[p] for p in before} == before, args[0]  # byte for byte
        assert all(p.name.endswith(".npz") and ".effteacher-" in p.name for p in set(after) - set(before)), args[0]
    assert (runs / "broken" / "weights" / "best.pt").is_file()


def test_label_cache_is_readable_like_the_labels(tmp_path, monkeypatch):
    from effteacher.data.dataset import CACHE_VERSION, scan_labeled

    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "d"
    _img(root / "images" / "train" / "a.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    res = scan_labeled([root / "images" / "train"], ["a"], progress=False)
    assert res.cache_path == root / "labels" / "train.effteacher-labeled.npz"
    mode = stat.S_IMODE(res.cache_path.stat().st_mode)
    assert mode == 0o666 & ~umask() and mode & 0o044  # 0644 with the usual umask 022, not 0600
    assert CACHE_VERSION == "2"  # entries now hold skipped rows: older caches are rebuilt
