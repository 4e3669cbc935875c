"""Dataset YAML forms (dir, txt, list, COCO JSON, relative/absolute paths, names, nc) and their errors."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from effteacher.data.dataset import scan_labeled
from effteacher.data.spec import img2label_path, load_spec, resolve_images
from effteacher.errors import DatasetError


def _img(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _yolo(root: Path, split: str, n: int, ext: str = ".jpg") -> list[Path]:
    out = []
    for i in range(n):
        p = _img(root / "images" / split / f"{i}{ext}", seed=i)
        lbl = root / "labels" / split / f"{i}.txt"
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text(f"{i % 2} 0.5 0.5 0.25 0.5\n")
        out.append(p)
    return out


def _yaml(path: Path, d: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d))
    return path


def test_dir_form_relative_path_and_names_dict(tmp_path):
    _yolo(tmp_path / "datasets" / "d", "train", 3)
    _yolo(tmp_path / "datasets" / "d", "val", 2)
    y = _yaml(tmp_path / "cfg" / "d.yaml", {"path": "../datasets/d", "train": "images/train", "val": "images/val",
                                           "names": {0: "cat", 1: "dog"}})
    spec = load_spec(y)
    assert spec.root == (tmp_path / "datasets" / "d").resolve()
    assert spec.train == [spec.root / "images" / "train"]
    assert spec.names == ["cat", "dog"] and spec.nc == 2 and spec.test == [] and spec.unlabeled == []
    assert [p.name for p in resolve_images(spec.train)] == ["0.jpg", "1.jpg", "2.jpg"]


def test_txt_list_relative_lines_absolute_path_and_names_list(tmp_path):
    root = tmp_path / "d"
    imgs = _yolo(root, "train", 3)
    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text(f"../images/train/0.jpg\n\n{imgs[1]}\n../images/train/0.jpg\n")
    y = _yaml(tmp_path / "y" / "d.yaml", {"path": str(root), "train": "lists/train.txt", "val": "images/train",
                                          "names": ["a", "b"]})
    spec = load_spec(y)
    got = resolve_images(spec.train)
    assert got == sorted([imgs[0].resolve(), imgs[1].resolve()])  # relative to the list's folder, deduplicated
    assert spec.names == ["a", "b"]


def test_list_of_sources_nc_only_and_unlabeled(tmp_path):
    root = tmp_path / "d"
    _yolo(root, "a", 2)
    _yolo(root, "b", 2, ext=".PNG")
    _img(root / "extra" / "u.webp")
    (root / "extra" / "notes.md").write_text("not an image")
    y = _yaml(root / "d.yaml", {"train": ["images/a", "images/b"], "val": "images/a", "unlabeled": ["extra/"],
                                "nc": 3})
    spec = load_spec(y)
    assert spec.root == root.resolve() and spec.names == ["0", "1", "2"]
    assert len(resolve_images(spec.train)) == 4  # .PNG counts: extensions are case-insensitive
    assert [p.name for p in resolve_images(spec.unlabeled)] == ["u.webp"]


def test_img2label_path_replaces_last_images():
    p = img2label_path(Path("/x/images/data/images/train/a.b.JPG"))
    assert p == Path("/x/images/data/labels/train/a.b.txt")


def test_unknown_key_suggests(tmp_path):
    y = _yaml(tmp_path / "d.yaml", {"trian": "images", "val": "images", "names": ["a"]})
    with pytest.raises(DatasetError, match=r"d.yaml: unknown key 'trian'. Did you mean 'train'\?"):
        load_spec(y)


def test_missing_yaml_folder_train_val(tmp_path):
    with pytest.raises(DatasetError, match="dataset YAML 'nope.yaml' not found"):
        load_spec("nope.yaml")
    y = _yaml(tmp_path / "d.yaml", {"path": "missing", "train": "images", "val": "images", "names": ["a"]})
    with pytest.raises(DatasetError, match="dataset folder .*missing does not exist"):
        load_spec(y)
    _yolo(tmp_path / "d", "train", 1)
    y = _yaml(tmp_path / "e.yaml", {"path": "d", "train": "images/train", "names": ["a"]})
    with pytest.raises(DatasetError, match="no 'val' entry"):
        load_spec(y)
    y = _yaml(tmp_path / "f.yaml", {"path": "d", "train": "images/nope", "val": "images/train", "names": ["a"]})
    with pytest.raises(DatasetError, match="train source .*images/nope does not exist"):
        load_spec(y)
    (tmp_path / "d" / "empty").mkdir()
    y = _yaml(tmp_path / "g.yaml", {"path": "d", "train": "empty", "val": "images/train", "names": ["a"]})
    with pytest.raises(DatasetError, match="holds no image"):
        load_spec(y)
    y = _yaml(tmp_path / "h.yaml", {"path": "d", "train": "images/train", "val": "images/train"})
    with pytest.raises(DatasetError, match="no 'names'"):
        load_spec(y)
    y = _yaml(tmp_path / "i.yaml", {"path": "d", "train": "images/train", "val": "images/train",
                                    "names": ["a", "b"], "nc": 3})
    with pytest.raises(DatasetError, match="nc 3 != 2 names"):
        load_spec(y)


def test_coco_json(tmp_path):
    root = tmp_path / "coco"
    _img(root / "images" / "a.jpg", h=40, w=80)
    _img(root / "images" / "b.jpg", h=50, w=50)
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 80},
                   {"id": 2, "file_name": "b.jpg", "height": 50, "width": 50}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 18, "bbox": [20, 10, 40, 20], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 8, 4], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [0, 0, 80, 40], "iscrowd": 1},
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "train.json").write_text(json.dumps(ann))
    y = _yaml(root / "coco.yaml", {"train": "annotations/train.json", "val": "annotations/train.json"})
    spec = load_spec(y)
    assert spec.names == ["car", "dog"]  # from the json, sorted by category id
    res = scan_labeled(spec.train, spec.names, progress=False)
    assert res.n_found == 2 and res.n_background == 1 and res.messages == []
    a = next(r for r in res.records if r.path.endswith("a.jpg"))
    assert a.shape == (40, 80)
    np.testing.assert_array_equal(a.cls, [1, 0])  # dog -> 1, car -> 0; the crowd box is skipped
    np.testing.assert_allclose(a.boxes, [[0.5, 0.5, 0.5, 0.5], [0.05, 0.05, 0.1, 0.1]], atol=1e-6)
    # YAML names in another order map categories by name
    y2 = _yaml(root / "coco2.yaml", {"train": "annotations/train.json", "val": "annotations/train.json",
                                     "names": ["dog", "car"]})
    res2 = scan_labeled(load_spec(y2).train, ["dog", "car"], progress=False, cache_dir=tmp_path / "c")
    a2 = next(r for r in res2.records if r.path.endswith("a.jpg"))
    np.testing.assert_array_equal(a2.cls, [0, 1])


def test_coco_json_bad_size_and_missing_image(tmp_path):
    root = tmp_path / "coco"
    _img(root / "a.jpg", h=40, w=80)
    _img(root / "c.jpg", h=40, w=80)
    ann = {"images": [{"id": 1, "file_name": "a.jpg", "height": 41, "width": 80},
                      {"id": 2, "file_name": "b.jpg", "height": 40, "width": 80},
                      {"id": 3, "file_name": "c.jpg", "height": 40, "width": 80}],
           "categories": [{"id": 1, "name": "x"}],
           "annotations": [{"id": 5, "image_id": 3, "category_id": 1, "bbox": [0, 0, 8, 4]},
                           {"id": 6, "image_id": 2, "category_id": 1, "bbox": [0, 0, 8, 4]}]}
    js = root / "ann.json"
    js.write_text(json.dumps(ann))
    res = scan_labeled([js], ["x"], progress=False, cache_dir=tmp_path / "c")
    assert [Path(r.path).name for r in res.records] == ["c.jpg"]
    assert res.n_corrupt == 2  # a.jpg has the wrong size in the json; b.jpg is missing
    assert any("a.jpg is 80x40 but the json says 80x41" in m for m in res.messages)
    assert any("b.jpg not found" in m for m in res.messages)
