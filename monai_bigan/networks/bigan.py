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
Container of the three BiGAN networks: encoder, generator and joint discriminator, plus ALAD's optional
cycle-consistency discriminators.

Grouping them in one module gives a single state dict to save and load, and the operations used for anomaly scoring
(EGBAD): encode, generate, reconstruct and discriminate. See BiGAN (Donahue et al., "Adversarial Feature Learning",
arXiv:1605.09782), EGBAD (Zenati et al., "Efficient GAN-Based Anomaly Detection", arXiv:1802.06222) and ALAD
(Zenati et al., "Adversarially Learned Anomaly Detection", arXiv:1812.02288).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

__all__ = ["BiGAN"]


class BiGAN(nn.Module):
    """
    BiGAN/EGBAD container holding an encoder ``E``, a generator ``G`` and a joint discriminator ``D``.

    ``forward(x)`` returns the reconstruction ``G(E(x))``, the input of the EGBAD residual anomaly score. The
    networks are usually :class:`monai_bigan.networks.Encoder`, :class:`monai_bigan.networks.Generator` and
    :class:`monai_bigan.networks.JointDiscriminator`, but any modules with the same call signatures work:
    ``encoder(x) -> z``, ``generator(z) -> x`` and ``discriminator(x, z) -> (logits, features)``; the encoder must
    also have an int ``latent_size`` attribute for :attr:`latent_size`. The container can be scripted with
    ``torch.jit.script`` when its networks can; ``encode``, ``generate``, ``reconstruct`` and ``discriminate`` are
    exported, but :attr:`latent_size`, :meth:`discriminators` and :meth:`discriminator_parameters` are not (read
    ``scripted.encoder.latent_size`` there). See BiGAN (arXiv:1605.09782) and EGBAD (arXiv:1802.06222).

    ALAD (arXiv:1812.02288) adds two optional discriminators, trained by
    :class:`monai_bigan.engines.BiGANTrainer` when present: ``discriminator_xx`` (``D_xx``, usually
    :class:`monai_bigan.networks.ImagePairDiscriminator`) on image pairs, real ``(x, x)`` against fake
    ``(x, G(E(x)))``, and ``discriminator_zz`` (``D_zz``, usually :class:`monai_bigan.networks.LatentPairDiscriminator`)
    on code pairs, real ``(z, z)`` against fake ``(z, E(G(z)))``. Both default to ``None``: the state dict then holds
    the ``encoder``, ``generator`` and ``discriminator`` keys only, so checkpoints of a plain BiGAN still load. The
    discriminator optimizer must cover all of :meth:`discriminator_parameters`, and the encoder + generator one
    ``encoder`` and ``generator`` only.

    Args:
        encoder: maps images ``[B, C, *spatial]`` to codes ``[B, L]``.
        generator: maps codes ``[B, L]`` to images ``[B, C, *spatial]``.
        discriminator: maps an image-code pair to ``(logits [B, 1], features [B, F])``.
        discriminator_xx: optional ALAD ``D_xx``, maps an image pair ``(x, x')`` to ``(logits [B, 1], features
            [B, F])``.
        discriminator_zz: optional ALAD ``D_zz``, maps a code pair ``(z, z')`` to ``(logits [B, 1], features
            [B, F])``.

    Example::

        from monai_bigan.networks import (
            BiGAN, Encoder, Generator, ImagePairDiscriminator, JointDiscriminator, LatentPairDiscriminator
        )

        # 2D: [B, 1, 64, 64] images, 128-dim codes
        net = BiGAN(
            Encoder(2, (1, 64, 64), 128), Generator(2, 128, (1, 64, 64)), JointDiscriminator(2, (1, 64, 64), 128)
        )
        recon = net(torch.randn(4, 1, 64, 64))  # recon.shape == (4, 1, 64, 64)

        # 3D: [B, 1, 32, 32, 32] images, 64-dim codes
        shape = (1, 32, 32, 32)
        net = BiGAN(Encoder(3, shape, 64), Generator(3, 64, shape), JointDiscriminator(3, shape, 64))
        z = net.encode(torch.randn(2, *shape))  # z.shape == (2, 64)
        logits, features = net.discriminate(net.generate(z), z)  # logits.shape == (2, 1)

        # ALAD, 2D: with D_xx and D_zz
        shape = (1, 64, 64)
        net = BiGAN(
            Encoder(2, shape, 64), Generator(2, 64, shape), JointDiscriminator(2, shape, 64),
            discriminator_xx=ImagePairDiscriminator(2, shape), discriminator_zz=LatentPairDiscriminator(64),
        )
        x = torch.randn(4, *shape)
        logits, features = net.discriminator_xx(x, net.reconstruct(x))  # [4, 1], [4, 2048]
        d_optimizer = torch.optim.Adam(net.discriminator_parameters(), 2e-4, betas=(0.5, 0.999))
    """

    # not compiled, so that any encoder can be scripted; a scripted model exposes ``encoder.latent_size`` instead
    __jit_unused_properties__ = ["latent_size"]

    def __init__(
        self,
        encoder: nn.Module,
        generator: nn.Module,
        discriminator: nn.Module,
        discriminator_xx: nn.Module | None = None,
        discriminator_zz: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.discriminator = discriminator
        # a None attribute is not a submodule: no state dict key, and scripting sees a plain None constant
        self.discriminator_xx = discriminator_xx
        self.discriminator_zz = discriminator_zz

    @property
    def latent_size(self) -> int:
        """Size of the latent code, read from the encoder (unwrapped from ``DistributedDataParallel`` if needed)."""
        encoder = self.encoder
        while not hasattr(encoder, "latent_size") and isinstance(getattr(encoder, "module", None), nn.Module):
            encoder = encoder.module
        return int(encoder.latent_size)

    def discriminators(self) -> list[nn.Module]:
        """
        The discriminators that are set: ``discriminator``, then ``discriminator_xx`` and ``discriminator_zz`` when
        not ``None``. Not available on a scripted model.

        Example::

            params = itertools.chain(*[d.parameters() for d in net.discriminators()])
        """
        return [d for d in (self.discriminator, self.discriminator_xx, self.discriminator_zz) if d is not None]

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """
        Parameters of all :meth:`discriminators`, for the discriminator optimizer. Not available on a scripted model.
        """
        for discriminator in self.discriminators():
            yield from discriminator.parameters()

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """
        Encode images.

        Args:
            x: images, ``[B, C, *spatial]``.

        Returns:
            codes ``E(x)``, ``[B, L]``.
        """
        return self.encoder(x)

    @torch.jit.export
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """
        Generate images.

        Args:
            z: codes, ``[B, L]``.

        Returns:
            images ``G(z)``, ``[B, C, *spatial]``.
        """
        return self.generator(z)

    @torch.jit.export
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """
        Reconstruct images through the latent space.

        Args:
            x: images, ``[B, C, *spatial]``.

        Returns:
            reconstructions ``G(E(x))``, ``[B, C, *spatial]``.
        """
        return self.generate(self.encode(x))

    @torch.jit.export
    def discriminate(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Score image-code pairs.

        Args:
            x: images, ``[B, C, *spatial]``.
            z: codes, ``[B, L]``.

        Returns:
            ``(logits, features)`` of the discriminator: raw logits ``[B, 1]`` and penultimate features ``[B, F]``.
        """
        return self.discriminator(x, z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Reconstruct images, same as :meth:`reconstruct`.

        Args:
            x: images, ``[B, C, *spatial]``.

        Returns:
            reconstructions ``G(E(x))``, ``[B, C, *spatial]``.
        """
        return self.reconstruct(x)
