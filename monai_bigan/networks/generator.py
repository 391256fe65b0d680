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
Convolutional generator ``G: z -> x`` of a BiGAN, for 2D and 3D images.

The generator maps a latent code to an image, DCGAN style: a linear projection to a small feature map, then
transposed convolutions up to the image size. See BiGAN (Donahue et al., "Adversarial Feature Learning",
arXiv:1605.09782) and EGBAD (Zenati et al., "Efficient GAN-Based Anomaly Detection", arXiv:1802.06222).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks import normal_init
from monai.networks.blocks import ADN, Convolution
from monai.networks.layers.utils import get_act_layer

from monai_bigan.networks.blocks import bottom_shape, check_layers, scale_padding

__all__ = ["Generator"]


class Generator(nn.Module):
    """
    BiGAN/EGBAD generator ``G(z) = x``: a linear projection, a reshape, then transposed convolutions.

    The code is projected to ``channels[0] * prod(start_shape)`` features with
    ``start_shape = out_shape[1:] // prod(strides)``, reshaped to ``[B, channels[0], *start_shape]``, then normalized
    and activated. Layer ``i`` is a transposed :class:`monai.networks.blocks.Convolution` with stride ``strides[i]``,
    mapping ``channels[i]`` to ``channels[i + 1]`` channels; the last one maps ``channels[-1]`` to the image channels,
    with no normalization and the activation ``out_act``. The output has exactly ``out_shape``. Weights are
    initialized from ``N(0, 0.02)`` (:func:`monai.networks.normal_init`). See BiGAN (arXiv:1605.09782) and EGBAD
    (arXiv:1802.06222).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        latent_size: size of the latent code.
        out_shape: output image shape without the batch dimension, ``(C, *spatial)``; each spatial size must be
            divisible by the product of ``strides``.
        channels: input channels of each transposed convolution layer; ``channels[0]`` is the size of the
            projected feature map.
        strides: stride of each transposed convolution layer.
        kernel_size: convolution kernel size. Defaults to 4, as in DCGAN: a kernel divisible by the stride limits
            checkerboard artifacts. An even kernel cannot be used with stride 1; use an odd one there.
        act: activation type and arguments of the hidden layers. Defaults to ReLU.
        norm: feature normalization type and arguments of the hidden layers. Defaults to batch norm.
        out_act: activation type and arguments of the output. Defaults to tanh, as the pipeline scales images to
            ``[-1, 1]``; ``None`` gives an unbounded output.

    Raises:
        ValueError: when ``out_shape`` does not fit ``spatial_dims`` and ``strides``, when ``channels`` and
            ``strides`` differ in length, when ``latent_size`` is not positive, or when ``kernel_size`` cannot
            scale sizes exactly.

    Example::

        # 2D: [B, 128] -> [B, 1, 64, 64]
        net = Generator(spatial_dims=2, latent_size=128, out_shape=(1, 64, 64))
        x = net(torch.randn(4, 128))  # x.shape == (4, 1, 64, 64)

        # 3D: [B, 64] -> [B, 1, 32, 32, 32]
        net = Generator(spatial_dims=3, latent_size=64, out_shape=(1, 32, 32, 32), channels=(16, 8), strides=(2, 2))
        x = net(torch.randn(2, 64))  # x.shape == (2, 1, 32, 32, 32)
    """

    def __init__(
        self,
        spatial_dims: int,
        latent_size: int,
        out_shape: Sequence[int],
        channels: Sequence[int] = (128, 64, 32, 16),
        strides: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 4,
        act: tuple | str | None = "relu",
        norm: tuple | str | None = "batch",
        out_act: tuple | str | None = "tanh",
    ) -> None:
        super().__init__()
        check_layers(channels, strides)
        start = bottom_shape(spatial_dims, out_shape, strides, "out_shape")
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}.")

        self.spatial_dims = spatial_dims
        self.latent_size = latent_size
        self.out_shape = tuple(out_shape)
        # a list of ints keeps the reshape in forward TorchScript-friendly
        self.start_shape = [int(channels[0])] + start

        self.fc = nn.Linear(latent_size, channels[0] * math.prod(start))
        self.start_adn = ADN(ordering="NA", in_channels=channels[0], act=act, norm=norm, norm_dim=spatial_dims)

        self.up = nn.Sequential()
        out_channels = list(channels[1:]) + [out_shape[0]]
        for i, (c_in, c_out, s) in enumerate(zip(channels, out_channels, strides)):
            padding, output_padding = scale_padding(kernel_size, s)
            is_last = i == len(strides) - 1
            self.up.add_module(
                f"up{i}",
                Convolution(
                    spatial_dims=spatial_dims,
                    in_channels=c_in,
                    out_channels=c_out,
                    strides=s,
                    kernel_size=kernel_size,
                    act=act,
                    norm=norm,
                    padding=padding,
                    output_padding=output_padding,
                    is_transposed=True,
                    conv_only=is_last,
                ),
            )
        if out_act is not None:
            self.up.add_module("out_act", get_act_layer(out_act))

        self.apply(normal_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """
        Generate images.

        Args:
            z: latent codes, ``[B, latent_size]``.

        Returns:
            images, ``[B, *out_shape]``.
        """
        x = self.fc(z).view([z.shape[0]] + self.start_shape)
        return self.up(self.start_adn(x))
