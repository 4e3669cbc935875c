"""The config field metadata is the single source: every setting has help (and a range when numeric), the train
options come from it, dataset profiles live in the dataset YAML, and docs/configuration.md is generated from it."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.config import TrainConfig, bundled_yaml, defaults_for, leaves, replace
from effteacher.config.reference import REGENERATE, reference_markdown
from effteacher.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# the profiles as they were written in Python before they moved into the dataset YAMLs
SAMPLE = {
    "imgsz": 256, "batch": 16, "epochs": 160, "burn_in": 150, "val_every": 10,
    "optim.optimizer": "adamw", "optim.lr0": 0.002, "optim.nbs": 16, "optim.warmup_epochs": 2.0,
    "optim.warmup_bias_lr": 0.0, "ssod.teacher_decay": 0.99,
    "aug.fliplr": 0.0, "aug.weak_fliplr": 0.0, "aug.strong_fliplr": 0.0,
}
SAMPLE_LARGE = {"imgsz": 128, "batch": 16, "aug.fliplr": 0.0, "aug.weak_fliplr": 0.0, "aug.strong_fliplr": 0.0}


def test_every_setting_has_help_and_numbers_a_range():
    for leaf in leaves(TrainConfig):
        assert leaf.meta.help.strip(), leaf.key
        numeric = leaf.type in (int, float) or "tuple" in str(leaf.type)
        assert (leaf.meta.range is not None) == numeric, leaf.key


def test_train_options_are_generated_from_the_metadata():
    cmd = typer.main.get_command(app).commands["train"]
    opts = {o for p in cmd.params for o in p.opts + p.secondary_opts}
    flags = {f for leaf in leaves(TrainConfig) if leaf.meta.flag for f in leaf.meta.flag.split("/")}
    assert flags <= opts
    assert opts - flags == {"--nproc", "--cfg"}
    by_name = {p.name: p for p in cmd.params}
    assert "(default: 16)" in by_name["batch"].help and "(default: adaptor)" in by_name["thresholds"].help


def test_bundled_profiles_unchanged():
    assert defaults_for("sample") == replace(TrainConfig(), **SAMPLE)
    assert defaults_for(None) == defaults_for("sample")
    assert defaults_for("sample-large") == replace(TrainConfig(), **SAMPLE_LARGE)


@pytest.mark.parametrize("name", ["sample", "sample-large", "demo"])
def test_repo_yaml_is_the_shipped_one(name):
    """--data data/sample.yaml and --data sample train identically: the repo's YAML is the packaged one."""
    repo = ROOT / "data" / f"{name}.yaml"
    assert repo.read_text() == bundled_yaml(name).read_text()
    assert defaults_for(str(repo)) == defaults_for(name)


def test_dataset_defaults_block(tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\n"
                    "defaults: {imgsz: 320, optim: {optimizer: sgd}}\n")
    cfg = defaults_for(str(data))
    assert (cfg.imgsz, cfg.optim.optimizer, cfg.optim.lr0) == (320, "sgd", TrainConfig().optim.lr0)
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\ndefaults: {optim: {lr: 0.1}}\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: defaults: unknown config key 'optim\.lr'. Did you mean"):
        defaults_for(str(data))


def test_cfg_and_flags_override_dataset_defaults(tmp_path, monkeypatch):
    """The order: dataset defaults, then --cfg, then flags (the run stops at the option checks: --batch 0)."""
    from effteacher.config import load_overrides

    data = tmp_path / "d.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\ndefaults: {imgsz: 320, batch: 8}\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {data}\nbatch: 4\n")
    over = load_overrides(cfg)
    assert (over.imgsz, over.batch) == (320, 4)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["train", "--cfg", str(cfg), "--batch", "0"])
    assert res.exit_code == 1 and "--batch 0: must be a whole number >= 1" in res.output


def test_configuration_reference_is_current():
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == reference_markdown(), f"docs/configuration.md is stale; regenerate it: {REGENERATE}"
    for leaf in leaves(TrainConfig):
        assert f"`{leaf.key.split('.')[-1]}`" in doc.read_text()


def test_command_options_are_generated_from_the_metadata():
    """Every option of val/predict/pseudo/rank/export/split comes from its options dataclass, with its default."""
    from effteacher.config.commands import COMMAND_OPTIONS, PseudoOptions, with_overrides

    group = typer.main.get_command(app)
    for command, cls in COMMAND_OPTIONS.items():
        params = {p.name: p for p in group.commands[command].params}
        for leaf in leaves(cls):
            assert leaf.meta.help.strip(), (command, leaf.key)
            numeric = bool({*(typing.get_args(leaf.type) or (leaf.type,))} & {int, float})
            assert (leaf.meta.range is not None) == numeric, (command, leaf.key)
            if leaf.meta.flag and command != "train":
                assert params[leaf.key].default == leaf.default, (command, leaf.key)
    assert group.commands["predict"].params[2].name == "conf"
    assert {p.name: p.default for p in group.commands["val"].params}["project"] == "runs/val"
    assert with_overrides(PseudoOptions, None, {"batch": 4}) == PseudoOptions(batch=4)
    with pytest.raises(TypeError):
        with_overrides(PseudoOptions, None, {"bacth": 4})
