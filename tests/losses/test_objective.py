# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests of the whole BiGAN training objective (joint, ALAD and reconstruction terms)."""

from __future__ import annotations

import pytest
import torch

from monai_bigan.losses import BiGANLoss, BiGANObjective, ObjectiveOutput
from monai_bigan.networks import BiGAN, ImagePairDiscriminator, LatentPairDiscriminator
from monai_bigan.utils import BiGANKeys
from tests.conftest import tiny_bigan

D_ALAD = {BiGANKeys.D_XZ_LOSS, BiGANKeys.D_XX_LOSS, BiGANKeys.D_ZZ_LOSS}
EG_ALAD = {BiGANKeys.EG_XZ_LOSS, BiGANKeys.CYCLE_X_LOSS, BiGANKeys.CYCLE_Z_LOSS}


def _net(spatial_dims: int, dxx: bool = False, dzz: bool = False) -> BiGAN:
    """A tiny BiGAN, in eval mode so that the discriminators' dropout does not make repeated calls differ."""
    net = tiny_bigan(spatial_dims)
    in_shape = (1,) + (16,) * spatial_dims
    if dxx:
        net.discriminator_xx = ImagePairDiscriminator(spatial_dims, in_shape, channels=(4, 8), strides=(2, 2))
    if dzz:
        net.discriminator_zz = LatentPairDiscriminator(net.latent_size, hidden_features=(16, 8))
    return net.eval()


def _forward(net: BiGAN, spatial_dims: int, batch: int = 3) -> dict:
    """x, z and the encoder and generator outputs, with gradients to E and G; None for the cycles that are unused."""
    x = torch.rand((batch, 1) + (16,) * spatial_dims) * 2 - 1
    z = torch.randn(batch, net.latent_size)
    enc, fakes = net.encoder(x), net.generator(z)
    return {
        "reals": x,
        "enc_latents": enc,
        "fakes": fakes,
        "latents": z,
        "discriminator_xx": net.discriminator_xx,
        "recons": net.generator(enc),
        "discriminator_zz": net.discriminator_zz,
        "cycle_latents": net.encoder(fakes),
    }


