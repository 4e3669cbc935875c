"""Labeled/unlabeled split: parsing, determinism, stratification, manifest files, the split/check CLI and
`--labeled` lists (training from a list, a layout where only listed images have labels)."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.data.records import ImageRecord
from effteacher.data.split import dataset_hash, load_split, make_split, parse_labeled, write_split
from effteacher.errors import DatasetError


def _records(n: int = 400, nc: int = 5, seed: int = 0) -> list[ImageRecord]:
    """Synthetic records: class c appears with probability ~ 0.6 / (c + 1); class nc-1 is rare (3 images)."""
    rng = np.random.default_rng(seed)
    out = []
    rare = set(rng.choice(n, 3, replace=False).tolist())
    for i in range(n):
        cls = [c for c in range(nc - 1) for _ in range(int(rng.random() < 0.6 / (c + 1)) * int(rng.integers(1, 4)))]
        if i in rare:
            cls.append(nc - 1)
        b = rng.uniform(0.2, 0.4, (len(cls), 4)).astype(np.float32)
        out.append(ImageRecord(f"/data/images/train/{i:04d}.jpg", (64, 64), np.array(cls, np.int64), b))
    return out


def test_parse_labeled():
    assert parse_labeled("10%", 500) == 50
    assert parse_labeled("0.1", 500) == 50
    assert parse_labeled("200", 500) == 200
    assert parse_labeled("1%", 20) == 1  # at least one image
    assert parse_labeled("100%", 7) == 7 and parse_labeled("1.0", 7) == 7
    for bad, msg in [("0%", "above 0%"), ("150%", "at most 100%"), ("0", "no labeled image"),
                     ("501", "more than the 500"), ("ten", "not understood"), ("1.5", "at most 100%"),
                     ("-3", "not understood|above 0%")]:
        with pytest.raises(DatasetError, match=msg):
            parse_labeled(bad, 500)


def test_split_deterministic_and_without_replacement():
    recs = _records()
    a, b, c = make_split(recs, "10%", 0), make_split(recs, "10%", 0), make_split(recs, "10%", 1)
    assert a.labeled == b.labeled and a.labeled != c.labeled
    assert len(a.labeled) == 40 and len(set(a.labeled)) == 40
    assert sorted(a.labeled + a.unlabeled) == list(range(400))


def test_split_stratified():
    recs = _records()
    nc = 5
    for seed in range(3):
        s = make_split(recs, "10%", seed, nc=nc)
        lab, tot = np.array(s.class_counts).T
        assert tot.tolist() == np.bincount(np.concatenate([r.cls for r in recs]), minlength=nc).tolist()
        assert lab[nc - 1] >= 1  # the rare class (3 images) still gets a labeled image
        share = lab[:-1] / tot[:-1]
        assert np.all(np.abs(share - 0.1) < 0.025), share  # every common class about its 10%
        # a plain random sample is much less even across classes on this data
    assert abs(sum(s.class_counts[c][0] for c in range(nc)) / sum(t for _, t in s.class_counts) - 0.1) < 0.02


def test_write_load_split_byte_identical(tmp_path):
    recs = _records()
    for d in ("a", "b"):
        write_split(make_split(recs, "0.25", 3), recs, tmp_path / d, names=list("vwxyz"))
    for f in ("labeled.txt", "unlabeled.txt", "split.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    lines = (tmp_path / "a" / "labeled.txt").read_text().splitlines()
    assert len(lines) == 100 and lines == sorted(lines) and lines[0].startswith("/data/images/train/")
    m = json.loads((tmp_path / "a" / "split.json").read_text())
    assert m["seed"] == 3 and m["labeled"] == "0.25" and m["n_images"] == 400 and m["n_labeled"] == 100
    assert m["classes"][0]["name"] == "v" and m["dataset_hash"] == dataset_hash(recs)
    back = load_split(tmp_path / "a", recs)
    s = make_split(recs, "0.25", 3)
    assert back.labeled == s.labeled and back.unlabeled == s.unlabeled and back.class_counts == s.class_counts
    # the dataset moved: still matched by relative path
    moved = [ImageRecord(r.path.replace("/data/", "/mnt/new/"), r.shape, r.cls, r.boxes) for r in recs]
    assert load_split(tmp_path / "a", moved).labeled == s.labeled
    changed = list(recs)
    changed[5] = ImageRecord(recs[5].path, recs[5].shape, recs[5].cls[:0], recs[5].boxes[:0])
    with pytest.raises(DatasetError, match="dataset changed since this split"):
        load_split(tmp_path / "a", changed)
    with pytest.raises(DatasetError, match="no readable split"):
        load_split(tmp_path / "nothing", recs)


def _dataset(tmp_path: Path, n: int = 12) -> Path:
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    for split, k in (("train", n), ("val", 3)):
        for i in range(k):
            p = root / "images" / split / f"{i}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
            lbl = root / "labels" / split / f"{i}.txt"
            lbl.parent.mkdir(parents=True, exist_ok=True)
            lbl.write_text(f"{i % 3} 0.5 0.5 0.2 0.3\n")
    (root / "labels" / "train" / "0.txt").write_text("9 0.5 0.5 0.2 0.3\n")  # class 9 >= nc 3
    y = root / "d.yaml"
    y.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                 "names": ["a", "b", "c"]}))
    return y


def test_cli_split_and_check(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    y = _dataset(tmp_path)
    runner = CliRunner()
    args = ["split", "--data", str(y), "--labeled", "25%", "--seed", "0", "--project", str(tmp_path / "runs")]
    r1 = runner.invoke(app, args)
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0, r2.output
    a, b = tmp_path / "runs" / "exp", tmp_path / "runs" / "exp2"
    for f in ("labeled.txt", "unlabeled.txt", "split.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert len((a / "labeled.txt").read_text().splitlines()) == 3  # 25% of the 11 usable images
    assert "split written to" in r1.output and str(a) in r1.output.replace("\n", "")

    r = runner.invoke(app, ["check", "--data", str(y)])
    assert r.exit_code == 1, r.output  # problems found: CI can gate on it
    out = r.output
    assert "class 9 >= nc 3" in out and "0.txt:1" in out
    assert "train: 12 images, 0 backgrounds, 1 corrupt, 1 bad rows skipped, 0 duplicates removed" in out
    assert "1 problems (listed above)" in out
    assert "Instances per class" in out

    r = runner.invoke(app, ["split", "--data", str(y), "--labeled", "0%"])
    assert r.exit_code == 1 and "above 0%" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["check", "--data", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 1 and "not found" in r.output


TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]


def _cli(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _text(res) -> str:
    """The command's output on one line (rich wraps long lines)."""
    return " ".join(res.output.split())


