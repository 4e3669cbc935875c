"""Per-class class gate of reliable pseudo boxes (ssod.cls_thres_mode): hand-made sums and detections."""

from __future__ import annotations

import pytest
import torch

from effteacher.errors import CheckpointError, ConfigError
from effteacher.ssod.class_gate import ClassGate, adaptive_class_gate, class_sums
from effteacher.ssod.pseudo import assign_pseudo_labels


def det(cls: int, obj: float, prob: float, x: float = 10.0) -> list[float]:
    return [x, 10, x + 20, 30, obj * prob, cls, obj]


def test_adaptive_gate_scales_by_class_confidence_and_keeps_unseen():
    # class 0: p = (0.9*1 + 0.9*1)/2 = 0.9; class 1: p = 0.45; class 2 unseen
    sums = torch.tensor([[1.8, 0.45, 0.0], [2.0, 1.0, 0.0]])
    gate = adaptive_class_gate(sums, 0.5, prev=torch.tensor([0.5, 0.5, 0.3]))
    assert gate.tolist() == pytest.approx([0.5, 0.25, 0.3])
    assert adaptive_class_gate(torch.zeros(2, 3), 0.5, torch.tensor([0.1, 0.2, 0.3])).tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_class_sums_weight_class_probability_by_objectness():
    dets = [torch.tensor([det(0, 0.8, 0.5), det(1, 0.2, 1.0)]), torch.zeros(0, 7), torch.tensor([det(0, 0.4, 1.0)])]
    s = class_sums(dets, 3)
    assert s[0].tolist() == pytest.approx([0.4 + 0.4, 0.2, 0.0])  # sum obj * prob
    assert s[1].tolist() == pytest.approx([1.2, 0.2, 0.0])  # sum obj
    p0 = float(s[0, 0] / s[1, 0])  # the low-objectness box weighs less than in a plain mean (0.75)
    assert p0 == pytest.approx(0.8 / 1.2)
    assert class_sums([torch.zeros(0, 7)], 2).abs().sum() == 0


def test_class_gate_epochs_modes_gather_and_state():
    fixed = ClassGate(2, 0.5, "fixed")
    fixed.observe([torch.tensor([det(1, 0.9, 0.2)])])
    fixed.end_epoch()
    assert fixed.thres.tolist() == [0.5, 0.5]

    g = ClassGate(2, 0.5, "adaptive")
    g.observe([torch.tensor([det(0, 1.0, 0.8), det(1, 1.0, 0.4)])])
    # a second DDP rank saw the same boxes again: the gathered sums are added, the ratio is unchanged
    g.end_epoch(all_gather=lambda t: torch.cat([t, t]))
    assert g.thres.tolist() == pytest.approx([0.5, 0.25])
    g.end_epoch()  # an epoch with no boxes keeps the gates
    assert g.thres.tolist() == pytest.approx([0.5, 0.25])

    g2 = ClassGate(2, 0.5, "adaptive")
    g2.load_state_dict(g.state_dict())
    assert g2.thres.tolist() == pytest.approx([0.5, 0.25])
    branched = ClassGate(2, 0.6, "adaptive")  # other cls_thres: the config's gate, not the saved one
    branched.load_state_dict(g.state_dict())
    assert branched.thres.tolist() == pytest.approx([0.6, 0.6])
    from_fixed = ClassGate(2, 0.5, "adaptive")
    from_fixed.load_state_dict(ClassGate(2, 0.0, "fixed").state_dict())
    assert from_fixed.thres.tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(CheckpointError, match="classes"):
        ClassGate(3, 0.5, "adaptive").load_state_dict(g.state_dict())
    with pytest.raises(ConfigError, match="cls_thres_mode"):
        ClassGate(2, 0.5, "perclass")


def test_assigner_takes_per_class_gates():
    d = torch.tensor([det(0, 0.9, 0.4, x=5.0), det(1, 0.9, 0.4, x=35.0)])  # both reliable by objectness
    t, _ = assign_pseudo_labels([d], torch.eye(3)[None], (64, 64), torch.tensor([0.1, 0.1]), torch.tensor([0.5, 0.5]),
                                score_mode="obj", cls_thres=torch.tensor([0.5, 0.3]))
    w_cls = {int(r[1]): float(r[6]) for r in t}
    assert w_cls == {0: 0.0, 1: 1.0}  # class prob 0.4: below class 0's gate, above class 1's
