"""The bundled `demo` dataset (`make run`): its generator options and its shipped profile."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from effteacher.config import defaults_for
from effteacher.data.dataset import scan_labeled
from effteacher.data.sample import BUILTIN, ensure_sample
from effteacher.data.spec import load_spec


def test_demo_generator_tiny(tmp_path):
    """3 classes (digits 0, 1, 4), large digits at 96 px: valid boxes, none tiny."""
    cfg = replace(BUILTIN["demo"], n_train=20, n_val=6)
    spec = load_spec(ensure_sample(tmp_path / "demo", cfg))
    assert spec.names == ["0", "1", "4"]
    res = scan_labeled(spec.train + spec.val, spec.names, progress=False)
    assert res.messages == [] and len(res.records) == 26 and all(r.shape == (96, 96) for r in res.records)
    boxes = np.concatenate([r.boxes for r in res.records])
    assert len(boxes) >= 20 and set(np.unique(boxes[:, 0]).astype(int)) <= {0, 1, 2}
    assert np.median(boxes[:, 3] * 96) > 18  # large digits (18-42 px tall, log-uniform, before rotation)


def test_demo_profile():
    """`--data demo` trains the demo's schedule: 96 px, 3,000 burn-in iterations at a constant LR, then SSOD for
    half as many, the teacher's short EMA."""
    cfg = defaults_for("demo")
    assert (cfg.imgsz, cfg.burn_in, cfg.epochs) == (96, "auto", 0) and cfg.ssod.teacher_decay == 0.99
    assert (cfg.sched.min_steps, cfg.sched.max_steps, cfg.sched.ssod_factor) == (3000, 3000, 0.5)
