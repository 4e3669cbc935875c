"""The benchmark harness: SSOD variants branched from one burn-in state, summarised against the control."""

from __future__ import annotations

from pathlib import Path

import pytest

from effteacher.config import defaults_for, replace
from effteacher.data.sample import SampleConfig, generate


@pytest.fixture(scope="module")
def src_run(tmp_path_factory) -> Path:
    from effteacher.train.trainer import train

    root = tmp_path_factory.mktemp("branch")
    data = generate(root / "ds", SampleConfig(n_train=24, n_val=6, imgsz=96, min_digit=16, max_digit=40, max_digits=3),
                    progress=False)
    cfg = replace(defaults_for(str(data)), data=str(data), imgsz=96, batch=4, workers=0, epochs=2, burn_in=1,
                  labeled="50%", project=str(root / "runs"), name="ssod10_s0", val_every=1)
    train(cfg)
    return root / "runs/ssod10_s0"


@pytest.mark.slow
def test_variants_share_the_burn_in_and_are_summarised(src_run, tmp_path, monkeypatch):
    import benchmarks.common as common
    from benchmarks import ssod_ablation, ssod_gain

    assert (src_run / "weights/burn_in.pt").is_file()
    for name, ov in [("control", {"ssod.lambda_u": 0.0}), ("obj", {"ssod.score": "obj"})]:
        run = ssod_ablation.run_variant(src_run, name, 1, ov, workers=0)
        assert (run / "done.json").is_file()
    runs = {r["name"]: r for r in ssod_ablation.table(src_run)}
    assert set(runs) == {"control", "obj"}
    # both start from the same hand-over validation, then each trains one SSOD epoch of its own
    assert [r["epoch"] for r in runs["control"]["rows"]] == [1, 2]
    assert runs["control"]["rows"][0] == runs["obj"]["rows"][0]
    assert runs["obj"]["overrides"] == {"ssod.score": "obj"}
    # the source run itself (its own SSOD phase, default config) joins the comparison with overrides {}
    both = {r["name"]: r for r in ssod_ablation.table(src_run, (src_run,))}
    assert set(both) == {"control", "obj", "ssod10_s0"} and both["ssod10_s0"]["overrides"] == {}
    assert both["ssod10_s0"]["rows"][0] == runs["control"]["rows"][0]
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    ssod_ablation.summarise(src_run, write=False)  # after training: printed, not recorded
    assert not (tmp_path / "RESULTS.md").exists()
    ssod_ablation.summarise(src_run)
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"## ssod_ablation (runs, {src_run.name})" in text and "vs control" in text
    ssod_ablation.summarise(src_run, (src_run,))  # with the default: each variant against it, per validation
    assert "vs ssod10_s0 per validation" in (tmp_path / "RESULTS.md").read_text()
    ssod_ablation.summarise(src_run, label="rerun")  # a labelled section beside, not over, the first one
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"## ssod_ablation (runs, {src_run.name})" in text and f"## ssod_ablation (runs, {src_run.name}, rerun)" in text
    # ssod_gain's supervised 10% arm defaults to the burn-in of the SSOD run: its validations up to the hand-over
    sup = ssod_gain.sup10_rows(src_run.parent, 0)
    assert [r["epoch"] for r in sup] == [1]


