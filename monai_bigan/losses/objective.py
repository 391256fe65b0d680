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
"""
The whole BiGAN training objective: the joint adversarial term, ALAD's cycle-consistency terms and the weighted
reconstruction term, for the discriminator step and for the encoder + generator step.

See BiGAN (Donahue et al., arXiv:1605.09782), EGBAD (Zenati et al., arXiv:1802.06222) and ALAD (Zenati et al.,
"Adversarially Learned Anomaly Detection", arXiv:1812.02288).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn

from monai_bigan.losses.bigan_loss import BiGANLoss
from monai_bigan.utils.enums import BiGANKeys

__all__ = ["BiGANObjective", "ObjectiveOutput"]

PairDiscriminator = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ObjectiveOutput(NamedTuple):
    """
    What :py:meth:`BiGANObjective.discriminator_loss` and :py:meth:`BiGANObjective.encoder_generator_loss` return.

    Attributes:
        loss: the scalar total to backpropagate.
        terms: its named parts, keyed by :py:class:`monai_bigan.utils.BiGANKeys` as the trainer reports them
            (see the two methods for which keys are present).
        real_logits: joint discriminator logits ``D(x, E(x))`` of this step, usually ``[B, 1]``.
        fake_logits: joint discriminator logits ``D(G(z), z)`` of this step, usually ``[B, 1]``.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    real_logits: torch.Tensor
    fake_logits: torch.Tensor


