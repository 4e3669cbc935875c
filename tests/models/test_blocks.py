"""Conv-BN folding for inference: same outputs, no BatchNorm left in the Conv blocks, training models refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from effteacher.models.blocks import Conv, fuse_conv_bn
from effteacher.models.build import build_model


def _with_trained_bn_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, as after training (fresh BN is the identity)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def test_fused_model_gives_the_same_outputs_without_batchnorm():
    torch.manual_seed(0)
    model = _with_trained_bn_stats(build_model("n", 3)).eval()
    fused = fuse_conv_bn(copy.deepcopy(model))
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(ref, out))
    convs = [m for m in fused.modules() if isinstance(m, Conv)]
    assert convs and all(isinstance(m.bn, nn.Identity) and m.conv.bias is not None for m in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert fuse_conv_bn(fused) is fused  # already fused: nothing left to fold


def test_fuse_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="model.eval"):
        fuse_conv_bn(build_model("n", 3).train())
