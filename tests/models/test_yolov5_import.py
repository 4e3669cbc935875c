"""Real YOLOv5 checkpoints: built by the `yolov5` package (7.0.x) from its own model YAMLs, saved as its train.py
saves them, imported without running their code, and compared output for output with YOLOv5's own forward.

The package is a test-only dependency (Makefile: YOLOV5_TEST_PKGS); without it these tests are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.data.sample import SampleConfig, generate
from effteacher.models.checkpoint import load_checkpoint, model_from_checkpoint
from effteacher.errors import CheckpointError
from effteacher.models.head import DeployModel

TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]


@pytest.fixture(scope="module")
def yv5() -> Any:
    # Importing yolov5 (and the ultralytics it pulls in) patches torch.save, sets OpenCV's thread count and
    # OMP_NUM_THREADS in os.environ, and appends its folder to sys.path (top-level `models`, `utils`): undo
    # that so the rest of the session runs as without the package.
    save, threads, env, path = torch.save, cv2.getNumThreads(), dict(os.environ), list(sys.path)
    try:
        return pytest.importorskip("yolov5.models.yolo", reason="test-only package `yolov5` (make install) not installed")
    finally:
        torch.save = save
        cv2.setNumThreads(threads)
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = path


@contextlib.contextmanager
def official_module_names() -> Iterator[None]:
    """Pickle the package's classes under the names a YOLOv5 checkout gives them (models.yolo.DetectionModel).

    The pip package lives under ``yolov5.``; official release files name ``models.yolo`` and
    ``models.common``. Aliases in sys.modules and the classes' ``__module__`` make pickle write the same.
    """
    import yolov5.models
    import yolov5.models.common
    import yolov5.models.yolo

    mods = {"models": yolov5.models, "models.yolo": yolov5.models.yolo, "models.common": yolov5.models.common}
    saved_mods = {k: sys.modules.get(k) for k in mods}
    renamed = []
    for short in ("models.yolo", "models.common"):
        for obj in list(vars(mods[short]).values()):
            if isinstance(obj, type) and obj.__module__ == f"yolov5.{short}":
                renamed.append((obj, obj.__module__))
                obj.__module__ = short
    sys.modules.update(mods)
    try:
        yield
    finally:
        for obj, mod in renamed:
            obj.__module__ = mod
        for k, v in saved_mods.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def build(yv5: Any, cfg: str | dict, nc: int | None = None, names: Any = None, seed: int = 0) -> torch.nn.Module:
    """A YOLOv5 model from a YAML of the package (or a dict), with random weights AND random BatchNorm statistics."""
    if isinstance(cfg, str):
        cfg = str(Path(yv5.__file__).parents[1] / cfg)
    torch.manual_seed(seed)
    m = yv5.DetectionModel(cfg, nc=nc)
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    if names is not None:
        m.names = names
    return m


def save_like_train_py(model: torch.nn.Module, path: Path, ema: torch.nn.Module | None = None) -> Path:
    """torch.save of the dict YOLOv5's train.py writes (model and EMA in half precision, optimizer state, opt)."""
    model.nc = model.model[-1].nc
    model.hyp = {"lr0": 0.01, "box": 0.05, "anchor_t": 4.0}
    model.class_weights = torch.ones(model.nc)
    opt = argparse.Namespace(weights="yolov5s.pt", cfg="", data="data.yaml", imgsz=320, epochs=3, batch_size=16,
                             save_dir="runs/train/exp", noautoanchor=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937)
    ckpt = {
        "epoch": 2,
        "best_fitness": np.array([0.123]),
        "model": deepcopy(model).half(),
        "ema": deepcopy(ema).half() if ema is not None else None,
        "updates": 42,
        "optimizer": optimizer.state_dict(),
        "opt": vars(opt),
        "git": {"remote": "https://example.invalid/yolov5", "branch": "master", "commit": "0" * 7},
        "date": datetime.now().isoformat(),
    }
    with official_module_names():
        torch.save(ckpt, path)
    return path


def reference(model: torch.nn.Module) -> torch.nn.Module:
    """YOLOv5's own model with the weights the file holds (rounded to fp16), run in fp32."""
    return deepcopy(model).half().float().eval()


