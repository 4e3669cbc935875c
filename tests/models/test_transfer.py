"""Transfer learning: head rows by class name, effteacher checkpoints across class sets, torchvision ResNets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from effteacher.models.checkpoint import make_checkpoint, save_checkpoint
from effteacher.models.pretrained import init_from_weights, read_weights, weights_variant
from effteacher.errors import CheckpointError
from effteacher.models.build import build_model
from effteacher.models.transfer import class_map, head_output_keys, remap_head_rows, transfer_state


def test_class_map_by_name() -> None:
    assert class_map(["person", "Car", "dog"], ["dog", "cat", "car"]) == [2, None, 1]
    assert class_map([], ["a"]) == [None]


def test_remap_head_rows_hand_made() -> None:
    na = 2
    src = torch.arange(na * (5 + 3), dtype=torch.float32).view(-1, 1)  # rows: a0: 0..7, a1: 8..15
    dst = torch.full((na * (5 + 2), 1), -1.0)
    out = remap_head_rows(src, dst, na, [2, None])  # dst class 0 = src class 2, dst class 1 is new
    assert out.view(-1).tolist() == [0, 1, 2, 3, 4, 7, -1, 8, 9, 10, 11, 12, 15, -1]
    assert dst.eq(-1).all()  # input untouched
    with pytest.raises(ValueError, match="do not fit"):
        remap_head_rows(src, dst, na, [0, 1, 2])


def test_transfer_state_across_class_sets() -> None:
    torch.manual_seed(0)
    src = build_model("n", 3)
    dst = build_model("n", 2)
    fresh = {k: v.clone() for k, v in dst.state_dict().items()}
    t = transfer_state(src.state_dict(), ["cat", "dog", "bird"], dst, ["bird", "fish"])
    assert t.total == len(fresh) and t.n == t.total  # every tensor gets something (head: box/obj rows)
    assert t.classes_kept == 1 and "1/2 kept by name" in t.summary()
    dst.load_state_dict(t.state)
    sd = dst.state_dict()
    torch.testing.assert_close(sd["body.layers.4.cv1.conv.weight"], src.state_dict()["body.layers.4.cv1.conv.weight"])
    for key in head_output_keys(dst):
        s, d, f = src.state_dict()[key], sd[key], fresh[key]
        for a in range(3):
            torch.testing.assert_close(d[a * 7:a * 7 + 5], s[a * 8:a * 8 + 5])  # box + objectness
            torch.testing.assert_close(d[a * 7 + 5], s[a * 8 + 5 + 2])  # bird
            torch.testing.assert_close(d[a * 7 + 6], f[a * 7 + 6])  # fish: fresh init (bias prior)
    same = transfer_state(src.state_dict(), ["a", "b", "c"], build_model("n", 3), ["A", "b", "c"])
    assert same.classes_kept == 3 and "class outputs" not in same.summary()


def test_init_from_effteacher_checkpoint_and_teacher_copy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from effteacher.ssod.teacher import ModelEMA

    torch.manual_seed(0)
    src = build_model("n", 3)
    path = save_checkpoint(tmp_path / "best.pt", make_checkpoint(src, ["a", "b", "c"], 64, "teacher", 1, {}, {}))
    model = build_model("n", 5)
    n = init_from_weights(model, str(path), ["c", "x", "y", "z", "a"])
    out = "".join(capsys.readouterr().out.split())
    assert f"transferred{n}/{len(model.state_dict())}tensors" in out and "2/5keptbyname" in out
    ema = ModelEMA(model)  # what the trainer builds right after: the teacher starts from the same weights
    for k, v in model.state_dict().items():
        assert torch.equal(ema.module.state_dict()[k], v), k
    assert weights_variant(path) == "n"
    with pytest.raises(CheckpointError, match="no tensor fits model 'retina-r18'.*--model n"):
        init_from_weights(build_model("retina-r18", 3), str(path), ["a", "b", "c"])


def test_torchvision_resnet_backbone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    ref = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    assert read_weights(path)[0] == "resnet" and weights_variant(path) == "retina-r18"
    model = build_model("retina-r18", 2)
    n = init_from_weights(model, str(path), ["a", "b"])
    assert n == len(ref.state_dict()) - 2  # all but fc.weight / fc.bias
    assert "ImageNet resnet18 backbone" in capsys.readouterr().out
    torch.testing.assert_close(model.body.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    # the ImageNet normalisation happens inside the model: its stem sees (x - mean) / std
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref.eval()
    model.eval()
    seen = {}
    model.body.backbone.conv1.register_forward_pre_hook(lambda m, i: seen.update(inp=i[0]))
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(seen["inp"], (x - mean) / std)
    assert "body.input_mean" in model.state_dict()
    with pytest.raises(CheckpointError, match="retina-r18 or retina-r50, not 'n'"):
        init_from_weights(build_model("n", 2), str(path), ["a", "b"])
