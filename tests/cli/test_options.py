"""Option checks (effteacher.options) through the CLI. Bad option values and bad --cfg files (issue 36): every
numeric option of every command and every TrainConfig key gets one ERROR line, exit code 1, no traceback and no
folder, before anything runs.

The option and key lists are generated from the typer app and the config dataclasses, so a new option or key is
covered without editing this file.

Non-numeric values (``--batch abc``): the CLI turns the parser's usage error into the same one ERROR line and exit
code 1 as any other bad value (cli._Command), so these cases are asserted exactly like the out-of-range ones; a
malformed command line (an unknown option) stays a usage error with exit code 2.

Also: the first checks a new user meets (train options and cfg values one line each, burn-in vs epochs, imgsz
rounded to the stride, the flip-ensemble warning, the other commands' numbers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.config import TrainConfig, defaults_for, replace
from effteacher.options import (
    OPTION_RANGES,
    TRAIN_RANGES,
    Range,
    _fields,
    check_options,
    check_train_config,
    train_config_problems,
)

TINY = ["--imgsz", "96", "--batch", "4", "--workers", "0"]


def _invoke(args: list[str], **kw):
    return CliRunner().invoke(app, args, **kw)


HUGE = ("1" + "0" * 30, "18446744073709551617")


def _numeric_params() -> list[tuple[str, Any]]:
    """(command, click parameter) for every int/float parameter of every command of the app."""
    group = typer.main.get_command(app)
    out = []
    for name, cmd in sorted(group.commands.items()):
        for p in cmd.params:
            if getattr(getattr(p, "type_descriptor", None), "annotation", None) in (int, float):
                out.append((name, p))
    return out


NUMERIC = _numeric_params()


def _base_args(command: str, tmp: Path) -> list[str]:
    """The command with its required parameters (dummy values: the checks come first) and --project in ``tmp``."""
    cmd = typer.main.get_command(app).commands[command]
    args = [command]
    for p in cmd.params:
        if p.required:
            args += ["x"] if p.param_type_name == "argument" else [p.opts[0], "x"]
        if p.name == "project":
            args += ["--project", str(tmp / "project")]
    return args


def _bad_values(rng: Range, is_int: bool) -> list[str]:
    vals = ["-1", *HUGE, "abc"]
    if rng.lo is not None and rng.lo >= 1:
        vals.append(str(int(rng.lo) - 1) if is_int else "0")
    if rng.hi is not None:
        vals.append(str(int(rng.hi) + 1) if is_int else str(rng.hi * 2))
    if not is_int:
        vals += ["nan", "inf", "1e400"]
    else:
        vals.append("1.5")
    return sorted(set(vals))


def _cases() -> list[Any]:
    cases = []
    for command, p in NUMERIC:
        is_int = p.type_descriptor.annotation is int
        for v in _bad_values(OPTION_RANGES[p.name], is_int):
            cases.append(pytest.param(command, p.opts[0], v, id=f"{command}{p.opts[0]}={v[:12]}"))
    return cases


def _assert_one_error(res: Any, tmp: Path, before: set[str]) -> str:
    out = res.output
    assert res.exit_code == 1, out
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, out
    assert len(out.strip().splitlines()) == 1, out  # nothing else, and the one problem is not split over lines
    assert set(os.listdir(tmp)) == before, "a folder or file was created"
    return errors[0]


def test_every_numeric_option_has_a_rule():
    assert len(NUMERIC) >= 25  # train, val, predict, pseudo, rank, export, split
    assert {c for c, _ in NUMERIC} >= {"train", "val", "predict", "pseudo", "rank", "export", "split"}
    missing = sorted({p.name for _, p in NUMERIC} - set(OPTION_RANGES))
    assert not missing, f"numeric options without a range in OPTION_RANGES: {missing}"


@pytest.mark.parametrize("command,flag,value", _cases())
def test_bad_numeric_option(command, flag, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    res = CliRunner().invoke(app, [*_base_args(command, tmp_path), flag, value])
    line = _assert_one_error(res, tmp_path, before)
    assert flag in line
    if value in ("abc", "1.5"):
        assert "expected a whole number" in line or "expected a number" in line
    else:
        assert "must be" in line


def _wrong_value(value: Any, tp: Any) -> Any:
    """A value of another type than the key's (a string for numbers and flags, a list for text)."""
    if isinstance(value, str) or value is None:
        return [1, 2]
    return "abc"