def assert_parity(ref: torch.nn.Module, ours: torch.nn.Module, atol_px: float) -> None:
    # Same input, fp32. YOLOv5's Detect output (B, anchors, 5+nc): cx cy w h in pixels, then probabilities.
    x = torch.rand(2, 3, 160, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = ref(x)[0]
        b = DeployModel(ours)(x)
    assert a.shape == b.shape
    torch.testing.assert_close(b[..., :4], a[..., :4], rtol=0, atol=atol_px)
    torch.testing.assert_close(b[..., 4:], a[..., 4:], rtol=0, atol=1e-5)


# Tolerance: both models run the same float32 convolutions, BatchNorms and sigmoids in the same order on the
# same fp16-rounded weights, so v6.0+ outputs agree to the last bit in practice; 1e-4 px (a few float32 ulps
# of a 200-px coordinate) leaves room for kernel choice only. The v5.0 Focus stem becomes a 6x6 conv whose
# 108-term sums are added in another order: differences of ~1e-7 relative, 1e-3 px allowed.
@pytest.mark.slow
@pytest.mark.parametrize("yaml_name,nc,names", [
    ("yolov5n.yaml", 3, {0: "cat", 1: "dog", 2: "bird"}),  # v7.0 stores names as a dict
    ("yolov5s.yaml", None, None),  # the 80-class layout of the official yolov5s.pt, default names
])
def test_v6_v7_checkpoint_parity(yv5: Any, tmp_path: Path, yaml_name: str, nc: int | None, names: Any) -> None:
    model = build(yv5, f"models/{yaml_name}", nc=nc, names=names)
    ema = deepcopy(model)
    with torch.no_grad():  # the EMA differs from the model: the importer must take 'ema', as YOLOv5 does
        ema.model[-1].m[0].bias.add_(0.5)
        ema.model[2].cv1.conv.weight.mul_(1.1)
    path = save_like_train_py(model, tmp_path / yaml_name.replace(".yaml", ".pt"), ema=ema)
    ckpt = load_checkpoint(path)
    meta = ckpt["model"]
    assert meta["variant"] == yaml_name[6] and meta["nc"] == (nc or 80) and meta["imgsz"] == 320
    assert meta["names"] == (["cat", "dog", "bird"] if names else [str(i) for i in range(80)])
    assert ckpt["source"] == {"format": "yolov5", "file": str(path), "release": "v6.0-v7.0", "weights": "ema",
                              "dtype": "torch.float16"}
    assert_parity(reference(ema), model_from_checkpoint(ckpt), atol_px=1e-4)
    torch.testing.assert_close(ckpt["state_dict"]["anchors"],
                               torch.tensor(yaml.safe_load(open(Path(yv5.__file__).parents[1] / "models" / yaml_name))["anchors"],
                                            dtype=torch.float32).view(3, 3, 2))


V50_YOLOV5S = {  # models/yolov5s.yaml of release v5.0 (Focus stem, SPP before a shortcut-free C3)
    "nc": 4, "depth_multiple": 0.33, "width_multiple": 0.50,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [[-1, 1, "Focus", [64, 3]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                 [-1, 1, "Conv", [256, 3, 2]], [-1, 9, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                 [-1, 9, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 1, "SPP", [1024, [5, 9, 13]]],
                 [-1, 3, "C3", [1024, False]]],
    "head": [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
             [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
             [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
             [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]], [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]],
}


@pytest.mark.slow
def test_release_v5_checkpoint_parity(yv5: Any, tmp_path: Path) -> None:
    model = build(yv5, deepcopy(V50_YOLOV5S), names=["a", "b", "c", "d"])
    with torch.no_grad():  # an AutoAnchor-refit model: anchors differ from the YAML's
        model.model[-1].anchors.mul_(torch.tensor([1.1, 0.9]))
    path = save_like_train_py(model, tmp_path / "yolov5s_v5.pt")  # 'ema': None -> the 'model' weights
    ckpt = load_checkpoint(path)
    assert ckpt["model"]["variant"] == "s-v5.0" and ckpt["source"]["release"] == "v4.0-v5.0"
    assert ckpt["source"]["weights"] == "model"
    ours = model_from_checkpoint(ckpt)
    assert_parity(reference(model), ours, atol_px=1e-3)
    torch.testing.assert_close(ours.anchors, (model.model[-1].anchors.half().float() * model.stride.view(-1, 1, 1)))


@contextlib.contextmanager
def _restore_default_act(yv5: Any) -> Iterator[None]:
    # parse_model sets Conv.default_act for the whole package when a YAML names an activation
    conv = sys.modules["yolov5.models.common"].Conv
    act = conv.default_act
    try:
        yield
    finally:
        conv.default_act = act


@pytest.mark.slow
@pytest.mark.parametrize("yaml_name,message", [
    ("models/hub/yolov5n6.yaml", "P6 model"),
    ("models/segment/yolov5n-seg.yaml", "segmentation model"),
    ("models/hub/yolov5s-LeakyReLU.yaml", "activation LeakyReLU, expected SiLU"),
    ("models/hub/yolov5-p2.yaml", "custom YOLOv5 architecture"),
])
def test_unmappable_models_are_refused_clearly(yv5: Any, tmp_path: Path, yaml_name: str, message: str) -> None:
    with _restore_default_act(yv5):
        cfg = str(Path(yv5.__file__).parents[1] / yaml_name)
        if "seg" in yaml_name:
            torch.manual_seed(0)
            model = sys.modules["yolov5.models.yolo"].SegmentationModel(cfg)
        else:
            model = build(yv5, yaml_name)
    path = save_like_train_py(model, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=rf"x\.pt: .*{message}"):
        load_checkpoint(path)


@pytest.mark.slow
def test_depth_width_outside_the_variant_table(yv5: Any, tmp_path: Path) -> None:
    cfg = yaml.safe_load(open(Path(yv5.__file__).parents[1] / "models/yolov5n.yaml"))
    cfg["width_multiple"] = 0.375
    path = save_like_train_py(build(yv5, cfg), tmp_path / "custom.pt")
    with pytest.raises(CheckpointError, match=r"depth/width multiples \(0.33, 0.375\) match no effteacher variant"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return generate(root / "ds", SampleConfig(n_train=16, n_val=4, imgsz=96, min_digit=16, max_digit=40, max_digits=3),
                    progress=False)


@pytest.mark.slow
def test_convert_then_val_predict_export(yv5: Any, tmp_path: Path, tiny_data: Path) -> None:
    model = build(yv5, "models/yolov5n.yaml", nc=10, names=[str(i) for i in range(10)])
    path = save_like_train_py(model, tmp_path / "yolov5n.pt")
    res = CliRunner().invoke(app, ["convert", str(path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "yolov5n-effteacher.pt"
    plain = torch.load(out, weights_only=True)  # a plain effteacher checkpoint now
    assert plain["format"] == "effteacher" and plain["model"]["variant"] == "n" and plain["source"]["format"] == "yolov5"
    assert_parity(reference(model), model_from_checkpoint(plain), atol_px=1e-4)
    res = CliRunner().invoke(app, ["convert", str(out)])
    assert res.exit_code == 1 and "already an effteacher checkpoint" in res.output
    # --weights yolov5n.pt works directly in val, predict and export
    res = CliRunner().invoke(app, ["val", "--weights", str(path), "--data", str(tiny_data),
                                   "--imgsz", "96", "--workers", "0", "--project", str(tmp_path / "val")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "val/exp/predictions.json").is_file()
    img = tmp_path / "img.jpg"
    cv2.imwrite(str(img), np.full((96, 128, 3), 127, np.uint8))
    res = CliRunner().invoke(app, ["predict", str(img), "--weights", str(path), "--imgsz", "96", "--save-txt",
                                   "--conf", "0.0001", "--project", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pred/exp/labels/img.txt").is_file()
    res = CliRunner().invoke(app, ["export", "--weights", str(path), "--format", "torchscript", "--imgsz", "64"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "yolov5n.torchscript").is_file()


@pytest.mark.slow
def test_train_from_yolov5_weights_across_class_sets(yv5: Any, tmp_path: Path, tiny_data: Path) -> None:
    # a 3-class YOLOv5n into the 10 digit classes: two names match ("7", "3"), "cat" has no counterpart
    model = build(yv5, "models/yolov5n.yaml", nc=3, names={0: "7", 1: "cat", 2: "3"})
    path = save_like_train_py(model, tmp_path / "yolov5n.pt")
    res = CliRunner().invoke(app, ["train", "--data", str(tiny_data), "--supervised", "--labeled", "50%",
                                   "--epochs", "1", *TINY, "--weights", str(path), "--project", str(tmp_path),
                                   "--name", "ft"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = "".join(res.output.split())
    assert "transferred" in text and "classoutputs:2/10keptbyname" in text
    args = yaml.safe_load((tmp_path / "ft/args.yaml").read_text())
    assert args["model"] == "n" and args["weights"] == str(path)  # --model defaults to the weights' model
    assert torch.load(tmp_path / "ft/weights/best.pt", weights_only=True)["model"]["names"] == [str(i) for i in range(10)]
