"""benchmarks/gpu_profile.py in smoke mode on CPU: every region timed, loader vs model compared, nothing recorded."""

from __future__ import annotations

from benchmarks import common, gpu_profile


def test_smoke_on_cpu() -> None:
    before = common.RESULTS.read_text()
    lines = gpu_profile.main(["--smoke", "--device", "cpu"])
    assert common.RESULTS.read_text() == before
    assert [line.split(":")[0] for line in lines[:2]] == ["batch 2 fp32", "batch 4 fp32"]
    for line in lines[:2]:
        for part in gpu_profile.PARTS:
            ms = float(line.split(f"{part} ")[1].split(",")[0])
            assert ms >= 0, line
    assert lines[2].startswith("loader ") and ("loader-bound" in lines[2] or "model-bound" in lines[2])


def test_both_target_assignments_are_profiled() -> None:
    # the loss's masked candidates (the GPU default) and compacted positives (the CPU default) each show up as the
    # 'assign' region, and the patched functions are restored afterwards
    from effteacher.losses import detection

    before = (detection.assign_targets, detection.assign_candidates)
    for sync_free in (True, False):
        r = gpu_profile.step_profile(gpu_profile.torch.device("cpu"), 64, 2, False, 1, sync_free=sync_free)
        assert r["assign"] > 0 and r["img/s"] > 0 and "syncs" not in r
    assert (detection.assign_targets, detection.assign_candidates) == before