def _cfg_keys() -> list[tuple[str, Any, Any]]:
    return _fields(TrainConfig())


def _nested(key: str, value: Any) -> dict[str, Any]:
    head, _, tail = key.partition(".")
    return {head: {tail: value}} if tail else {head: value}


def _train_cfg(tmp: Path, doc: Any, raw: str | None = None) -> Any:
    cfg = tmp / "cfg.yaml"
    cfg.write_text(raw if raw is not None else yaml.safe_dump(doc))
    return CliRunner().invoke(app, ["train", "--cfg", str(cfg)])  # the run would go to runs/ in the cwd (tmp)


@pytest.mark.parametrize("key,value,tp", _cfg_keys(), ids=[k for k, _, _ in _cfg_keys()])
def test_cfg_key_of_wrong_type(key, value, tp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("")
    before = set(os.listdir(tmp_path))
    res = _train_cfg(tmp_path, _nested(key, _wrong_value(value, tp)))
    line = _assert_one_error(res, tmp_path, before)
    assert key.split(".")[-1].replace("_", "-") in line or key in line


NUMERIC_KEYS = sorted(TRAIN_RANGES)


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_cfg_key_huge(key, tmp_path, monkeypatch):
    """A number too large for its key (10**30 for whole numbers, 10**400 beyond any float) is a range message,
    never an OverflowError."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("")
    before = set(os.listdir(tmp_path))
    whole = TRAIN_RANGES[key].whole
    value = 10**30 if whole else 10**400
    if key == "loss.balance":
        value = [value, 1.0, 0.4]
    res = _train_cfg(tmp_path, None, raw=yaml.safe_dump(_nested(key, 0)).replace(": 0", f": {value}"))
    line = _assert_one_error(res, tmp_path, before)
    assert "must be" in line and "digits" in line


@pytest.mark.parametrize("raw,expect", [
    (None, "config YAML not found"),
    ("batch: [1, 2\nimgsz: 64\n", "not valid YAML at line 2, column"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("optim: 3\n", "must be a mapping"),
    ("optim:\n  lr0: abc\n", "cfg optim.lr0 'abc': expected a number"),
    ("bacth: 4\n", "Did you mean 'batch'"),
])
def test_bad_cfg_file(raw, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    cfg = tmp_path / ("missing.yaml" if raw is None else "cfg.yaml")
    if raw is not None:
        cfg.write_text(raw)
        before = set(os.listdir(tmp_path))
    res = CliRunner().invoke(app, ["train", "--cfg", str(cfg), "--project", str(tmp_path / "runs")])
    line = _assert_one_error(res, tmp_path, before)
    assert expect in line
    assert str(cfg) in line or line.startswith("ERROR cfg ")  # the file, or the cfg key in it


def test_cfg_binary_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_bytes(b"\xff\xfe\x00\x81")
    before = set(os.listdir(tmp_path))
    res = CliRunner().invoke(app, ["train", "--cfg", "cfg.yaml", "--project", str(tmp_path / "runs")])
    assert "not a UTF-8 text file" in _assert_one_error(res, tmp_path, before)


def test_seed_above_torch_range(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["train", "--seed", "18446744073709551617", "--project", str(tmp_path / "r")])
    line = _assert_one_error(res, tmp_path, set())
    assert line == "ERROR --seed 18446744073709551617: must be a whole number >= 0 and <= 4294967295"


def test_several_problems_one_line_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["pseudo", "x", "--weights", "x", "--batch", "0", "--workers", "-1",
                                   "--iou", "nan"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("ERROR") for line in lines), res.output
    assert sorted(line.split()[1] for line in lines) == ["--batch", "--iou", "--workers"]
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("command", ["pseudo", "rank"])
def test_pseudo_rank_batch_zero(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["pseudo", "x"] if command == "pseudo" else ["rank"]
    res = CliRunner().invoke(app, [*args, "--weights", "x", "--batch", "0"])
    line = _assert_one_error(res, tmp_path, set())
    assert line.startswith("ERROR --batch 0: must be a whole number >= 1")
    assert not (tmp_path / "runs").exists()


def test_unknown_option_stays_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["val", "--weights", "x", "--bach", "3"])
    assert res.exit_code == 2 and "No such option" in res.output


def test_labeled_file_without_extension(tmp_path):
    lst = tmp_path / "mylist"
    lst.write_text("a.jpg\n")
    assert check_options(labeled=str(lst)) == {"labeled": str(lst)}
    with pytest.raises(Exception, match="file not found"):
        check_options(labeled=str(tmp_path / "other" / "mylist"))


def test_checkpoint_metadata_types(tmp_path, monkeypatch):
    """A file that says format: effteacher but holds model: 5 is a CheckpointError naming the file."""
    from effteacher.errors import CheckpointError
    from effteacher.models.checkpoint import load_checkpoint

    p = tmp_path / "bad.pt"
    torch.save({"format": "effteacher", "format_version": 1, "model": 5, "state_dict": {}}, p)
    with pytest.raises(CheckpointError, match=r"bad\.pt: damaged effteacher checkpoint: 'model' is a int"):
        load_checkpoint(p)
    good = {"variant": "n", "nc": 1, "names": ["a"], "imgsz": 64, "anchors": [[1.0, 2.0]], "stride": [8.0]}
    for model, args, match in [({**good, "nc": "1"}, {}, "model.nc"), ({**good, "names": ["a", "b"]}, {}, "names"),
                               ({**good, "imgsz": None}, {}, "imgsz"), (good, [1], "'args' is a list"),
                               (good, {"ssod": 3}, "args.ssod")]:
        torch.save({"format": "effteacher", "format_version": 1, "model": model, "state_dict": {}, "args": args}, p)
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(p)
    torch.save({"format": "effteacher", "format_version": 1, "model": 5, "state_dict": {}}, p)
    monkeypatch.chdir(tmp_path)
    for args in (["val", "--weights", str(p)], ["pseudo", str(p), "--weights", str(p)]):
        res = CliRunner().invoke(app, args)
        line = _assert_one_error(res, tmp_path, {"bad.pt"})
        assert str(p) in line


def test_pseudo_negative_workers_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["pseudo", "x", "--weights", "x", "--workers", "-1"])
    assert "--workers -1" in _assert_one_error(res, tmp_path, set())


def test_data_yaml_syntax_error_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.yaml").write_text("path: .\ntrain: [images\nval: images\n")
    res = CliRunner().invoke(app, ["check", "--data", "d.yaml"])
    line = _assert_one_error(res, tmp_path, {"d.yaml"})
    assert line.startswith("ERROR d.yaml: not valid YAML at line 3, column 4:")


def test_predict_video(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 16)
    res = CliRunner().invoke(app, ["predict", "clip.mp4", "--weights", "x"])
    line = _assert_one_error(res, tmp_path, {"clip.mp4"})
    assert line.startswith("ERROR ") and "clip.mp4: cannot open video (corrupt file" in line


def test_missing_listed_image_is_not_found(tmp_path, capsys):
    import cv2
    import numpy as np

    from effteacher.data.dataset import image_shape
    from effteacher.data.sources import find_sources
    from effteacher.errors import DatasetError
    from effteacher.predict.predictor import read_image

    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg\nmissing.jpg\n")
    assert find_sources(lst) == [img]
    err = capsys.readouterr().err
    assert "missing.jpg: not found" in err and "corrupt" not in err
    with pytest.raises(DatasetError, match="missing.jpg: not found"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="not found"):
        image_shape(tmp_path / "missing.jpg")
    lst.write_text("missing.jpg\n")
    with pytest.raises(DatasetError, match="none of the 1 images listed"):
        find_sources(lst)


# ------------------------------------------------------------------------------------ 1. options
@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch 0: must be a whole number >= 1"),
    (["--imgsz", "0"], "--imgsz 0: must be a whole number >= 1"),
    (["--epochs", "-1"], "--epochs -1: must be a whole number >= 0"),
    (["--workers", "-2"], "--workers -2: must be a whole number >= 0"),
    (["--patience", "0"], "--patience 0: must be a whole number >= 1"),
    (["--seed", "-1"], "--seed -1: must be a whole number >= 0"),
    (["--labeled", "150%"], "at most 100%"),
    (["--labeled", "ten"], "is not understood"),
    (["--burn-in", "5", "--epochs", "2"], "or --supervised for a supervised run"),
    (["--burn-in", "2", "--epochs", "2"], "--burn-in 2 with --epochs 2 leaves no semi-supervised epoch"),
    (["--burn-in", "-1"], "--burn-in '-1'"),
    (["--nproc", "0"], "--nproc 0: must be a whole number >= 1"),
    (["--thresholds", "best"], "--thresholds 'best': use one of adaptor, fixed, gmm"),
])
def test_bad_options_stop_before_any_folder_or_scan(tmp_path, args, message):
    res = _invoke(["train", "--data", str(tmp_path / "never-read.yaml"), "--project", str(tmp_path / "runs"), *args])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "never-read.yaml" not in res.output  # checked before the dataset is even looked at
    assert "Traceback" not in res.output and not (tmp_path / "runs").exists()


def test_cfg_yaml_values_are_checked_one_line_each(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"batch": "16", "optim": {"lr0": -0.1, "optimizer": "adam"},
                                   "ssod": {"tau1": 1.5}, "aug": {"mosaic": 2.0}}))
    res = _invoke(["train", "--cfg", str(cfg), "--project", str(tmp_path / "runs")])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 5, res.output
    for m in ("--batch '16': expected a whole number", "cfg optim.lr0 -0.1: must be a number >= 0 and <= 1",
              "cfg optim.optimizer 'adam': use one of auto, sgd, adamw", "cfg ssod.tau1 1.5: must be a number",
              "cfg aug.mosaic 2.0: must be a number >= 0 and <= 1 (a probability)"):
        assert m in res.output, m


def test_every_numeric_config_value_has_a_range():
    numeric = {k for k, _, tp in _fields(TrainConfig()) if tp in (int, float) or str(tp).startswith("tuple")}
    assert numeric == set(TRAIN_RANGES)
    for profile in ("sample", "sample-large", "custom.yaml"):
        assert train_config_problems(defaults_for(profile)) == [], profile


def test_burn_in_vs_epochs_only_when_both_fixed():
    base = TrainConfig()
    assert train_config_problems(replace(base, burn_in="auto", epochs=2)) == []
    assert train_config_problems(replace(base, burn_in=5, epochs=0)) == []  # epochs auto: SSOD follows burn-in
    assert train_config_problems(replace(base, burn_in=5, epochs=2, supervised=True)) == []
    assert len(train_config_problems(replace(base, burn_in=5, epochs=5))) == 1
    assert "tau1" in train_config_problems(replace(base, **{"ssod.tau1": 0.7, "ssod.tau2": 0.5}))[0]


def test_imgsz_rounded_up_to_the_stride_with_a_message(capsys):
    assert check_train_config(replace(TrainConfig(), imgsz=33)).imgsz == 64
    assert "--imgsz 33 is not a multiple of the largest model stride 32; using 64" in capsys.readouterr().err
    assert check_train_config(replace(TrainConfig(), imgsz=96)).imgsz == 96
    assert capsys.readouterr().err == ""


def test_flip_ensemble_on_unflipped_data_warns(capsys):
    flip = {"ssod.flip_teacher": True}
    check_train_config(replace(TrainConfig(), **flip, **{"aug.fliplr": 0.0}))
    assert "ssod.flip_teacher averages the teacher over mirror images, but aug.fliplr is 0" in capsys.readouterr().err
    check_train_config(replace(TrainConfig(), **flip, **{"aug.fliplr": 0.5}))  # mirror-symmetric data: no message
    check_train_config(replace(TrainConfig(), **flip, supervised=True, **{"aug.fliplr": 0.0}))  # no teacher
    check_train_config(replace(TrainConfig(), **{"aug.fliplr": 0.0}))  # the default keeps the ensemble off
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args, message", [
    (["predict", "x.jpg", "--weights", "w.pt", "--conf", "2"], "--conf 2.0: must be a number >= 0 and <= 1"),
    (["predict", "x.jpg", "--weights", "w.pt", "--max-det", "0"], "--max-det 0"),
    (["val", "--weights", "w.pt", "--batch", "0"], "--batch 0"),
    (["val", "--weights", "w.pt", "--iou", "0"], "--iou 0.0: must be a number > 0"),
    (["export", "--weights", "w.pt", "--imgsz", "-5"], "--imgsz -5"),
    (["split", "--labeled", "0.0"], "above 0%"),
    (["split", "--seed", "-3"], "--seed -3"),
])
def test_other_commands_check_their_numbers_first(args, message):
    res = _invoke(args)
    assert res.exit_code == 1 and message in res.output and "w.pt" not in res.output, res.output
