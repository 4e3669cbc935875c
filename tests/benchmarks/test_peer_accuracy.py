"""benchmarks/peer_accuracy.py: the split export, and each peer arm killed, resumed to the end and scored by our
evaluator on a tiny generated dataset."""

from __future__ import annotations

import csv
import signal
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import common, peer_accuracy, peer_runs


def test_split_export_is_effteachers_labeled_split(tiny_data: Path, tmp_path: Path) -> None:
    from effteacher.data.dataset import scan_labeled
    from effteacher.data.spec import load_spec
    from effteacher.data.split import build_split

    yml = peer_runs.export_split(str(tiny_data), "25%", 3, tmp_path / "ds")
    spec = load_spec(tiny_data)
    train = scan_labeled(spec.train, spec.names).records
    split = build_split(train, "25%", 3, nc=spec.nc)
    labeled = sorted(Path(train[i].path).resolve() for i in split.labeled)
    out = sorted(tmp_path.glob("ds/images/train/*"))
    assert sorted(p.resolve() for p in out) == labeled and len(labeled) == 6  # no unlabeled image
    assert (tmp_path / "ds/split/labeled.txt").read_text().split() == sorted(train[i].path for i in split.labeled)
    val = scan_labeled(spec.val, spec.names).records
    assert sorted(p.resolve() for p in tmp_path.glob("ds/images/val/*")) == sorted(Path(r.path).resolve() for r in val)
    by_path = {Path(r.path).resolve(): r for r in train}
    for img in out:  # labels written from what effteacher read
        r = by_path[img.resolve()]
        text = (img.parents[2] / "labels/train" / f"{img.stem}.txt").read_text()
        got = [list(map(float, ln.split())) for ln in text.splitlines()]
        assert [int(g[0]) for g in got] == r.cls.tolist()
        boxes = torch.tensor([g[1:] for g in got]).reshape(-1, 4)
        assert torch.allclose(boxes, torch.as_tensor(r.boxes).float().reshape(-1, 4), atol=1e-5)
    assert "unlabeled" not in yml.read_text() and yml.read_text().count("images/") == 2


def test_split_export_is_written_once_and_reused_by_arms_side_by_side(tiny_data: Path, tmp_path: Path) -> None:
    work = tmp_path / "ds"
    with ThreadPoolExecutor(2) as pool:  # two arms started together: one writes, the other waits and reuses
        ymls = list(pool.map(lambda _: peer_runs.export_split(str(tiny_data), "25%", 3, work), range(2)))
    assert ymls == [work / "data.yaml"] * 2
    marker = work / "images/train/in-use"  # a running peer's files must survive a later arm's start
    marker.touch()
    assert peer_runs.export_split(str(tiny_data), "25%", 3, work) == ymls[0] and marker.is_file()
    assert len(list((work / "images/train").iterdir())) == 7  # 6 labeled images and the marker


@pytest.mark.isolated  # imports yolov5
def test_yolov5_scores_ap_under_this_numpy() -> None:
    pytest.importorskip("yolov5")
    peer_runs.yolov5_offline_compat()
    from yolov5.utils.metrics import compute_ap

    # recall 0.5 at precision 1; yolov5 closes the curve at (1, 0) and integrates the line to it: 0.5 + 0.25
    ap, _, _ = compute_ap(np.array([0.25, 0.5]), np.array([1.0, 1.0]))
    assert ap == pytest.approx(0.75, abs=0.01)


def test_a_peers_epoch_trained_again_after_a_kill_counts_once(tmp_path: Path) -> None:
    """yolov5 writes an epoch's row before its last.pt: a kill between them repeats that epoch's row on resume."""
    (tmp_path / "results.csv").write_text(
        "               epoch,metrics/mAP_0.5,metrics/mAP_0.5:0.95\n"
        "                   0,  0.1,  0.05\n                   1,  0.2,  0.1\n"
        "                   1,  0.3,  0.15\n                   2,  0.4,  0.2\n")
    assert peer_accuracy.own_rows("yolov5", tmp_path) == [
        {"map": 0.05, "map50": 0.1}, {"map": 0.15, "map50": 0.3}, {"map": 0.2, "map50": 0.4}]


