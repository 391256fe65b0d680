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
@pytest.mark.parametrize("residual", ["l1", "l2"])
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
    res = diff.abs() if residual == "l1" else diff**2
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
