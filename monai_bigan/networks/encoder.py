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
Convolutional encoder ``E: x -> z`` of a BiGAN, for 2D and 3D images.

The encoder maps an image to its latent code so that the joint discriminator can tell real pairs ``(x, E(x))``
from generated pairs ``(G(z), z)``. See BiGAN (Donahue et al., "Adversarial Feature Learning", arXiv:1605.09782)
and EGBAD (Zenati et al., "Efficient GAN-Based Anomaly Detection", arXiv:1802.06222).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks import normal_init

from monai_bigan.networks.blocks import apply_spectral_norm, bottom_shape, check_layers, downsampling

__all__ = ["Encoder"]


class Encoder(nn.Module):
    """
    BiGAN/EGBAD encoder ``E(x) = z``: strided convolutions, flatten, then a linear layer to the latent code.

    Each layer ``i`` is a :class:`monai.networks.blocks.Convolution` with ``channels[i]`` output channels and stride
    ``strides[i]``, followed by normalization, dropout and activation. As in DCGAN, the first layer has no
    normalization, and the code has no activation. Weights are initialized from ``N(0, 0.02)``
    (:func:`monai.networks.normal_init`). See BiGAN (arXiv:1605.09782) and EGBAD (arXiv:1802.06222).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_shape: input image shape without the batch dimension, ``(C, *spatial)``; each spatial size must be
            divisible by the product of ``strides``.
        latent_size: size of the latent code.
        channels: output channels of each convolution layer.
        strides: stride of each convolution layer.
        kernel_size: convolution kernel size. Defaults to 4, as in DCGAN: with stride 2 it halves sizes exactly
            and, in the mirrored generator, a kernel divisible by the stride limits checkerboard artifacts.
            An even kernel cannot be used with stride 1; use an odd one there.
        act: activation type and arguments. Defaults to leaky ReLU with slope 0.2.
        norm: feature normalization type and arguments, applied from the second layer on. Defaults to batch norm.
        dropout: dropout ratio or type and arguments, applied after each convolution. Defaults to no dropout.
        spectral_norm: whether to wrap every convolution and linear weight with spectral normalization.

    Raises:
        ValueError: when ``in_shape`` does not fit ``spatial_dims`` and ``strides``, when ``channels`` and
            ``strides`` differ in length, when ``latent_size`` is not positive, or when ``kernel_size`` cannot
            scale sizes exactly.

    Note:
        With ``spectral_norm=True`` the model cannot be scripted with ``torch.jit.script``, as PyTorch's
        parametrizations are not TorchScript-compatible. To export it, first freeze the normalized weights with
        ``torch.nn.utils.parametrize.remove_parametrizations(module, "weight")`` on each parametrized module.

    Example::

        # 2D: [B, 1, 64, 64] -> [B, 128]
        net = Encoder(spatial_dims=2, in_shape=(1, 64, 64), latent_size=128)
        z = net(torch.randn(4, 1, 64, 64))  # z.shape == (4, 128)

        # 3D: [B, 1, 32, 32, 32] -> [B, 64]
        net = Encoder(spatial_dims=3, in_shape=(1, 32, 32, 32), latent_size=64, channels=(8, 16), strides=(2, 2))
        z = net(torch.randn(2, 1, 32, 32, 32))  # z.shape == (2, 64)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_shape: Sequence[int],
        latent_size: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 4,
        act: tuple | str | None = ("leakyrelu", {"negative_slope": 0.2}),
        norm: tuple | str | None = "batch",
        dropout: tuple | str | float | None = None,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_layers(channels, strides)
        bottom = bottom_shape(spatial_dims, in_shape, strides, "in_shape")
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}.")

        self.spatial_dims = spatial_dims
        self.in_shape = tuple(in_shape)
        self.latent_size = latent_size

        self.down = downsampling(spatial_dims, in_shape[0], channels, strides, kernel_size, act, norm, dropout)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[-1] * math.prod(bottom), latent_size)

        # init first: once parametrized, ``weight`` is computed and cannot be set in place
        self.apply(normal_init)
        if spectral_norm:
            apply_spectral_norm([block.conv for block in self.down] + [self.fc])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Encode images.

        Args:
            x: images, ``[B, C, *spatial]`` with ``(C, *spatial) == in_shape``.

        Returns:
            latent codes, ``[B, latent_size]``.
        """
        return self.fc(self.flatten(self.down(x)))
