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
    SIGNED = "signed"


class DiscriminatorTerm:
    """Choices for L_D."""

    CROSS_ENTROPY = "cross_entropy"
    FEATURE_MATCHING = "feature_matching"
    FEATURE_MATCHING_XX = "feature_matching_xx"


class AnomalyScorer(nn.Module):
    """
    Voxel-wise BiGAN anomaly maps for a batch of images.

    ``forward(x)`` returns a tensor with three channels and the spatial shape of ``x``:

        - channel 0: the residual map, ``|x - G(E(x))|`` (``"l1"``), ``(x - G(E(x)))**2`` (``"l2"``) or the signed
          ``x - G(E(x))`` (``"signed"``, to be normalized by healthy statistics, see
          :py:class:`monai_bigan.inferers.ResidualStatistics`), averaged over the input channels. Its mean over an
          image is L_G.
        - channel 1: the reconstruction G(E(x)) (first input channel).
        - channel 2: L_D of each image, constant over the image.

    Aggregate with :py:class:`monai_bigan.transforms.AnomalyScored`, which forms A = alpha * L_G + (1 - alpha) * L_D
    per image or per slice. Wrap the module in ``monai.networks.eval_mode`` (or use MONAI's evaluators) to score.

    Args:
        network: a trained :py:class:`monai_bigan.networks.BiGAN`, ideally its EMA copy.
        residual: ``"l1"`` (EGBAD's default), ``"l2"`` or ``"signed"``.
        discriminator_term: ``"cross_entropy"``: softplus(-D(x, E(x))), the sigmoid cross-entropy of the pair being
            real (the reference TensorFlow code feeds the reconstructed pair instead); ``"feature_matching"``: the
            mean absolute difference of D's penultimate features of (x, E(x)) and (G(E(x)), E(x));
            ``"feature_matching_xx"``: ALAD's score, the mean absolute difference of the features of the image-pair
            discriminator D_xx for (x, x) and (x, G(E(x))) (needs ``network.discriminator_xx``).
        refine_steps: number of gradient steps that refine the code E(x) at test time to lower ``|x - G(z)|`` (as
            AnoGAN searches the latent space, but started from the encoder's code, so a few steps suffice); 0
            disables it. The residual, the reconstruction and L_D then use the refined code. Bounded by
            ``max_refine_steps``, as every step costs a generator forward and backward pass.
        refine_lr: Adam learning rate of the refinement steps.

    Example::

        scorer = AnomalyScorer(bigan_2d, discriminator_term="feature_matching")
        maps = scorer(torch.rand(4, 1, 64, 64))          # (4, 3, 64, 64)
        maps = scorer_3d(torch.rand(2, 1, 32, 32, 32))   # (2, 3, 32, 32, 32)
    """

    max_refine_steps = 100

    def __init__(
        self,
        network: BiGAN,
        residual: str = ResidualNorm.L1,
        discriminator_term: str = DiscriminatorTerm.CROSS_ENTROPY,
        refine_steps: int = 0,
        refine_lr: float = 0.01,
    ) -> None:
        super().__init__()
        if residual not in (ResidualNorm.L1, ResidualNorm.L2, ResidualNorm.SIGNED):
            raise ValueError(f"residual must be 'l1', 'l2' or 'signed', got {residual!r}.")
        terms = (
            DiscriminatorTerm.CROSS_ENTROPY,
            DiscriminatorTerm.FEATURE_MATCHING,
            DiscriminatorTerm.FEATURE_MATCHING_XX,
        )
        if discriminator_term not in terms:
            raise ValueError(f"discriminator_term must be one of {terms}, got {discriminator_term!r}.")
        if discriminator_term == DiscriminatorTerm.FEATURE_MATCHING_XX and (
            getattr(network, "discriminator_xx", None) is None
        ):
            raise ValueError(
                "discriminator_term 'feature_matching_xx' needs a network with an image-pair discriminator D_xx; "
                "train with the ALAD D_xx option (--alad_dxx true)."
            )
        if not 0 <= refine_steps <= self.max_refine_steps:
            raise ValueError(f"refine_steps must be in [0, {self.max_refine_steps}], got {refine_steps}.")
        if refine_lr <= 0:
            raise ValueError(f"refine_lr must be positive, got {refine_lr}.")
        self.network = network
        self.residual = residual
        self.discriminator_term = discriminator_term
        self.refine_steps = int(refine_steps)
        self.refine_lr = float(refine_lr)

    def refine(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """
        A few Adam steps on the codes that lower the mean absolute residual ``|x - G(z)|`` of each image.

        Gradients are taken with respect to the codes only (``torch.autograd.grad``), so the networks' parameters
        never accumulate gradients; works inside ``torch.no_grad()`` evaluators.

        Args:
            x: images ``[B, C, *spatial]``.
            latents: starting codes ``[B, L]``, usually ``E(x)``.

        Returns:
            the refined codes ``[B, L]``, detached.
        """
        with torch.enable_grad():
            z = latents.detach().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=self.refine_lr)
            target = x.detach()
            for _ in range(self.refine_steps):
                # summed per-image means: each image's code follows its own residual, whatever the batch size
                loss = (self.network.generator(z) - target).abs().flatten(1).mean(dim=1).sum()
                (z.grad,) = torch.autograd.grad(loss, z)
                optimizer.step()
        return z.detach()

    def feature_matching_xx(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """ALAD's feature score: mean ``|f_xx(x, x) - f_xx(x, G(E(x)))|`` per image, ``[B]``."""
        _, same_features = self.network.discriminator_xx(x, x)
        _, cycle_features = self.network.discriminator_xx(x, recon)
        return (same_features - cycle_features).abs().reshape(same_features.shape[0], -1).mean(dim=1)

    def _reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes (refined if enabled), reconstruction and residual map of a batch."""
        latents = self.network.encoder(x)
        # optimizer steps and the optional D_xx cannot be scripted: exported scorers run without them
        if self.refine_steps > 0 and not torch.jit.is_scripting():
            latents = self.refine(x, latents)
        recon = self.network.generator(latents)
        diff = x - recon
        if self.residual == "l1":
            res = diff.abs()
        elif self.residual == "l2":
            res = diff * diff
        else:
            res = diff
        return latents, recon, res.mean(dim=1, keepdim=True)

    def reconstruction_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Channels 0 and 1 of :py:meth:`forward` (residual, reconstruction), ``[B, 2, *spatial]``, without D."""
        _, recon, res = self._reconstruct(x)
        return torch.cat([res, recon[:, :1].to(res.dtype)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents, recon, res = self._reconstruct(x)
        real_logits, real_features = self.network.discriminator(x, latents)
        if self.discriminator_term == "cross_entropy":
            # -log(sigmoid(logit)): the cross-entropy of the pair being real, computed stably
            ld = F.softplus(-real_logits.reshape(real_logits.shape[0], -1)).mean(dim=1)
        elif self.discriminator_term == "feature_matching_xx" and not torch.jit.is_scripting():
            ld = self.feature_matching_xx(x, recon)
        else:
            _, recon_features = self.network.discriminator(recon, latents)
            ld = (real_features - recon_features).abs().reshape(real_features.shape[0], -1).mean(dim=1)
        ld_map = ld.reshape([-1] + [1] * (x.dim() - 1)).expand_as(res).to(res.dtype)
        # contiguous: the window inferers write into the output buffer and reject expanded views
        return torch.cat([res, recon[:, :1], ld_map], dim=1).contiguous()
