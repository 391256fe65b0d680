from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks import eval_mode

from monai_bigan.inferers import AnomalyScorer
from monai_bigan.transforms import AnomalyScored
from tests.conftest import tiny_bigan


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("term", ["cross_entropy", "feature_matching"])
@pytest.mark.parametrize("residual", ["l1", "l2", "signed"])
def test_maps_match_hand_computation(spatial_dims, term, residual):
    net = tiny_bigan(spatial_dims)
    scorer = AnomalyScorer(net, residual=residual, discriminator_term=term)
    x = torch.rand((2, 1) + (16,) * spatial_dims) * 2 - 1
    with eval_mode(scorer):
        maps = scorer(x)
        z = net.encoder(x)
        recon = net.generator(z)
        logits, feats = net.discriminator(x, z)
        if term == "cross_entropy":
            ld = -torch.log(torch.sigmoid(logits)).reshape(-1)
        else:
            _, feats_rec = net.discriminator(recon, z)
            ld = (feats - feats_rec).abs().mean(dim=1)
    diff = x - recon
    res = {"l1": diff.abs(), "l2": diff**2, "signed": diff}[residual]
    assert maps.shape == (2, 3) + x.shape[2:]
    torch.testing.assert_close(maps[:, 0:1], res)
    torch.testing.assert_close(maps[:, 1:2], recon)
    for i in range(2):
        torch.testing.assert_close(maps[i, 2], torch.full(x.shape[2:], float(ld[i])), rtol=1e-5, atol=1e-6)
        # the total that AnomalyScored forms equals alpha * L_G + (1 - alpha) * L_D
        out = AnomalyScored("pred", alpha=0.9, slice_dim=None)({"pred": maps[i]})
        expected = 0.9 * res[i].mean() + 0.1 * ld[i]
        torch.testing.assert_close(out["score"], expected.reshape(1), rtol=1e-5, atol=1e-6)


def test_cross_entropy_is_bce_of_real_pair():
    net = tiny_bigan(2)
    scorer = AnomalyScorer(net)
    x = torch.rand(3, 1, 16, 16)
    with eval_mode(scorer):
        maps = scorer(x)
        logits, _ = net.discriminator(x, net.encoder(x))
    bce = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none").reshape(-1)
    torch.testing.assert_close(maps[:, 2].flatten(1)[:, 0], bce)


def test_scorer_is_scriptable(tmp_path):
    scorer = AnomalyScorer(tiny_bigan(3), discriminator_term="feature_matching")
    x = torch.rand(1, 1, 16, 16, 16)
    scripted = torch.jit.script(scorer)
    torch.jit.save(scripted, str(tmp_path / "scorer.ts"))
    loaded = torch.jit.load(str(tmp_path / "scorer.ts"))
    with eval_mode(scorer), eval_mode(loaded):
        torch.testing.assert_close(loaded(x), scorer(x))


def test_invalid_options():
    with pytest.raises(ValueError, match="residual"):
        AnomalyScorer(tiny_bigan(2), residual="l3")
    with pytest.raises(ValueError, match="discriminator_term"):
        AnomalyScorer(tiny_bigan(2), discriminator_term="hinge")


def _trained_tiny_bigan(spatial_dims: int) -> torch.nn.Module:
    """A tiny BiGAN whose generator was fitted a little, so that its output depends on the code."""
    torch.manual_seed(0)
    net = tiny_bigan(spatial_dims)
    optimizer = torch.optim.Adam(list(net.encoder.parameters()) + list(net.generator.parameters()), lr=1e-2)
    x = torch.rand((8, 1) + (16,) * spatial_dims) * 2 - 1
    for _ in range(20):
        optimizer.zero_grad()
        (net.generator(net.encoder(x)) - x).abs().mean().backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return net.eval()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_latent_refinement_lowers_the_residual(spatial_dims):
    net = _trained_tiny_bigan(spatial_dims)
    x = torch.rand((3, 1) + (16,) * spatial_dims) * 2 - 1
    with torch.no_grad():  # as in MONAI's evaluators: the refinement re-enables gradients for the codes only
        plain = AnomalyScorer(net)(x)[:, 0].flatten(1).mean(1)
        refined = AnomalyScorer(net, refine_steps=10, refine_lr=0.05)(x)[:, 0].flatten(1).mean(1)
    assert bool((refined < plain).all())
    assert all(p.grad is None for p in net.parameters())  # the networks got no gradients


def test_refinement_steps_are_bounded_and_scripting_skips_them():
    net = tiny_bigan(2)
    with pytest.raises(ValueError, match="refine_steps"):
        AnomalyScorer(net, refine_steps=AnomalyScorer.max_refine_steps + 1)
    with pytest.raises(ValueError, match="refine_lr"):
        AnomalyScorer(net, refine_steps=1, refine_lr=0.0)
    scripted = torch.jit.script(AnomalyScorer(net.eval(), refine_steps=5))
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), AnomalyScorer(net)(x))


def test_feature_matching_xx_needs_dxx():
    with pytest.raises(ValueError, match="D_xx"):
        AnomalyScorer(tiny_bigan(2), discriminator_term="feature_matching_xx")
