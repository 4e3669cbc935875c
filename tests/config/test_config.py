"""Config round-trips, dataset profiles and strict keys."""

import pytest

from effteacher.config import (
    TrainConfig,
    defaults_for,
    from_dict,
    load_overrides,
    load_yaml,
    replace,
    save_yaml,
    to_dict,
)
from effteacher.errors import ConfigError


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
