"""Config round-trips and strict keys; pure box conversions and transforms."""

import numpy as np
import pytest
import torch

from effteacher.config import TrainConfig, defaults_for, from_dict, load_overrides, load_yaml, replace, save_yaml, to_dict
from effteacher.errors import ConfigError
from effteacher.utils.boxes import (
    box_candidates,
    scale_boxes,
    transform_boxes,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)


def test_config_roundtrip(tmp_path):
    cfg = replace(TrainConfig(), epochs=3, **{"ssod.tau2": 0.5, "loss.balance": (1.0, 1.0, 1.0)})
    save_yaml(cfg, tmp_path / "a.yaml")
    back = load_yaml(tmp_path / "a.yaml")
    assert back == cfg
    assert back.ssod.tau2 == 0.5 and back.epochs == 3
    assert to_dict(back)["loss"]["balance"] == [1.0, 1.0, 1.0]


def test_partial_cfg_yaml_keeps_the_dataset_profile(tmp_path):
    (tmp_path / "p.yaml").write_text("val_every: 3\nssod:\n  soft_cls: true\n")
    sample = load_overrides(tmp_path / "p.yaml", "sample")
    prof = defaults_for("sample")
    assert sample.imgsz == prof.imgsz != TrainConfig().imgsz  # the sample profile, not the plain defaults
    assert sample.ssod.soft_cls and sample.val_every == 3 and sample.ssod.teacher_decay == prof.ssod.teacher_decay
    custom = load_overrides(tmp_path / "p.yaml", "custom.yaml")
    assert custom.imgsz == TrainConfig().imgsz and custom.ssod.soft_cls
    (tmp_path / "full.yaml").write_text("data: custom.yaml\nimgsz: 320\n")
    assert load_overrides(tmp_path / "full.yaml").imgsz == 320  # the YAML's own data picks the profile
    with pytest.raises(ConfigError, match="soft_cls"):
        (tmp_path / "bad.yaml").write_text("ssod:\n  soft_clss: true\n")
        load_overrides(tmp_path / "bad.yaml", "sample")


def test_config_unknown_key_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="ssod.tau"):
        from_dict({"ssod": {"tau3": 0.1}})
    with pytest.raises(ConfigError):
        replace(TrainConfig(), **{"nope.x": 1})


def test_box_formats_roundtrip_numpy_and_torch():
    b = np.array([[10.0, 20.0, 30.0, 60.0]], dtype=np.float32)
    np.testing.assert_allclose(xywh2xyxy(xyxy2xywh(b)), b)
    np.testing.assert_allclose(xyxy2xywh(b), [[20, 40, 20, 40]])
    n = xyxy2xywhn(b, 100, 200)
    np.testing.assert_allclose(n, [[0.2, 0.2, 0.2, 0.2]])
    np.testing.assert_allclose(xywhn2xyxy(n, 100, 200), b, rtol=1e-6)
    t = torch.tensor(b)
    assert torch.allclose(xywh2xyxy(xyxy2xywh(t)), t)


def test_transform_boxes_flip_and_scale():
    b = np.array([[10.0, 20.0, 30.0, 60.0]], dtype=np.float32)
    flip = np.array([[-1, 0, 100], [0, 1, 0], [0, 0, 1]], dtype=np.float32)  # width 100 hflip
    np.testing.assert_allclose(transform_boxes(b, flip), [[70, 20, 90, 60]])
    scale = np.diag([2.0, 0.5, 1.0]).astype(np.float32)
    out_t = transform_boxes(torch.tensor(b), torch.tensor(scale))
    assert torch.allclose(out_t, torch.tensor([[20.0, 10.0, 60.0, 30.0]]))
    rot = np.array([[0, -1, 100], [1, 0, 0], [0, 0, 1]], dtype=np.float32)  # 90 degrees
    np.testing.assert_allclose(transform_boxes(b, rot), [[40, 10, 80, 30]])


def test_box_candidates_and_scale_boxes():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 3, 3]], dtype=np.float32)
    assert box_candidates(before, after).tolist() == [True, False, False]
    # 200x100 image letterboxed into 128x128: gain 0.64, pad_h = (128-64)/2 = 32
    boxes = np.array([[0.0, 32.0, 128.0, 96.0]])
    out = scale_boxes((128, 128), boxes, (100, 200))
    np.testing.assert_allclose(out, [[0, 0, 200, 100]], atol=1e-4)
