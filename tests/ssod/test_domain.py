"""Gradient reversal and the domain discriminator loss."""

import pytest
import torch
import torch.nn.functional as F

from effteacher.ssod.domain import DomainDiscriminator, da_ramp, domain_loss, grad_reverse


def test_grad_reverse_identity_forward_reversed_scaled_backward():
    x = torch.randn(3, 4, requires_grad=True)
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(12.0).view(3, 4)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(12.0).view(3, 4))


def _plain_loss(disc, fl, fu):
    """Same loss without the reversal layer (reference)."""
    labels = torch.tensor([0] * fl[0].shape[0] + [1] * fu[0].shape[0])
    out = [F.cross_entropy(torch.cat([a, b]), labels) for a, b in zip(disc(fl), disc(fu))]
    return torch.stack(out).mean()


def test_domain_loss_value_and_feature_gradient_sign():
    torch.manual_seed(0)
    disc = DomainDiscriminator([8, 16])
    fl = [torch.randn(2, 8, 4, 4, requires_grad=True), torch.randn(2, 16, 2, 2, requires_grad=True)]
    fu = [torch.randn(3, 8, 4, 4, requires_grad=True), torch.randn(3, 16, 2, 2, requires_grad=True)]
    loss = domain_loss(disc, fl, fu, coeff=0.5)
    ref = _plain_loss(disc, fl, fu)
    assert loss.shape == () and torch.allclose(loss, ref)
    feat_g = torch.autograd.grad(loss, fl + fu + list(disc.parameters()))
    ref_g = torch.autograd.grad(ref, fl + fu + list(disc.parameters()))
    n_feat = len(fl) + len(fu)
    for g, r in zip(feat_g[:n_feat], ref_g[:n_feat]):  # features: reversed and scaled
        assert r.abs().sum() > 0
        assert torch.allclose(g, -0.5 * r, atol=1e-7)
    for g, r in zip(feat_g[n_feat:], ref_g[n_feat:]):  # discriminator: ordinary gradient
        assert torch.allclose(g, r, atol=1e-7)


@pytest.mark.slow
def test_domain_loss_different_spatial_sizes_and_discriminator_learns():
    torch.manual_seed(0)
    disc = DomainDiscriminator([4])
    fl = [torch.randn(4, 4, 6, 6) + 1.0]
    fu = [torch.randn(4, 4, 3, 5) - 1.0]
    logits = disc(fl)
    assert logits[0].shape == (4, 2)
    opt = torch.optim.Adam(disc.parameters(), lr=0.05)
    first = domain_loss(disc, fl, fu).item()
    for _ in range(30):
        opt.zero_grad()
        loss = domain_loss(disc, fl, fu)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_da_ramp_linear_then_flat():
    assert [da_ramp(s, 4) for s in (0, 1, 2, 4, 100)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert da_ramp(0, 0) == 1.0 and da_ramp(-3, 4) == 0.0
