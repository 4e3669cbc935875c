"""The benchmark harness: SSOD variants branched from one burn-in state, summarised against the control."""

from __future__ import annotations

from pathlib import Path

import pytest

from effteacher.config import defaults_for, replace
from effteacher.data.sample import SampleConfig, generate


@pytest.fixture(scope="module")
def src_run(tmp_path_factory) -> Path:
    from effteacher.engine.trainer import train

    root = tmp_path_factory.mktemp("branch")
    data = generate(root / "ds", SampleConfig(n_train=24, n_val=6, imgsz=96, min_digit=16, max_digit=40, max_digits=3),
                    progress=False)
    cfg = replace(defaults_for(str(data)), data=str(data), imgsz=96, batch=4, workers=0, epochs=2, burn_in=1,
                  labeled="50%", project=str(root / "runs"), name="ssod10_s0", val_every=1)
    train(cfg)
    return root / "runs/ssod10_s0"


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
    ssod_ablation.summarise(src_run)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## ssod_ablation (runs)" in text and "vs control" in text
    # ssod_gain's supervised 10% arm defaults to the burn-in of the SSOD run: its validations up to the hand-over
    sup = ssod_gain.sup10_rows(src_run.parent, 0)
    assert [r["epoch"] for r in sup] == [1]
