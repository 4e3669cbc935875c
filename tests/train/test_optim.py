"""Optimizer parameter groups, LR lambdas, warmup interpolation and state round-trips."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from effteacher.config import OptimConfig
from effteacher.train.optim import (
    accumulate_steps,
    apply_warmup,
    build_optimizer,
    build_scheduler,
    lr_lambda,
    param_groups,
    warmup_accumulate,
    warmup_iters,
)
from effteacher.errors import ConfigError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),  # weight -> decay
        nn.BatchNorm2d(4),  # weight -> no_decay, bias -> bias
        nn.Conv2d(4, 2, 1),  # weight -> decay, bias -> bias
        nn.GroupNorm(1, 2),  # weight -> no_decay, bias -> bias
    )


def _groups(opt):
    return {g["name"]: g for g in opt.param_groups}


def test_accumulate_steps():
    assert accumulate_steps(16, 64) == 4
    assert accumulate_steps(64, 64) == 1
    assert accumulate_steps(128, 64) == 1
    assert accumulate_steps(24, 64) == 3  # round(2.67)
    assert accumulate_steps(1, 64) == 64


def test_param_groups_membership():
    net = _net()
    g = param_groups(net)
    ids = {k: {id(p) for p in v} for k, v in g.items()}
    assert ids["decay"] == {id(net[0].weight), id(net[2].weight)}
    assert ids["no_decay"] == {id(net[1].weight), id(net[3].weight)}
    assert ids["bias"] == {id(net[1].bias), id(net[2].bias), id(net[3].bias)}
    # every trainable parameter lands in exactly one group
    assert sum(len(v) for v in g.values()) == len(list(net.parameters()))


def test_param_groups_skip_frozen_and_shared():
    lin = nn.Linear(3, 3)
    net = nn.Sequential(lin, lin)  # shared
    net[0].bias.requires_grad_(False)
    g = param_groups(net)
    assert len(g["decay"]) == 1 and g["bias"] == []


@pytest.mark.parametrize("batch,wd_expected", [(16, 5e-4 * 16 * 4 / 64), (64, 5e-4), (24, 5e-4 * 24 * 3 / 64)])
def test_sgd_groups_and_decay(batch, wd_expected):
    opt = build_optimizer(_net(), OptimConfig(optimizer="sgd", lr0=0.01), batch)
    assert isinstance(opt, torch.optim.SGD)
    assert [g["name"] for g in opt.param_groups] == ["bias", "decay", "no_decay"]
    g = _groups(opt)
    assert g["decay"]["weight_decay"] == pytest.approx(wd_expected)
    assert g["bias"]["weight_decay"] == 0.0 and g["no_decay"]["weight_decay"] == 0.0
    for grp in opt.param_groups:
        assert grp["nesterov"] and grp["momentum"] == pytest.approx(0.937) and grp["lr"] == pytest.approx(0.01)


def test_adamw_betas_and_zero_decay_on_bias():
    cfg = OptimConfig(optimizer="adamw", lr0=0.001)
    opt = build_optimizer(_net(), cfg, 64)
    assert isinstance(opt, torch.optim.AdamW)
    g = _groups(opt)
    assert g["bias"]["betas"] == (0.937, 0.999)
    assert g["bias"]["weight_decay"] == 0.0  # AdamW default 0.01 must not leak in
    assert g["decay"]["weight_decay"] == pytest.approx(5e-4)


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="sgd or adamw"):
        build_optimizer(_net(), OptimConfig(optimizer="rmsprop"), 16)


def test_lr_lambda_endpoints():
    lin = lr_lambda(OptimConfig(lrf=0.01), 10)
    assert lin(0) == pytest.approx(1.0)
    assert lin(5) == pytest.approx(0.5 * 0.99 + 0.01)
    assert lin(10) == pytest.approx(0.01)
    assert lin(12) == pytest.approx(0.01)  # clamped beyond the end
    cos = lr_lambda(OptimConfig(lrf=0.1, cos_lr=True), 10)
    assert cos(0) == pytest.approx(1.0)
    assert cos(5) == pytest.approx((1.0 + 0.1) / 2)
    assert cos(10) == pytest.approx(0.1)
    vals = [cos(i) for i in range(11)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_warmup_iters():
    cfg = OptimConfig(warmup_epochs=3.0)
    assert warmup_iters(cfg, 100) == 300
    assert warmup_iters(cfg, 10) == 100  # at least 100
    assert warmup_iters(cfg, 10, cap=20) == 20  # tiny runs: capped
    assert warmup_iters(dataclasses.replace(cfg, warmup_epochs=0.0), 100) == 0


def test_warmup_accumulate_ramp():
    assert warmup_accumulate(0, 100, 16, 64) == 1
    assert warmup_accumulate(50, 100, 16, 64) == 2  # interp(50) = 2.5 -> round half even 2
    assert warmup_accumulate(100, 100, 16, 64) == 4
    assert warmup_accumulate(5, 0, 16, 64) == 4


def test_apply_warmup_start_middle_end():
    cfg = OptimConfig(optimizer="sgd", lr0=0.01, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    opt = build_optimizer(_net(), cfg, 16)
    build_scheduler(opt, cfg, 10)  # sets initial_lr
    lf0 = lr_lambda(cfg, 10)(0)
    apply_warmup(opt, 0, 100, lf0, cfg)
    g = _groups(opt)
    assert g["bias"]["lr"] == pytest.approx(0.1)
    assert g["decay"]["lr"] == 0.0 and g["no_decay"]["lr"] == 0.0
    assert g["decay"]["momentum"] == pytest.approx(0.8)
    apply_warmup(opt, 50, 100, lf0, cfg)
    assert g["bias"]["lr"] == pytest.approx((0.1 + 0.01) / 2)
    assert g["decay"]["lr"] == pytest.approx(0.005)
    assert g["no_decay"]["momentum"] == pytest.approx((0.8 + 0.937) / 2)
    apply_warmup(opt, 99, 100, 0.5, cfg)  # the epoch's lambda value scales the target
    assert g["decay"]["lr"] == pytest.approx(0.99 * 0.005)
    assert g["bias"]["lr"] == pytest.approx(0.1 + 0.99 * (0.005 - 0.1))
    before = [grp["lr"] for grp in opt.param_groups]
    apply_warmup(opt, 100, 100, 0.5, cfg)  # finished: untouched
    assert [grp["lr"] for grp in opt.param_groups] == before


def test_apply_warmup_adamw_betas():
    cfg = OptimConfig(optimizer="adamw", warmup_momentum=0.8, momentum=0.9)
    opt = build_optimizer(_net(), cfg, 16)
    apply_warmup(opt, 0, 10, 1.0, cfg)
    assert opt.param_groups[0]["betas"] == (pytest.approx(0.8), 0.999)


def test_scheduler_steps_per_epoch():
    cfg = OptimConfig(optimizer="sgd", lr0=0.01, lrf=0.01)
    opt = build_optimizer(_net(), cfg, 16)
    sch = build_scheduler(opt, cfg, 4)
    lrs = []
    for _ in range(4):
        opt.step()
        sch.step()
        lrs.append(opt.param_groups[1]["lr"])
    assert lrs[-1] == pytest.approx(0.01 * 0.01)
    assert lrs[1] == pytest.approx(0.01 * (0.5 * 0.99 + 0.01))


def test_optimizer_scheduler_state_roundtrip(tmp_path):
    cfg = OptimConfig(optimizer="sgd", lr0=0.01)
    net = _net()
    opt = build_optimizer(net, cfg, 16)
    sch = build_scheduler(opt, cfg, 10)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        sch.step()
    path = tmp_path / "s.pt"
    torch.save({"opt": opt.state_dict(), "sch": sch.state_dict(), "net": net.state_dict()}, path)
    state = torch.load(path, weights_only=True)

    net2 = _net()
    net2.load_state_dict(state["net"])
    opt2 = build_optimizer(net2, cfg, 16)
    sch2 = build_scheduler(opt2, cfg, 10)
    opt2.load_state_dict(state["opt"])
    sch2.load_state_dict(state["sch"])
    assert sch2.last_epoch == 3
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])
    assert [g["name"] for g in opt2.param_groups] == ["bias", "decay", "no_decay"]
    # one more identical step gives identical weights (momentum buffers restored)
    for n, o, s in ((net, opt, sch), (net2, opt2, sch2)):
        o.zero_grad()
        n(x).square().mean().backward()
        o.step()
        s.step()
    for p, q in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(p, q)
    assert opt2.param_groups[1]["lr"] == pytest.approx(0.01 * lr_lambda(cfg, 10)(4))


def test_resume_with_more_epochs_uses_new_lambda():
    cfg = OptimConfig(optimizer="sgd", lr0=0.01, lrf=0.01)
    opt = build_optimizer(_net(), cfg, 16)
    sch = build_scheduler(opt, cfg, 4)
    for _ in range(4):
        opt.step()
        sch.step()
    state = sch.state_dict()
    opt2 = build_optimizer(_net(), cfg, 16)
    sch2 = build_scheduler(opt2, cfg, 8)  # extended run
    sch2.load_state_dict(state)
    opt2.step()
    sch2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01 * (max(1 - 5 / 8, 0) * 0.99 + 0.01))
    assert math.isfinite(opt2.param_groups[0]["lr"])
