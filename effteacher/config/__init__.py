"""Typed configuration: every setting in one place, with its help, range and flag, and strict YAML round-trips."""

from effteacher.config.fields import Leaf, Meta, Range, leaves, meta
from effteacher.config.io import (
    bundled_yaml,
    dataset_defaults,
    defaults_for,
    from_dict,
    load_overrides,
    load_yaml,
    replace,
    save_yaml,
    to_dict,
)
from effteacher.config.sections import AugmentConfig, LossConfig, OptimConfig, SchedConfig, SSODConfig
from effteacher.config.train import TrainConfig

__all__ = [
    "AugmentConfig", "Leaf", "LossConfig", "Meta", "OptimConfig", "Range", "SSODConfig", "SchedConfig", "TrainConfig",
    "bundled_yaml", "dataset_defaults", "defaults_for", "from_dict", "leaves", "load_overrides", "load_yaml", "meta",
    "replace", "save_yaml", "to_dict",
]
