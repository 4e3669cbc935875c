"""benchmarks/demo.py at a tiny size: the three arms of one seed share the split and step budget, and are recorded."""

from __future__ import annotations

import pytest

from effteacher.data.sample import SampleConfig, generate


@pytest.mark.slow
def test_demo_arms_share_the_burn_in_and_the_step_budget(tmp_path, monkeypatch):
    import benchmarks.common as common
    from benchmarks import demo
    from benchmarks.branch import rows

    data = generate(tmp_path / "ds", SampleConfig(n_train=40, n_val=6, imgsz=64, min_digit=16, max_digit=28,
                                                  max_digits=2, digits=(0, 1)), progress=False)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("imgsz: 64\nbatch: 4\nepochs: 3\nburn_in: 2\nval_every: 1\n")
    base = demo.base_config(str(data), cfg, workers=0)
    project = tmp_path / "runs"
    demo.train_arms(project, base, 0, ["ssod", "ctrl", "sup"])
    ssod, ctrl, sup = (rows(project / f"{a}_s0") for a in ("ssod", "ctrl", "sup"))
    # the control is the SSOD run's burn-in, then one SSOD epoch of its own
    assert ctrl[:2] == ssod[:2] and [r["epoch"] for r in ctrl] == [1, 2, 3]
    # supervised on the same split for at least as many optimizer steps (4 labeled images: 1 per epoch; 36
    # unlabeled: 9 in the SSOD epoch)
    assert (project / "sup_s0/split/labeled.txt").read_text() == (project / "ssod_s0/split/labeled.txt").read_text()
    steps, per_epoch = demo.planned_steps(project / "ssod_s0")
    assert (steps, per_epoch) == (ssod[-1]["train/iterations"], 1) == (11, 1)
    assert sup[-1]["train/iterations"] == steps
    demo.train_arms(project, base, 0, ["ssod", "ctrl", "sup"])  # finished arms are reused, not retrained
    assert rows(project / "sup_s0") == sup
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    demo.summarise(project, "tiny")
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## demo (tiny)" in text and "s0 sup " in text and "on seeds 0" in text
    assert "reliable pseudo precision per SSOD epoch" in text


def test_demo_target_needs_three_bands_over_the_better_baseline():
    from benchmarks.demo import MAP, band

    rs = [{MAP: v} for v in (0.1, 0.5, 0.52, 0.50, 0.49, 0.51)]
    assert band(rs) == pytest.approx(0.03)  # the last five only
    assert band(rs, 2) == pytest.approx(0.02)


@pytest.mark.parametrize(("epochs", "factor", "expected"), [(30, 2.0, 200 + 10 * 8), (0, 0.5, 200 + 13 * 8)])
def test_demo_step_budget_follows_a_fixed_or_an_auto_plan(tmp_path, epochs, factor, expected):
    """Fixed plan: ``epochs`` minus the burn-in SSOD epochs; auto plan (epochs 0): ssod_factor x the burn-in's
    iterations, in whole SSOD epochs (here 20 burn-in epochs of 10 labeled batches, 8 unlabeled batches an epoch)."""
    import torch

    from benchmarks import demo

    run = tmp_path / "ssod_s0"
    (run / "weights").mkdir(parents=True)
    (run / "split").mkdir()
    (run / "split/unlabeled.txt").write_text("".join(f"u{i}.jpg\n" for i in range(128)))
    args = {"epochs": epochs, "batch": 16, "ssod": {"unlabeled_ratio": 1}, "sched": {"ssod_factor": factor}}
    torch.save({"train_state": {"epoch": 20}, "args": args}, run / "weights/burn_in.pt")
    (run / "results.csv").write_text("epoch,train/iterations,metrics/mAP50,metrics/mAP50-95\n"
                                     "10,100,0.1,0.05\n20,200,0.2,0.1\n")
    assert demo.planned_steps(run) == (expected, 10)