@pytest.mark.slow
def test_ssod_gain_partial_record_compares_equal_iterations(src_run, tmp_path, monkeypatch):
    """--record --partial: runs still in progress are compared up to the iterations both arms reached, marked PARTIAL
    (here: the control has one SSOD epoch more than the SSOD run, which the comparison must not use)."""
    import json
    import shutil

    import benchmarks.common as common
    from benchmarks import ssod_gain
    from benchmarks.branch import branch, rows

    project = tmp_path / "proj"
    shutil.copytree(src_run, project / "ssod10_s0")
    (project / "ssod10_s0" / "done.json").unlink(missing_ok=True)  # as if killed: not finished
    burn = ssod_gain.burn_epochs(project / "ssod10_s0")
    args = __import__("torch").load(project / "ssod10_s0/weights/burn_in.pt", weights_only=True)["args"]
    from effteacher.config import from_dict

    base = replace(from_dict(args), workers=0)
    branch(project / "ssod10_s0", project / "ctrl10_s0", {"ssod.lambda_u": 0.0}, base, epochs=burn + 2)
    assert json.loads((project / "ctrl10_s0/overrides.json").read_text()) == {"ssod.lambda_u": 0.0}
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    with pytest.raises(SystemExit):
        ssod_gain.summarise(project, "tiny")  # nothing finished
    ssod_gain.summarise(project, "tiny", partial=True)
    text = (tmp_path / "RESULTS.md").read_text()
    last = int(rows(project / "ssod10_s0")[-1]["train/iterations"])
    assert "PARTIAL" in text and "target NOT met" in text
    import re

    ctrl_at = int(re.search(r"control \(lambda_u 0\) best [0-9.]+ at (\d+)", text).group(1))
    per_val = re.search(r"SSOD - control per validation after hand-over: (.*)", text).group(1)
    assert ctrl_at <= last and all(int(x.split(":")[0]) <= last for x in per_val.split(", "))
    assert int(rows(project / "ctrl10_s0")[-1]["train/iterations"]) > last  # the control did run further
    # an invocation that trained one arm (--arms ssod) while the other is unfinished keeps the section it has
    (project / "ssod10_s0" / "done.json").write_text("{}")
    (project / "ctrl10_s0" / "done.json").unlink(missing_ok=True)
    ssod_gain.summarise(project, "tiny")
    assert (tmp_path / "RESULTS.md").read_text() == text


def test_a_killed_run_keeps_its_wall_time(tmp_path):
    """SIGTERM (pkill of a benchmark) exits through finally: elapsed.json is written and resume adds to it."""
    import json
    import os
    import signal

    from benchmarks.branch import _track, wall_s

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        _track(tmp_path, 0.0, 5.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert e.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before  # the caller's handler is back
    assert not (tmp_path / "done.json").exists()
    assert json.loads((tmp_path / "elapsed.json").read_text())["wall_s"] > 5.0
    assert wall_s(tmp_path) > 5.0


def test_benchmark_reader_keeps_measured_rows_only(tmp_path):
    from benchmarks.branch import rows

    legacy, new = tmp_path / "legacy", tmp_path / "new"
    for d in (legacy, new):
        d.mkdir()
    (legacy / "results.csv").write_text("epoch,train/iterations,metrics/mAP50\n1,10,0\n2,20,0.5\n")
    (new / "results.csv").write_text("epoch,train/iterations,train/steps,pseudo/precision,metrics/mAP50\n"
                                     "1,10,5,,\n2,20,10,,0\n3,30,15,0.5,0.25\n")
    assert [r["epoch"] for r in rows(legacy)] == [2.0]  # old files wrote 0 for "not validated"
    out = rows(new)
    assert [r["epoch"] for r in out] == [2.0, 3.0] and "pseudo/precision" not in out[0]


@pytest.mark.slow
def test_ssod_gain_sup10_polishes_from_the_ssod_plateau(src_run, tmp_path, monkeypatch):
    """sup10 is what --supervised does: the SSOD run's burn-in (its plateau), then supervised to the plan's end;
    the record names it, and a seed without it falls back to the plateau."""
    import shutil

    import benchmarks.common as common
    from benchmarks import ssod_gain
    from benchmarks.branch import branch, rows

    project = tmp_path / "proj"
    shutil.copytree(src_run, project / "ssod10_s0")
    (project / "ssod10_s0" / "done.json").write_text("{}")
    burn = ssod_gain.burn_epochs(project / "ssod10_s0")
    args = __import__("torch").load(project / "ssod10_s0/weights/burn_in.pt", weights_only=True)["args"]
    from effteacher.config import from_dict

    branch(project / "ssod10_s0", project / "ctrl10_s0", {"ssod.lambda_u": 0.0}, replace(from_dict(args), workers=0))
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    ssod_gain.summarise(project, "tiny")
    assert "(the burn-in of SSOD: the plateau, not polished)" in (tmp_path / "RESULTS.md").read_text()
    assert [r["epoch"] for r in ssod_gain.sup10_rows(project, 0)] == list(range(1, burn + 1))
    ssod_gain.arms(project, args["data"], 0, ["sup10"], None)
    sup = rows(project / "sup10_s0")
    assert sup[:burn] == rows(project / "ssod10_s0")[:burn] and len(sup) == len(rows(project / "ssod10_s0"))
    assert not sup[-1].get("unsup/obj_loss")  # labeled images only after the plateau
    assert ssod_gain.sup10_rows(project, 0) == sup
    ssod_gain.summarise(project, "tiny")
    assert "(polished from the SSOD burn-in's plateau" in (tmp_path / "RESULTS.md").read_text()
