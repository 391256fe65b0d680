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
Adversarial loss of a BiGAN, for the joint discriminator and for the generator-encoder pair.

See BiGAN (Donahue et al., "Adversarial Feature Learning", arXiv:1605.09782) and EGBAD (Zenati et al., "Efficient
GAN-Based Anomaly Detection", arXiv:1802.06222).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BiGANLoss"]


class BiGANLoss(nn.Module):
    """
    Binary cross-entropy adversarial loss of a BiGAN, on raw discriminator logits.

    The joint discriminator ``D`` sees real pairs ``(x, E(x))`` and fake pairs ``(G(z), z)``. With ``s`` the label
    smoothing and ``BCE`` the mean binary cross-entropy with logits:

    - discriminator (``for_discriminator=True``): ``BCE(real_logits, 1 - s) + BCE(fake_logits, 0)``; real pairs are
      labeled 1, smoothed to ``1 - s`` (one-sided label smoothing, Salimans et al., arXiv:1606.03498), fake pairs 0.
    - generator and encoder (``for_discriminator=False``): ``BCE(real_logits, 0) + BCE(fake_logits, 1)``; the labels
      are flipped, which gives the non-saturating loss: ``G`` learns to make fake pairs look real and ``E`` to make
      real pairs look fake. These targets are never smoothed.

    Args:
        label_smoothing: one-sided label smoothing ``s`` of the discriminator's real target, in ``[0, 1)``.

    Raises:
        ValueError: when ``label_smoothing`` is not in ``[0, 1)``.

    Example::

        loss = BiGANLoss(label_smoothing=0.1)
        real_logits, _ = discriminator(x, encoder(x))  # [B, 1]
        fake_logits, _ = discriminator(generator(z), z)  # [B, 1]
        d_loss = loss(real_logits, fake_logits, for_discriminator=True)  # scalar
        ge_loss = loss(real_logits, fake_logits, for_discriminator=False)  # scalar

        # with fixed logits
        loss(torch.zeros(4, 1), torch.zeros(4, 1), for_discriminator=False)  # 2 * log(2)
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = float(label_smoothing)

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, for_discriminator: bool) -> torch.Tensor:
        """
        Compute the loss of the discriminator or of the generator-encoder pair.

        Args:
            real_logits: discriminator logits of real pairs ``(x, E(x))``, any shape, usually ``[B, 1]``.
            fake_logits: discriminator logits of fake pairs ``(G(z), z)``, any shape, usually ``[B, 1]``.
            for_discriminator: whether to compute the discriminator loss (``True``) or the generator-encoder loss
                with flipped labels (``False``).

        Returns:
            the scalar loss, the sum of the mean cross-entropies over real and fake pairs.
        """
        if for_discriminator:
            real_target = 1.0 - self.label_smoothing
            fake_target = 0.0
        else:
            real_target = 0.0
            fake_target = 1.0
        real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
        fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, fake_target))
        return real_loss + fake_loss
