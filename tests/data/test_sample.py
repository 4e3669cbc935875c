"""The bundled sample dataset generator: deterministic, right counts, valid labels, generated once."""

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from effteacher.cli import app
from effteacher.data.dataset import scan_labeled
from effteacher.data.sample import SampleConfig, ensure_sample
from effteacher.data.spec import load_spec, resolve_images
from effteacher.errors import DatasetError

TINY = SampleConfig(n_train=16, n_val=4, imgsz=128, background_frac=0.2)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_sample_deterministic_and_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path / "cache"))
    ya = ensure_sample(tmp_path / "a", TINY)
    yb = ensure_sample(tmp_path / "b", TINY)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb  # byte-identical: seeded generator, no global state
    assert ya == tmp_path / "a" / "sample.yaml"
    spec = load_spec(ya)
    assert spec.names == [str(i) for i in range(10)]
    assert len(resolve_images(spec.train)) == 16 and len(resolve_images(spec.val)) == 4
    res = scan_labeled(spec.train + spec.val, spec.names, progress=False)
    assert res.messages == [] and res.n_corrupt == 0 and len(res.records) == 20
    assert all(r.shape == (128, 128) for r in res.records)
    assert 1 <= res.n_background <= 10
    boxes = np.concatenate([r.boxes for r in res.records])
    cls = np.concatenate([r.cls for r in res.records])
    assert len(cls) >= 20 and cls.min() >= 0 and cls.max() <= 9 and len(np.unique(cls)) >= 6
    assert np.all(boxes[:, 2:] * 128 >= 4) and np.all(boxes[:, 3] * 128 <= 0.5 * 128 + 4)
    x1y1 = boxes[:, :2] - boxes[:, 2:] / 2
    x2y2 = boxes[:, :2] + boxes[:, 2:] / 2
    assert np.all(x1y1 >= 0) and np.all(x2y2 <= 1)
    assert (tmp_path / "a" / "images" / "train" / "000000.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG
    other = ensure_sample(tmp_path / "c", SampleConfig(n_train=16, n_val=4, imgsz=128, background_frac=0.2, seed=1))
    assert _files(other.parent) != fa  # the seed matters


def test_generated_once_and_killed_generation_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path))
    root = tmp_path / "sample-v2"
    stale = tmp_path / ".sample-v2.partial-999999999"  # a killed generation (no such process)
    (stale / "images").mkdir(parents=True)
    y = ensure_sample(cfg=TINY)
    assert y == root / "sample.yaml" and (root / ".complete").is_file() and not stale.exists()
    mtime = (root / "images" / "train" / "000000.jpg").stat().st_mtime_ns
    assert ensure_sample(cfg=TINY) == y
    assert (root / "images" / "train" / "000000.jpg").stat().st_mtime_ns == mtime  # not regenerated
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not a complete effteacher sample dataset"):
        ensure_sample(tmp_path / "mine", TINY)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "user data"


@pytest.mark.slow
def test_default_sample_via_load_spec_yaml_and_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFTEACHER_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    spec = load_spec("sample")
    assert spec.root == tmp_path / "sample-v2"
    assert len(resolve_images(spec.train)) == 500 and len(resolve_images(spec.val)) == 200
    repo_yaml = Path(__file__).resolve().parents[2] / "data" / "sample.yaml"
    spec2 = load_spec(repo_yaml)  # `generate: sample` + path under $EFFTEACHER_CACHE: the same data
    assert spec2.root == spec.root and spec2.names == spec.names and spec2.train == spec.train
    r = CliRunner().invoke(app, ["check", "--data", "sample"])
    assert r.exit_code == 0, r.output
    assert "train: 500 images" in r.output.replace("\n", " ") and "0 problems" in r.output


def test_sample_large_profile_tiny(tmp_path):
    """sample-large's generator options at a tiny size: its 5 classes only, small digits, valid boxes, and val
    handwriting drawn from the part of the digit bank train never uses."""
    from dataclasses import replace

    from effteacher.data.sample import BUILTIN

    cfg = replace(BUILTIN["sample-large"], n_train=24, n_val=8)
    y = ensure_sample(tmp_path / "large", cfg)
    spec = load_spec(y)
    assert spec.names == ["3", "5", "6", "8", "9"]
    res = scan_labeled(spec.train + spec.val, spec.names, progress=False)
    assert res.messages == [] and len(res.records) == 32 and all(r.shape == (128, 128) for r in res.records)
    boxes = np.concatenate([r.boxes for r in res.records])
    assert len(boxes) >= 32 and np.all(boxes[:, 3] * 128 <= 0.45 * 128 + 4)
    assert np.median(boxes[:, 3] * 128) < 24  # small digits (9-32 px, log-uniform, before rotation)
    from effteacher.data.sample import _sklearn_digits, split_bank

    bank = _sklearn_digits()
    parts = split_bank(bank, True)
    tr, va = parts["train"][0].reshape(len(parts["train"][0]), -1), parts["val"][0].reshape(len(parts["val"][0]), -1)
    assert len(tr) + len(va) == len(bank[0]) and not (tr[:, None, :] == va[None, :, :]).all(2).any()
    assert all(set(p[1].tolist()) == set(range(10)) for p in parts.values())  # every digit on both sides
    assert split_bank(bank, False)["val"] is bank


def _generate_after(barrier, root, out):
    barrier.wait()
    out.put(str(ensure_sample(root, TINY)))


def test_concurrent_generation_of_one_dataset(tmp_path):
    """Runs started together after the dataset's settings changed: one regenerates it, the others wait for it,
    none removes the folder another has just made."""
    ensure_sample(tmp_path / "same", SampleConfig(n_train=8, n_val=4, imgsz=128, background_frac=0.2, seed=1))
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_generate_after, args=(barrier, tmp_path / "same", out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert {out.get(timeout=5) for _ in procs} == {str(tmp_path / "same" / "sample.yaml")}
    assert (tmp_path / "same" / ".complete").is_file() and not list(tmp_path.glob(".same.partial-*"))
    assert len(resolve_images(load_spec(tmp_path / "same" / "sample.yaml").train)) == TINY.n_train