@pytest.mark.slow
def test_training_from_a_labeled_list(tiny_data_copy, tmp_path):
    ds = tiny_data_copy.parent
    train = sorted((ds / "images" / "train").glob("*.jpg"))
    lst = tmp_path / "lists" / "labeled.txt"
    lst.parent.mkdir()
    # absolute, relative to the dataset root, a duplicate, a comment and a blank line
    lst.write_text(f"# chosen by effteacher rank\n{train[0]}\n\nimages/train/{train[1].name}\n{train[2]}\n{train[0]}\n")
    inside = ds / "images" / "mine.txt"
    inside.write_text(f"train/{train[3].name}\n")  # relative to the list's own folder
    res = _cli(["train", "--data", str(tiny_data_copy), "--labeled", str(lst), "--supervised", "--epochs", "1", *TINY,
                "--project", str(tmp_path / "runs"), "--name", "fromlist"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "fromlist"
    assert (run / "split" / "labeled.txt").read_text().splitlines() == [str(p) for p in train[:3]]
    m = json.loads((run / "split" / "split.json").read_text())
    assert m["labeled_list"]["path"] == str(lst.resolve()) and len(m["labeled_list"]["sha256"]) == 64
    assert m["n_labeled"] == 3 and m["n_unlabeled"] == len(train) - 3
    assert (run / "weights" / "best.pt").is_file()
    res = _cli(["split", "--data", str(tiny_data_copy), "--labeled", str(inside), "--project", str(tmp_path / "sp")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sp" / "exp" / "labeled.txt").read_text().splitlines() == [str(train[3])]
    # one clear error per bad line, naming the list and the line
    for text, msg in [(f"{train[0]}\nimages/train/nope.jpg\n", "labeled.txt:2: images/train/nope.jpg not found"),
                      (f"{sorted((ds / 'images' / 'val').glob('*.jpg'))[0]}\n", "labeled.txt:1:"),
                      ("# nothing\n", "lists no image")]:
        lst.write_text(text)
        res = _cli(["split", "--data", str(tiny_data_copy), "--labeled", str(lst), "--project", str(tmp_path / "sp")])
        assert res.exit_code == 1 and msg in _text(res), res.output
        assert "Traceback" not in res.output
    res = _cli(["split", "--data", str(tiny_data_copy), "--labeled", str(tmp_path / "missing.txt")])
    assert res.exit_code == 1 and "file not found" in _text(res)


def test_list_layout_where_only_listed_images_have_labels(tiny_data, tmp_path):
    """Every image in train, label files only for the listed ones: the rest is U, with no hidden labels to report on."""
    from effteacher.config import TrainConfig, replace
    from effteacher.train.train_data import load_train_data

    src = tiny_data.parent
    ds = tmp_path / "ds"
    shutil.copytree(src / "images", ds / "images")
    shutil.copytree(src / "labels" / "val", ds / "labels" / "val")
    train = sorted((ds / "images" / "train").glob("*.jpg"))
    (ds / "labels" / "train").mkdir()
    for f in train[:6]:
        shutil.copy(src / "labels" / "train" / f"{f.stem}.txt", ds / "labels" / "train")
    y = ds / "d.yaml"
    y.write_text(yaml.safe_dump({**yaml.safe_load(tiny_data.read_text()), "path": "."}))
    lst = ds / "labeled.txt"
    lst.write_text("".join(f"images/train/{f.name}\n" for f in train[:6]))
    from effteacher.utils.dist import DistContext

    data = load_train_data(replace(TrainConfig(), data=str(y), labeled=str(lst)), tmp_path / "run", False,
                           DistContext.from_env("cpu"))
    assert [r.path for r in data.labeled] == [str(f) for f in train[:6]]
    assert len(data.unlabeled) == len(train) - 6 and all(r.n == 0 for r in data.unlabeled)
    assert not data.hidden_labels_known
    assert json.loads((tmp_path / "run" / "split" / "split.json").read_text())["n_labeled"] == 6
