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
The BiGAN anomaly score as a plain module (EGBAD, Zenati et al., arXiv:1802.06222):

    A(x) = alpha * L_G(x) + (1 - alpha) * L_D(x)

with L_G the reconstruction residual between x and G(E(x)) and L_D a discriminator term, either the sigmoid
cross-entropy of D for the pair (x, E(x)) being real, or the feature-matching distance between D's penultimate features
of (x, E(x)) and (G(E(x)), E(x)).

The scorer returns voxel maps only, so that MONAI's sliding-window and slice inferers can stitch it over whole volumes;
the per-image discriminator term is broadcast over the image as a constant map for the same reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_bigan.networks import BiGAN

__all__ = ["AnomalyScorer", "DiscriminatorTerm", "ResidualNorm"]


class ResidualNorm:
    """Residual choices for L_G."""

    L1 = "l1"
    L2 = "l2"


class DiscriminatorTerm:
    """Choices for L_D."""

    CROSS_ENTROPY = "cross_entropy"
    FEATURE_MATCHING = "feature_matching"


class AnomalyScorer(nn.Module):
    """
    Voxel-wise BiGAN anomaly maps for a batch of images.

    ``forward(x)`` returns a tensor with three channels and the spatial shape of ``x``:

        - channel 0: the residual map, ``|x - G(E(x))|`` (``"l1"``) or ``(x - G(E(x)))**2`` (``"l2"``), averaged over
          the input channels. Its mean over an image is L_G.
        - channel 1: the reconstruction G(E(x)) (first input channel).
        - channel 2: L_D of each image, constant over the image.

    Aggregate with :py:class:`monai_bigan.transforms.AnomalyScored`, which forms A = alpha * L_G + (1 - alpha) * L_D
    per image or per slice. Wrap the module in ``monai.networks.eval_mode`` (or use MONAI's evaluators) to score.

    Args:
        network: a trained :py:class:`monai_bigan.networks.BiGAN`, ideally its EMA copy.
        residual: ``"l1"`` (EGBAD's default) or ``"l2"``.
        discriminator_term: ``"cross_entropy"``: softplus(-D(x, E(x))), the sigmoid cross-entropy of the pair being
            real (the reference TensorFlow code feeds the reconstructed pair instead); ``"feature_matching"``: the
            mean absolute difference of D's penultimate features of (x, E(x)) and (G(E(x)), E(x)).

    Example::

        scorer = AnomalyScorer(bigan_2d, discriminator_term="feature_matching")
        maps = scorer(torch.rand(4, 1, 64, 64))          # (4, 3, 64, 64)
        maps = scorer_3d(torch.rand(2, 1, 32, 32, 32))   # (2, 3, 32, 32, 32)
    """

    def __init__(
        self, network: BiGAN, residual: str = ResidualNorm.L1, discriminator_term: str = DiscriminatorTerm.CROSS_ENTROPY
    ) -> None:
        super().__init__()
        if residual not in (ResidualNorm.L1, ResidualNorm.L2):
            raise ValueError(f"residual must be 'l1' or 'l2', got {residual!r}.")
        if discriminator_term not in (DiscriminatorTerm.CROSS_ENTROPY, DiscriminatorTerm.FEATURE_MATCHING):
            raise ValueError(
                f"discriminator_term must be 'cross_entropy' or 'feature_matching', got {discriminator_term!r}."
            )
        self.network = network
        self.residual = residual
        self.discriminator_term = discriminator_term

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.network.encoder(x)
        recon = self.network.generator(latents)
        diff = x - recon
        res = diff.abs() if self.residual == "l1" else diff * diff
        res = res.mean(dim=1, keepdim=True)

        real_logits, real_features = self.network.discriminator(x, latents)
        if self.discriminator_term == "cross_entropy":
            # -log(sigmoid(logit)): the cross-entropy of the pair being real, computed stably
            ld = F.softplus(-real_logits.reshape(real_logits.shape[0], -1)).mean(dim=1)
        else:
            _, recon_features = self.network.discriminator(recon, latents)
            ld = (real_features - recon_features).abs().reshape(real_features.shape[0], -1).mean(dim=1)
        ld_map = ld.reshape([-1] + [1] * (x.dim() - 1)).expand_as(res).to(res.dtype)
        # contiguous: the window inferers write into the output buffer and reject expanded views
        return torch.cat([res, recon[:, :1], ld_map], dim=1).contiguous()
