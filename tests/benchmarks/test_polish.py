"""benchmarks/polish.py at a tiny size: supervised polishing and the control branch from one burn-in state."""

from __future__ import annotations

import pytest

from effteacher.data.sample import SampleConfig, generate

pytestmark = pytest.mark.slow


def test_polish_and_control_share_the_burn_in_and_its_length(tmp_path, monkeypatch):
    import benchmarks.common as common
    from benchmarks import polish
    from benchmarks.branch import rows, run_arm
    from effteacher.config import defaults_for, replace

    data = generate(tmp_path / "ds", SampleConfig(n_train=40, n_val=6, imgsz=64, min_digit=16, max_digit=28,
                                                  max_digits=2, digits=(0, 1)), progress=False)
    base = replace(defaults_for("sample"), data=str(data), imgsz=64, batch=4, workers=0, epochs=0, burn_in="auto",
                   **{"sched.min_steps": 2, "sched.max_steps": 8, "sched.patience_steps": 2, "sched.val_steps": 1,
                      "sched.ssod_factor": 1.0})
    src = run_arm(tmp_path / "runs", "ssod", base, labeled="25%", seed=0)
    polish.train(src, ["polish", "ctrl", "handover", "teacher_ema"], workers=0)
    burn, _ = polish.burn_in(src)
    pol, ctrl = rows(polish.arm_dir(src, "polish")), rows(polish.arm_dir(src, "ctrl"))
    assert pol[:burn] == ctrl[:burn] == rows(src)[:burn]  # one burn-in state
    burn_its = pol[burn - 1]["train/iterations"]
    # supervised after the plateau for ssod_factor (1.0) x the burn-in's iterations, LR annealed to lrf
    assert pol[-1]["train/iterations"] == 2 * burn_its and pol[-1]["lr"] < pol[burn - 1]["lr"]
    assert ctrl[-1]["train/iterations"] >= 2 * burn_its and "unsup/obj_loss" in ctrl[-1]
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    polish.summarise(src)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## polish (ssod)" in text and "polish within the control's band:" in text
    assert "handover " in text and "- handover (polish with sched.polish_handover)" in text
    assert "teacher_ema " in text and "- teacher_ema (polish with sched.polish_teacher_ema)" in text
    hand = rows(polish.arm_dir(src, "handover"))
    assert hand[:burn] == pol[:burn] and hand[-1]["train/iterations"] == pol[-1]["train/iterations"]
    import torch

    def ema(arm: str) -> dict:
        return torch.load(polish.arm_dir(src, arm) / "weights/last.pt", weights_only=True)["train_state"]["ema"]

    assert ema("handover")["tau"] == 0.0 and ema("polish")["tau"] > 0  # the branch handed over at its plateau
    assert ema("teacher_ema")["tau"] == 0.0 and ema("teacher_ema")["decay"] == ema("handover")["decay"]
