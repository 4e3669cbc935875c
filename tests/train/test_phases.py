"""train/phases.py: the hand-over before supervised polishing (sched.polish_teacher_ema / polish_handover)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from effteacher.ssod.teacher import ModelEMA
from effteacher.train.phases import hand_over_to_polish


def _parts(ema_decay: float, ema_tau: float):
    torch.manual_seed(0)
    student = nn.Linear(4, 2)
    ema = ModelEMA(student, decay=ema_decay, tau=ema_tau)
    with torch.no_grad():  # the student has moved away from its EMA
        student.weight.add_(1.0)
    # 10 polishing epochs of 50 batches, no accumulation: 500 optimizer steps -> the teacher rule's 0.99
    plan = SimpleNamespace(burn=5, nb_burn=50, accumulate=1, last_epoch=lambda: 15)
    parts = SimpleNamespace(plan=plan, model=student, ema=ema)
    run = SimpleNamespace(cfg=SimpleNamespace(ssod=SimpleNamespace(teacher_decay=0.0)),
                          ctx=SimpleNamespace(is_main=False))
    return parts, run


@pytest.mark.parametrize("restart", [False, True])
def test_a_shorter_supervised_ema_takes_the_teacher_rule(restart):
    parts, run = _parts(ema_decay=0.95, ema_tau=4.0)
    before = parts.model.weight.clone()
    hand_over_to_polish(parts, run, restart=restart)
    assert parts.ema.decay == pytest.approx(0.99) and parts.ema.tau == 0.0
    if restart:  # polish_handover: the student continues from the EMA weights
        assert torch.equal(parts.model.weight, parts.ema.module.weight)
    else:  # polish_teacher_ema: the student keeps its weights
        assert torch.equal(parts.model.weight, before)


def test_a_longer_supervised_ema_is_kept_with_its_ramp():
    parts, run = _parts(ema_decay=0.999, ema_tau=200.0)
    hand_over_to_polish(parts, run, restart=False)
    assert parts.ema.decay == pytest.approx(0.999) and parts.ema.tau == pytest.approx(200.0)


def test_an_explicit_teacher_decay_is_used():
    parts, run = _parts(ema_decay=0.95, ema_tau=4.0)
    run.cfg.ssod.teacher_decay = 0.998
    hand_over_to_polish(parts, run, restart=False)
    assert parts.ema.decay == pytest.approx(0.998)
