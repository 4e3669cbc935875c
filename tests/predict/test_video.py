"""`effteacher predict` on videos and streams: the annotated video, per-frame labels and crops, --vid-stride,
--classes, a stream read through its opener, Ctrl-C and unreadable frames; batched inference equals one at a time."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import effteacher.data.video as video
from effteacher.cli import app
from effteacher.data.sources import find_sources
from effteacher.errors import ConfigError, DatasetError
from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
from effteacher.predict.command import run_predict
from effteacher.predict.predictor import Detector

NAMES = ["cat", "dog"]
FRAMES, FPS, SIZE = 12, 10.0, 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from effteacher.models.build import build_model

    torch.manual_seed(0)
    model = build_model("n", nc=2).eval()
    return save_checkpoint(tmp_path_factory.mktemp("w") / "best.pt", make_checkpoint(model, NAMES, 64, "model", 1,
                                                                                      {}, {}))


def write_clip(path: Path, frames: int = FRAMES, fps: float = FPS, size: int = SIZE) -> Path:
    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    assert w.isOpened()
    for _ in range(frames):
        w.write(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    w.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("v") / "clip.mp4")


def read_back(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames actually decoded, fps, (w, h)) of a written video."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(3)), int(cap.get(4)))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, fps, size


@pytest.mark.slow
def test_video_annotated_labels_and_crops(tmp_path: Path, weights: Path, clip: Path) -> None:
    res = CliRunner().invoke(app, ["predict", str(clip), "--weights", str(weights), "--conf", "0.001", "--save-txt",
                                   "--save-crop", "--no-save-conf", "--project", str(tmp_path), "--name", "exp"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "exp"
    assert read_back(out / "clip.mp4") == (FRAMES, pytest.approx(FPS), (SIZE, SIZE))
    labels = sorted(p.name for p in (out / "labels").glob("*.txt"))
    assert labels and set(labels) <= {f"clip_{i}.txt" for i in range(1, FRAMES + 1)}
    rows = np.loadtxt(out / "labels" / labels[0], ndmin=2)
    assert rows.shape[1] == 5 and ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()  # --no-save-conf: 5 columns
    crops = list((out / "crops").rglob("*.jpg"))
    assert crops and {p.parent.name for p in crops} <= set(NAMES)
    assert all(p.name.startswith("clip_") for p in crops)
    assert f"{FRAMES} frames 64x64" in " ".join(res.output.split())


@pytest.mark.slow
def test_vid_stride_halves_frames_and_classes_filter(tmp_path: Path, weights: Path, clip: Path) -> None:
    out = run_predict(clip, weights, conf=0.001, vid_stride=2, classes=(1,), save_txt=True, project=tmp_path,
                      name="exp")
    n, fps, _ = read_back(out / "clip.mp4")
    assert (n, fps) == (FRAMES // 2, pytest.approx(FPS / 2))  # every second frame, same duration
    numbers = {int(p.stem.split("_")[1]) for p in (out / "labels").glob("*.txt")}
    assert numbers and numbers <= set(range(1, FRAMES + 1, 2))  # source frame numbers 1, 3, 5, ...
    classes = np.concatenate([np.loadtxt(p, ndmin=2)[:, 0] for p in (out / "labels").glob("*.txt")])
    assert set(classes.tolist()) == {1.0}
    with pytest.raises(ConfigError, match="--classes 5: the model has 2 classes"):
        run_predict(clip, weights, classes=(5,), project=tmp_path, name="bad")
    assert not (tmp_path / "bad").exists()


class _Capture:
    """A VideoCapture stand-in that reads a local file and raises KeyboardInterrupt (Ctrl-C) at frame ``stop``,
    or fails to decode frame ``bad``."""

    def __init__(self, path: str, stop: int = 0, bad: int = 0) -> None:
        self.cap, self.n, self.stop, self.bad = cv2.VideoCapture(path), 0, stop, bad

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.n += 1
        if self.n == self.stop:
            raise KeyboardInterrupt
        ok, img = self.cap.read()
        return (False, None) if self.n == self.bad else (ok, img)

    def __getattr__(self, name: str):
        return getattr(self.cap, name)


@pytest.mark.slow
def test_stream_through_its_opener(tmp_path: Path, weights: Path, clip: Path, monkeypatch) -> None:
    opened: list[object] = []

    def opener(target):
        opened.append(target)
        return _Capture(str(clip))

    monkeypatch.setattr(video, "open_capture", opener)
    res = CliRunner().invoke(app, ["predict", "rtsp://camera.local:554/live", "--weights", str(weights),
                                   "--save-txt", "--conf", "0.001", "--project", str(tmp_path), "--name", "exp"])
    assert res.exit_code == 0, res.output
    assert opened == ["rtsp://camera.local:554/live"]
    out = tmp_path / "exp"
    assert read_back(out / "camera.local_554_live.mp4")[:1] == (FRAMES,)
    assert any((out / "labels").glob("camera.local_554_live_*.txt"))
    assert "the stream ended or dropped after 12 frames" in " ".join(res.output.split())

    monkeypatch.setattr(video, "open_capture", lambda target: cv2.VideoCapture(str(tmp_path / "nothing.mp4")))
    res = CliRunner().invoke(app, ["predict", "0", "--weights", str(weights), "--project", str(tmp_path)])
    assert res.exit_code == 1 and "ERROR cannot open camera 0; check the camera index" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # nothing created for the failed run


@pytest.mark.slow
def test_ctrl_c_and_bad_frames_close_the_video(tmp_path: Path, weights: Path, clip: Path, monkeypatch) -> None:
    monkeypatch.setattr(video, "open_capture", lambda target: _Capture(str(target), stop=6))
    out = run_predict(clip, weights, project=tmp_path, name="stop")
    assert read_back(out / "clip.mp4")[0] == 5  # the frames before Ctrl-C, in a playable file

    monkeypatch.setattr(video, "open_capture", lambda target: _Capture(str(target), bad=4))
    out = run_predict(clip, weights, project=tmp_path, name="bad", save_txt=True, conf=0.001)
    assert read_back(out / "clip.mp4")[0] == FRAMES - 1
    assert not (out / "labels" / "clip_4.txt").exists()


def test_sources_with_videos(tmp_path: Path) -> None:
    write_clip(tmp_path / "b.mp4", frames=2)
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    assert [p.name for p in find_sources(tmp_path, videos=True)] == ["a.jpg", "b.mp4"]
    assert [p.name for p in find_sources(tmp_path)] == ["a.jpg"]
    with pytest.raises(DatasetError, match="a video; videos are read by `effteacher predict`"):
        find_sources(tmp_path / "b.mp4")
    (tmp_path / "a.jpg").unlink()
    with pytest.raises(DatasetError, match="only 1 video files"):
        find_sources(tmp_path)
    assert video.is_stream("0") and video.is_stream("HTTP://x/y") and not video.is_stream("clip.mp4")


@pytest.mark.slow
def test_batched_equals_one_at_a_time(weights: Path, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import effteacher.predict.predictor as predictor

    seen: list[torch.Tensor] = []
    real = predictor.detections_from_output

    def spy(out, *a, **k):  # the model's decoded outputs per image, before NMS
        seen.extend(o.clone() for o in out)
        return real(out, *a, **k)

    monkeypatch.setattr(predictor, "detections_from_output", spy)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64)] * 5 + [(48, 80), (64, 64)]]
    det = Detector(weights, conf=0.001)
    one = det(images)
    outs_one = list(seen)
    seen.clear()
    many = det(images, batch=4)  # mixed sizes in one batch: grouped by letterbox shape
    assert len(one) == len(many) == len(images) == len(outs_one) == len(seen)
    for a, b in zip(outs_one, seen):  # same letterbox, same model outputs
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)
    for a, b in zip(one, many):
        assert a.shape == b.shape and len(a) > 0
        _same_detections(a, b)
    frames = list(det.video(clip, batch=5))
    assert [d.frame for d in frames] == list(range(1, FRAMES + 1))
    for a, b in zip(frames, det.video(clip)):
        _same_detections(a, b)


def _same_detections(a, b) -> None:
    """The same detections up to NMS ties. A batched forward differs from a single one in the last float bits; where
    a random model's scores tie, NMS may keep another of the tied boxes (the outputs before NMS are compared exactly
    above), so the counts and the top scores are compared here."""
    assert abs(len(a) - len(b)) <= max(2, len(a) // 20)
    n = min(len(a), len(b), 10)
    np.testing.assert_allclose(np.sort(a.scores)[::-1][:n], np.sort(b.scores)[::-1][:n], atol=1e-4)


@pytest.mark.slow
def test_predict_batch_option_same_labels(tmp_path: Path, weights: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        cv2.imwrite(str(src / f"{i}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    a = run_predict(src, weights, conf=0.001, save_txt=True, project=tmp_path, name="one")
    b = run_predict(src, weights, conf=0.001, save_txt=True, batch=4, project=tmp_path, name="four")
    files = sorted((a / "labels").glob("*.txt"))
    assert [f.name for f in files] == sorted(f.name for f in (b / "labels").glob("*.txt")) and files
    for f in files:  # the same labels up to NMS ties of the random model (see _same_detections)
        x, y = np.loadtxt(f, ndmin=2), np.loadtxt(b / "labels" / f.name, ndmin=2)
        assert abs(len(x) - len(y)) <= max(2, len(x) // 20)
        n = min(len(x), len(y), 10)
        np.testing.assert_allclose(np.sort(x[:, 5])[::-1][:n], np.sort(y[:, 5])[::-1][:n], atol=1e-4)
    assert len(list((a / "labels").glob("*.txt"))) == 5