class BiGANObjective(nn.Module):
    """
    The training objective of a BiGAN / EGBAD, with ALAD's optional cycle-consistency discriminators and an optional
    L1 reconstruction term; the single place where the loss terms are combined.

    With ``adv(real_logits, fake_logits, for_discriminator)`` the adversarial loss (by default
    :py:class:`BiGANLoss`), ``D`` the joint discriminator, ``D_xx`` and ``D_zz`` ALAD's optional pair discriminators
    and ``w`` the ``recon_weight``:

    - discriminator step (:py:meth:`discriminator_loss`), with ``E(x)``, ``G(z)``, ``G(E(x))`` and ``E(G(z))``
      detached so that only the discriminators are trained:

      - ``d_xz_loss = adv(D(x, E(x)), D(G(z), z), True)``
      - ``d_xx_loss = adv(D_xx(x, x), D_xx(x, G(E(x))), True)``, only with ``D_xx``
      - ``d_zz_loss = adv(D_zz(z, z), D_zz(z, E(G(z))), True)``, only with ``D_zz``
      - ``d_loss`` is their sum.

    - encoder + generator step (:py:meth:`encoder_generator_loss`), gradients flowing into E and G:

      - ``eg_xz_loss = adv(D(x, E(x)), D(G(z), z), False)`` (flipped labels, the non-saturating loss)
      - ``cycle_x_loss = adv(D_xx(x, x), D_xx(x, G(E(x))), False)``, only with ``D_xx`` (ALAD's ``cost_x``)
      - ``cycle_z_loss = adv(D_zz(z, z), D_zz(z, E(G(z))), False)``, only with ``D_zz`` (ALAD's ``cost_z``)
      - ``eg_adv_loss`` is their sum; ``recon_loss = mean |x - G(E(x))|`` when ``w > 0``;
        ``eg_loss = eg_adv_loss + w * recon_loss``.

    The discriminators are called with ``(first, second)`` and return ``(logits, features)``. The objective only
    computes: the caller runs the encoder and generator, decides the autocast context, and, for the encoder +
    generator step, passes discriminators that should get no gradient frozen (``requires_grad_(False)``) and
    unwrapped from ``DistributedDataParallel``, as :py:class:`monai_bigan.engines.BiGANTrainer` does.

    Args:
        label_smoothing: one-sided label smoothing of the default :py:class:`BiGANLoss`, in ``[0, 1)``.
        recon_weight: weight ``w`` of the L1 reconstruction term ``|x - G(E(x))|`` (mean) of the encoder + generator
            loss, as f-AnoGAN trains its encoder; 0 gives the plain BiGAN objective.
        adversarial_loss: another adversarial loss, called as ``adversarial_loss(real_logits, fake_logits,
            for_discriminator=...)`` and returning a scalar; ``None`` uses ``BiGANLoss(label_smoothing)``.

    Raises:
        ValueError: when ``recon_weight`` is negative, when ``label_smoothing`` is not in ``[0, 1)``, or when both
            ``adversarial_loss`` and a non-zero ``label_smoothing`` are given.

    Example::

        objective = BiGANObjective(label_smoothing=0.1, recon_weight=10.0)

        # 2D: x [B, 1, 64, 64], z and E(x) [B, 64]
        net = BiGAN(Encoder(2, (1, 64, 64), 64), Generator(2, 64, (1, 64, 64)), JointDiscriminator(2, (1, 64, 64), 64))
        x, z = torch.randn(8, 1, 64, 64), torch.randn(8, 64)
        enc, fakes = net.encoder(x), net.generator(z)
        recons = net.generator(enc)  # G(E(x)), needed as recon_weight > 0
        d_loss, d_terms, real_logits, fake_logits = objective.discriminator_loss(net.discriminator, x, enc, fakes, z)
        # d_terms == {} without D_xx / D_zz; real_logits and fake_logits are [8, 1]
        net.discriminator.requires_grad_(False)
        eg = objective.encoder_generator_loss(net.discriminator, x, enc, fakes, z, recons=recons)
        eg.loss.backward()  # eg.terms: {"eg_adv_loss": ..., "recon_loss": ...}
        net.discriminator.requires_grad_(True)

        # 3D with ALAD's D_xx and D_zz: x [B, 1, 32, 32, 32], z and E(x) [B, 128]
        shape = (1, 32, 32, 32)
        net = BiGAN(
            Encoder(3, shape, 128), Generator(3, 128, shape), JointDiscriminator(3, shape, 128),
            discriminator_xx=ImagePairDiscriminator(3, shape), discriminator_zz=LatentPairDiscriminator(128),
        )
        x, z = torch.randn(2, *shape), torch.randn(2, 128)
        enc, fakes = net.encoder(x), net.generator(z)
        d_loss, d_terms, _, _ = objective.discriminator_loss(
            net.discriminator, x, enc, fakes, z,
            discriminator_xx=net.discriminator_xx, recons=net.generator(enc),
            discriminator_zz=net.discriminator_zz, cycle_latents=net.encoder(fakes),
        )
        # d_terms: {"d_xz_loss": ..., "d_xx_loss": ..., "d_zz_loss": ...}, summing to d_loss
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        recon_weight: float = 0.0,
        adversarial_loss: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be non-negative, got {recon_weight}.")
        if adversarial_loss is not None and label_smoothing != 0:
            raise ValueError(
                "label_smoothing configures the default BiGANLoss; with a custom adversarial_loss set the smoothing "
                f"on that loss instead (got label_smoothing={label_smoothing})."
            )
        self.adversarial_loss = BiGANLoss(label_smoothing) if adversarial_loss is None else adversarial_loss
        self.recon_weight = float(recon_weight)

    def forward(
        self,
        discriminator: PairDiscriminator,
        reals: torch.Tensor,
        enc_latents: torch.Tensor,
        fakes: torch.Tensor,
        latents: torch.Tensor,
        for_discriminator: bool,
        discriminator_xx: PairDiscriminator | None = None,
        recons: torch.Tensor | None = None,
        discriminator_zz: PairDiscriminator | None = None,
        cycle_latents: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """
        :py:meth:`discriminator_loss` when ``for_discriminator`` is true, else :py:meth:`encoder_generator_loss`.
        """
        step = self.discriminator_loss if for_discriminator else self.encoder_generator_loss
        return step(
            discriminator,
            reals,
            enc_latents,
            fakes,
            latents,
            discriminator_xx=discriminator_xx,
            recons=recons,
            discriminator_zz=discriminator_zz,
            cycle_latents=cycle_latents,
        )

    def discriminator_loss(
        self,
        discriminator: PairDiscriminator,
        reals: torch.Tensor,
        enc_latents: torch.Tensor,
        fakes: torch.Tensor,
        latents: torch.Tensor,
        discriminator_xx: PairDiscriminator | None = None,
        recons: torch.Tensor | None = None,
        discriminator_zz: PairDiscriminator | None = None,
        cycle_latents: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """
        Loss of the discriminator step. ``enc_latents``, ``fakes``, ``recons`` and ``cycle_latents`` are detached
        here (passing detached tensors is fine), so the loss trains the discriminators only.

        Args:
            discriminator: joint discriminator ``D(x, z)``.
            reals: real batch ``x``, ``[B, C, H, W]`` (2D) or ``[B, C, H, W, D]`` (3D).
            enc_latents: codes ``E(x)``, ``[B, latent_size]``.
            fakes: generated batch ``G(z)``, shaped as ``reals``.
            latents: prior samples ``z``, ``[B, latent_size]``.
            discriminator_xx: ALAD's ``D_xx(x, x')``, or ``None``.
            recons: reconstructions ``G(E(x))``, shaped as ``reals``; required with ``discriminator_xx``.
            discriminator_zz: ALAD's ``D_zz(z, z')``, or ``None``.
            cycle_latents: cycled codes ``E(G(z))``, ``[B, latent_size]``; required with ``discriminator_zz``.

        Returns:
            the :py:class:`ObjectiveOutput` ``(loss, terms, real_logits, fake_logits)``. ``terms`` is empty without
            ``D_xx`` and ``D_zz`` (``loss`` is then the joint term); with either it holds ``d_xz_loss`` and
            ``d_xx_loss`` and/or ``d_zz_loss``, whose sum is ``loss``.

        Raises:
            ValueError: when ``discriminator_xx`` is given without ``recons`` or ``discriminator_zz`` without
                ``cycle_latents``.
        """
        return self._adversarial(
            True,
            discriminator,
            reals,
            enc_latents.detach(),
            fakes.detach(),
            latents,
            discriminator_xx,
            None if recons is None else recons.detach(),
            discriminator_zz,
            None if cycle_latents is None else cycle_latents.detach(),
        )

    def encoder_generator_loss(
        self,
        discriminator: PairDiscriminator,
        reals: torch.Tensor,
        enc_latents: torch.Tensor,
        fakes: torch.Tensor,
        latents: torch.Tensor,
        discriminator_xx: PairDiscriminator | None = None,
        recons: torch.Tensor | None = None,
        discriminator_zz: PairDiscriminator | None = None,
        cycle_latents: torch.Tensor | None = None,
    ) -> ObjectiveOutput:
        """
        Loss of the joint encoder + generator step, with flipped labels, gradients flowing through ``enc_latents``,
        ``fakes``, ``recons`` and ``cycle_latents`` into E and G. The discriminators are not frozen here: freeze
        them (``requires_grad_(False)``) for the backward pass so they accumulate no gradient.

        Args:
            discriminator: joint discriminator ``D(x, z)``.
            reals: real batch ``x``, ``[B, C, H, W]`` (2D) or ``[B, C, H, W, D]`` (3D).
            enc_latents: codes ``E(x)``, ``[B, latent_size]``.
            fakes: generated batch ``G(z)``, shaped as ``reals``.
            latents: prior samples ``z``, ``[B, latent_size]``.
            discriminator_xx: ALAD's ``D_xx(x, x')``, or ``None``.
            recons: reconstructions ``G(E(x))``, shaped as ``reals``; required with ``discriminator_xx`` or a
                positive ``recon_weight``.
            discriminator_zz: ALAD's ``D_zz(z, z')``, or ``None``.
            cycle_latents: cycled codes ``E(G(z))``, ``[B, latent_size]``; required with ``discriminator_zz``.

        Returns:
            the :py:class:`ObjectiveOutput` ``(loss, terms, real_logits, fake_logits)``. ``terms`` always holds
            ``eg_adv_loss`` (the adversarial part of ``loss``); with ``D_xx`` or ``D_zz`` also ``eg_xz_loss`` and
            ``cycle_x_loss`` and/or ``cycle_z_loss``, which sum to ``eg_adv_loss``; with a positive ``recon_weight``
            also ``recon_loss``, unweighted, so that ``loss = eg_adv_loss + recon_weight * recon_loss``.

        Raises:
            ValueError: when a term lacks its input (``recons`` or ``cycle_latents``).
        """
        adversarial, terms, real_logits, fake_logits = self._adversarial(
            False,
            discriminator,
            reals,
            enc_latents,
            fakes,
            latents,
            discriminator_xx,
            recons,
            discriminator_zz,
            cycle_latents,
        )
        terms = {BiGANKeys.EG_ADV_LOSS: adversarial, **terms}
        loss = adversarial
        if self.recon_weight > 0:
            if recons is None:
                raise ValueError(f"recons (G(E(x))) is required when recon_weight > 0 (got {self.recon_weight}).")
            recon_loss = (recons - reals).abs().mean()
            terms[BiGANKeys.RECON_LOSS] = recon_loss
            loss = loss + self.recon_weight * recon_loss
        return ObjectiveOutput(loss, terms, real_logits, fake_logits)

    def _adversarial(
        self,
        for_discriminator: bool,
        discriminator: PairDiscriminator,
        reals: torch.Tensor,
        enc_latents: torch.Tensor,
        fakes: torch.Tensor,
        latents: torch.Tensor,
        discriminator_xx: PairDiscriminator | None,
        recons: torch.Tensor | None,
        discriminator_zz: PairDiscriminator | None,
        cycle_latents: torch.Tensor | None,
    ) -> ObjectiveOutput:
        """The joint term plus ALAD's terms when their discriminators are given, with labels for one step."""
        if discriminator_xx is not None and recons is None:
            raise ValueError("recons (G(E(x))) is required with discriminator_xx.")
        if discriminator_zz is not None and cycle_latents is None:
            raise ValueError("cycle_latents (E(G(z))) is required with discriminator_zz.")
        if for_discriminator:
            xz_key, xx_key, zz_key = BiGANKeys.D_XZ_LOSS, BiGANKeys.D_XX_LOSS, BiGANKeys.D_ZZ_LOSS
        else:
            xz_key, xx_key, zz_key = BiGANKeys.EG_XZ_LOSS, BiGANKeys.CYCLE_X_LOSS, BiGANKeys.CYCLE_Z_LOSS
        adv = self.adversarial_loss
        # the call order (D on real then fake pairs, then D_xx, then D_zz) fixes the random stream of their dropout
        real_logits, _ = discriminator(reals, enc_latents)
        fake_logits, _ = discriminator(fakes, latents)
        loss = adv(real_logits, fake_logits, for_discriminator=for_discriminator)
        terms: dict[str, torch.Tensor] = {}
        if discriminator_xx is not None:
            terms[xx_key] = adv(
                discriminator_xx(reals, reals)[0],
                discriminator_xx(reals, recons)[0],
                for_discriminator=for_discriminator,
            )
        if discriminator_zz is not None:
            terms[zz_key] = adv(
                discriminator_zz(latents, latents)[0],
                discriminator_zz(latents, cycle_latents)[0],
                for_discriminator=for_discriminator,
            )
        if terms:
            terms = {xz_key: loss, **terms}
            loss = sum(terms.values())  # type: ignore[assignment]
        return ObjectiveOutput(loss, terms, real_logits, fake_logits)