def _expected(net: BiGAN, t: dict, for_discriminator: bool, smoothing: float = 0.0) -> dict:
    """The adversarial terms computed directly with BiGANLoss, with the trainer's keys."""
    loss = BiGANLoss(smoothing)
    x, enc, fakes, z = t["reals"], t["enc_latents"], t["fakes"], t["latents"]
    terms = {}
    keys = (BiGANKeys.D_XZ_LOSS, BiGANKeys.D_XX_LOSS, BiGANKeys.D_ZZ_LOSS)
    if not for_discriminator:
        keys = (BiGANKeys.EG_XZ_LOSS, BiGANKeys.CYCLE_X_LOSS, BiGANKeys.CYCLE_Z_LOSS)
    terms[keys[0]] = loss(net.discriminator(x, enc)[0], net.discriminator(fakes, z)[0], for_discriminator)
    if net.discriminator_xx is not None:
        d_xx = net.discriminator_xx
        terms[keys[1]] = loss(d_xx(x, x)[0], d_xx(x, t["recons"])[0], for_discriminator)
    if net.discriminator_zz is not None:
        d_zz = net.discriminator_zz
        terms[keys[2]] = loss(d_zz(z, z)[0], d_zz(z, t["cycle_latents"])[0], for_discriminator)
    return terms


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("dxx,dzz", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_discriminator_loss_is_the_sum_of_its_terms(spatial_dims, dxx, dzz, smoothing):
    net = _net(spatial_dims, dxx, dzz)
    t = _forward(net, spatial_dims)
    out = BiGANObjective(label_smoothing=smoothing, recon_weight=3.0).discriminator_loss(net.discriminator, **t)
    assert isinstance(out, ObjectiveOutput)
    expected = _expected(net, t, for_discriminator=True, smoothing=smoothing)
    alad = dxx or dzz
    # without ALAD the loss is the joint term and no term is named, as in the trainer's output
    assert set(out.terms) == (set(expected) if alad else set())
    for key, value in out.terms.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    hand = expected[BiGANKeys.D_XZ_LOSS]
    if dxx:
        hand = hand + expected[BiGANKeys.D_XX_LOSS]
    if dzz:
        hand = hand + expected[BiGANKeys.D_ZZ_LOSS]
    torch.testing.assert_close(out.loss, hand, rtol=0, atol=0)
    assert out.loss.ndim == 0 and out.loss > 0
    # the joint discriminator's logits of this step
    real_logits = net.discriminator(t["reals"], t["enc_latents"])[0]
    torch.testing.assert_close(out.real_logits, real_logits)
    assert out.real_logits.shape == out.fake_logits.shape == (3, 1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("dxx,dzz", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("recon_weight", [0.0, 2.5])
def test_encoder_generator_loss_is_the_sum_of_its_terms(spatial_dims, dxx, dzz, recon_weight):
    net = _net(spatial_dims, dxx, dzz)
    t = _forward(net, spatial_dims)
    # label smoothing applies to the discriminator's real target only, never to the encoder-generator loss
    out = BiGANObjective(label_smoothing=0.2, recon_weight=recon_weight).encoder_generator_loss(net.discriminator, **t)
    expected = _expected(net, t, for_discriminator=False)
    alad = dxx or dzz
    keys = ({BiGANKeys.EG_ADV_LOSS} | (set(expected) if alad else set())) | (
        {BiGANKeys.RECON_LOSS} if recon_weight else set()
    )
    assert set(out.terms) == keys
    for key in set(expected) & set(out.terms):
        torch.testing.assert_close(out.terms[key], expected[key], rtol=0, atol=0)
    adversarial = expected[BiGANKeys.EG_XZ_LOSS]
    if dxx:
        adversarial = adversarial + expected[BiGANKeys.CYCLE_X_LOSS]
    if dzz:
        adversarial = adversarial + expected[BiGANKeys.CYCLE_Z_LOSS]
    torch.testing.assert_close(out.terms[BiGANKeys.EG_ADV_LOSS], adversarial, rtol=0, atol=0)
    if recon_weight:
        recon = (t["recons"] - t["reals"]).abs().mean()
        torch.testing.assert_close(out.terms[BiGANKeys.RECON_LOSS], recon, rtol=0, atol=0)
        torch.testing.assert_close(out.loss, adversarial + recon_weight * recon, rtol=0, atol=0)
    else:
        torch.testing.assert_close(out.loss, adversarial, rtol=0, atol=0)


def test_reconstruction_term_weight():
    net = _net(2)
    t = _forward(net, 2)
    t["recons"] = t["reals"] + 0.5  # |x - G(E(x))| = 0.5 everywhere
    base = BiGANObjective().encoder_generator_loss(net.discriminator, **t)
    for weight in (1.0, 4.0):
        out = BiGANObjective(recon_weight=weight).encoder_generator_loss(net.discriminator, **t)
        torch.testing.assert_close(out.terms[BiGANKeys.RECON_LOSS], torch.tensor(0.5))
        torch.testing.assert_close(out.terms[BiGANKeys.EG_ADV_LOSS], base.loss)
        torch.testing.assert_close(out.loss, base.loss + 0.5 * weight)
    # the reconstruction term belongs to the encoder + generator step only
    d_plain = BiGANObjective().discriminator_loss(net.discriminator, **t)
    d_recon = BiGANObjective(recon_weight=4.0).discriminator_loss(net.discriminator, **t)
    torch.testing.assert_close(d_plain.loss, d_recon.loss, rtol=0, atol=0)
    assert BiGANKeys.RECON_LOSS not in d_recon.terms
    with pytest.raises(ValueError, match="recons"):
        BiGANObjective(recon_weight=1.0).encoder_generator_loss(net.discriminator, **dict(t, recons=None))


def _grads(module: torch.nn.Module) -> bool:
    """Whether any parameter of ``module`` got a non-zero gradient."""
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_discriminator_loss_trains_the_discriminators_only(spatial_dims):
    net = _net(spatial_dims, dxx=True, dzz=True).train()
    t = _forward(net, spatial_dims)  # not detached: the objective detaches E(x), G(z), G(E(x)) and E(G(z))
    BiGANObjective(recon_weight=1.0).discriminator_loss(net.discriminator, **t).loss.backward()
    for name in ("discriminator", "discriminator_xx", "discriminator_zz"):
        assert _grads(getattr(net, name)), name
    for name in ("encoder", "generator"):
        assert all(p.grad is None for p in getattr(net, name).parameters()), name


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoder_generator_loss_trains_encoder_and_generator_through_frozen_discriminators(spatial_dims):
    net = _net(spatial_dims, dxx=True, dzz=True).train()
    t = _forward(net, spatial_dims)
    discriminators = net.discriminators()
    for module in discriminators:  # the caller freezes them, as BiGANTrainer does
        module.requires_grad_(False)
    BiGANObjective(recon_weight=1.0).encoder_generator_loss(net.discriminator, **t).loss.backward()
    assert _grads(net.encoder) and _grads(net.generator)
    assert all(p.grad is None for module in discriminators for p in module.parameters())


@pytest.mark.parametrize("term", ["cycle_x", "cycle_z", "recon"])
def test_each_term_alone_reaches_encoder_and_generator(term):
    """With the joint discriminator's logits zeroed, only the chosen term carries a gradient into E and G."""
    net = _net(2, dxx=term == "cycle_x", dzz=term == "cycle_z").train()
    for module in net.discriminators():
        module.requires_grad_(False)
    t = _forward(net, 2)

    def zero_joint(x, z):
        logits, features = net.discriminator(x, z)
        return logits * 0, features

    objective = BiGANObjective(recon_weight=1.0 if term == "recon" else 0.0)
    objective.encoder_generator_loss(zero_joint, **t).loss.backward()
    assert _grads(net.encoder) and _grads(net.generator)


def test_custom_adversarial_loss_is_called_in_order_with_step_labels():
    net = _net(2, dxx=True, dzz=True)
    t = _forward(net, 2)
    calls = []

    def adversarial(real_logits, fake_logits, for_discriminator):
        calls.append((real_logits.shape, for_discriminator))
        return torch.tensor(float(len(calls)))

    objective = BiGANObjective(adversarial_loss=adversarial)
    d = objective.discriminator_loss(net.discriminator, **t)
    assert [c[1] for c in calls] == [True] * 3
    assert d.terms == {BiGANKeys.D_XZ_LOSS: 1.0, BiGANKeys.D_XX_LOSS: 2.0, BiGANKeys.D_ZZ_LOSS: 3.0}
    assert float(d.loss) == 6.0
    calls.clear()
    eg = objective(net.discriminator, for_discriminator=False, **t)  # forward dispatches to the two steps
    assert [c[1] for c in calls] == [False] * 3
    assert calls[0][0] == (3, 1)  # the joint logits, then D_xx's and D_zz's
    assert {k: float(v) for k, v in eg.terms.items()} == {
        BiGANKeys.EG_XZ_LOSS: 1.0,
        BiGANKeys.CYCLE_X_LOSS: 2.0,
        BiGANKeys.CYCLE_Z_LOSS: 3.0,
        BiGANKeys.EG_ADV_LOSS: 6.0,
    }


def test_forward_matches_the_step_methods():
    net = _net(2, dxx=True)
    t = _forward(net, 2)
    objective = BiGANObjective(label_smoothing=0.1, recon_weight=2.0)
    for flag, method in ((True, objective.discriminator_loss), (False, objective.encoder_generator_loss)):
        a, b = objective(net.discriminator, for_discriminator=flag, **t), method(net.discriminator, **t)
        torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
        assert a.terms.keys() == b.terms.keys()


def test_missing_inputs_and_invalid_arguments():
    net = _net(2, dxx=True, dzz=True)
    t = _forward(net, 2)
    objective = BiGANObjective()
    for step in (objective.discriminator_loss, objective.encoder_generator_loss):
        with pytest.raises(ValueError, match="recons"):
            step(net.discriminator, **dict(t, recons=None))
        with pytest.raises(ValueError, match="cycle_latents"):
            step(net.discriminator, **dict(t, cycle_latents=None))
    # the cycles are ignored without their discriminators
    out = objective.discriminator_loss(
        net.discriminator, **dict(t, discriminator_xx=None, discriminator_zz=None, recons=None, cycle_latents=None)
    )
    assert out.terms == {}
    with pytest.raises(ValueError, match="recon_weight"):
        BiGANObjective(recon_weight=-1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        BiGANObjective(label_smoothing=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        BiGANObjective(label_smoothing=0.1, adversarial_loss=BiGANLoss(0.1))


def test_holds_its_adversarial_loss_as_a_submodule():
    objective = BiGANObjective(label_smoothing=0.3, recon_weight=5)
    assert isinstance(objective.adversarial_loss, BiGANLoss) and objective.adversarial_loss.label_smoothing == 0.3
    assert objective.recon_weight == 5.0 and isinstance(objective.recon_weight, float)
    assert dict(objective.named_children()) == {"adversarial_loss": objective.adversarial_loss}
    custom = BiGANLoss(0.2)
    assert BiGANObjective(adversarial_loss=custom).adversarial_loss is custom