@pytest.mark.slow
@pytest.mark.isolated  # scores ultralytics in-process, which patches process-wide functions
@pytest.mark.parametrize("kind", peer_runs.PEERS)
def test_peer_arm_killed_resumed_and_scored(kind: str, tiny_data: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(kind)
    project = tmp_path / "bench" / Path(tiny_data).stem
    work = project / "yolo"
    yml = peer_runs.export_split(str(tiny_data), "50%", 0, work)
    name = peer_accuracy.run_names("50%", 0)[kind]
    params = {"data": str(yml), "imgsz": 64, "batch": 4, "epochs": 4, "patience": 100, "workers": 0,
              "project": str(project), "device": "cpu", "seed": 0, "fliplr": 0.0, "name": name}
    if kind == "yolov5":
        params["hyp"] = str(peer_runs.yolov5_hyp(work, 0.0))
    run = project / name
    proc = peer_runs.launch(kind, params, work)
    last = run / "weights/last.pt"
    try:  # killed once its first epoch is saved: paused, and killed only where last.pt is whole
        while proc.poll() is None:
            time.sleep(0.2)
            proc.send_signal(signal.SIGSTOP)
            if last.is_file() and zipfile.is_zipfile(last):
                break
            proc.send_signal(signal.SIGCONT)
    finally:
        peer_runs.stop(proc, signal.SIGKILL)
    assert (run / "weights/last.pt").is_file() and not (run / "done.json").exists()
    peer_runs.run_peer(kind, params, work)  # resumes from its last.pt
    log = (project / f"{name}.log").read_text()
    assert "Resuming training" in log
    with open(run / "results.csv") as f:
        epochs = [int(float(r[next(k for k in r if k.strip() == "epoch")])) for r in csv.DictReader(f)]
    # continued, not restarted: epochs never go back (a kill between an epoch's results row and its last.pt
    # trains that one epoch again, which the peer logs as a second row), and the scores keep one row an epoch
    assert epochs == sorted(epochs) and len(set(epochs)) == 4 and len(epochs) <= 5  # yolov5 0-3, ultralytics 1-4
    assert len(peer_accuracy.own_rows(kind, run)) == 4
    assert (run / "done.json").is_file() and (run / "weights/best.pt").is_file()
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    scores = peer_accuracy.summarise(project, str(tiny_data), "50%", [0], "cpu", 4, imgsz=64)
    arm = scores[0][kind]
    assert 0.0 <= arm.ours <= 1.0 and arm.epochs == 4 and arm.wall_s > 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"## peer_accuracy ({tiny_data})" in text and f"{kind} ({name}): ours mAP50-95" in text


@pytest.mark.isolated
def test_ultralytics_adapter_matches_its_own_nms(tmp_path: Path) -> None:
    """Scored through our layout (objectness 1) and our NMS, a yolov5nu keeps the boxes ultralytics' NMS keeps."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.nms import non_max_suppression

    from effteacher.models.postprocess import detections_from_output

    torch.manual_seed(0)
    model = DetectionModel("yolov5nu.yaml", nc=3, verbose=False)
    model.names = {0: "a", 1: "b", 2: "c"}
    for branch in model.model[-1].cv3:  # class scores around 0.5 instead of the prior's 0.01: boxes above conf
        torch.nn.init.normal_(branch[-1].bias, 0.0, 1.0)
    torch.save({"model": model, "train_args": {"imgsz": 64}}, tmp_path / "u.pt")
    backend = peer_runs.UltralyticsBackend(tmp_path / "u.pt")
    assert backend.names == ["a", "b", "c"] and backend.imgsz == (64, 64) and backend.stride == 32
    x = torch.rand(2, 3, 64, 96)
    ours = detections_from_output(backend(x), False, 0.3, 0.95, 300)
    with torch.inference_mode():
        theirs = non_max_suppression(backend.model(x)[0], 0.3, 0.95, max_det=300)
    for a, b in zip(ours, theirs):
        assert len(a) > 5 and len(b) > 5
        k = min(len(a), len(b), 20)
        assert torch.allclose(a[:k], b[:k], atol=1e-4)


@pytest.mark.slow
def test_sup_and_ctrl_branch_from_the_ssod_burn_in(tiny_data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """sup (as --supervised goes on) and ctrl (lambda_u 0) continue the SSOD arm's burn-in state: one plateau.
    Recorded without any peer arm, the line still names every scored arm and says the targets were not checked."""
    from benchmarks.branch import rows

    args = ["--data", str(tiny_data), "--labeled", "50%", "--imgsz", "64", "--max-epochs", "4", "--workers", "0",
            "--project", str(tmp_path)]
    with pytest.raises(SystemExit, match="train --arms ssod first"):
        peer_accuracy.main([*args, "--arms", "sup"])
    peer_accuracy.main([*args, "--arms", "ssod,sup,ctrl"])
    project = tmp_path / Path(tiny_data).stem
    names = peer_accuracy.run_names("50%", 0)
    ssod, sup, ctrl = (rows(project / names[k]) for k in ("ssod", "sup", "ctrl"))
    burn = int(torch.load(project / names["ssod"] / "weights/burn_in.pt",
                          weights_only=True)["train_state"]["epoch"])
    assert sup[:burn] == ctrl[:burn] == ssod[:burn] and len(sup) == len(ctrl) == len(ssod) == 4
    assert "unsup/obj_loss" in ctrl[-1] and not sup[-1].get("unsup/obj_loss")  # sup: labeled images only
    assert all((project / names[k] / "done.json").is_file() for k in ("sup", "ctrl"))
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    scores = peer_accuracy.main([*args, "--record"])
    assert set(scores[0]) == {"sup", "ssod", "ctrl"}
    line = next(ln for ln in (tmp_path / "RESULTS.md").read_text().splitlines() if ln.startswith("`peer_accuracy"))
    assert f"s0 sup {scores[0]['sup'].ours:.3f}, ssod {scores[0]['ssod'].ours:.3f}" in line
    assert "no peer arm finished: targets not checked" in line and "targets NOT met" in line
