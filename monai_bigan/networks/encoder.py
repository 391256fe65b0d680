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

This module also holds the private shape and padding helpers shared by the generator and the discriminator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks import normal_init
from monai.networks.blocks import Convolution
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

__all__ = ["Encoder"]


def _scale_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """
    Padding and transposed output padding so that a layer scales a size divisible by ``stride`` exactly by ``stride``.

    A strided convolution then maps ``n`` to ``n // stride`` and the transposed convolution with the same settings maps
    ``n`` to ``n * stride``, which keeps encoder and generator shapes mirror images of each other.

    Args:
        kernel_size: convolution kernel size.
        stride: convolution stride.

    Returns:
        ``(padding, output_padding)``.

    Raises:
        ValueError: when ``kernel_size`` or ``stride`` is not positive, or when no symmetric padding gives an exact
            scaling (an even kernel with stride 1).
    """
    if kernel_size < 1 or stride < 1:
        raise ValueError(f"kernel_size and strides must be positive, got kernel_size={kernel_size}, stride={stride}.")
    padding = max(0, math.ceil((kernel_size - stride) / 2))
    # only an even kernel with stride 1 has no such padding
    if 2 * padding >= kernel_size:
        raise ValueError(
            f"kernel_size={kernel_size} with stride={stride} cannot preserve the size exactly "
            "with symmetric padding; use an odd kernel_size for stride 1."
        )
    return padding, stride + 2 * padding - kernel_size


def _check_layers(channels: Sequence[int], strides: Sequence[int]) -> None:
    """
    Check that ``channels`` and ``strides`` describe the same, non-empty list of layers.

    Args:
        channels: output channels of each layer.
        strides: stride of each layer.

    Raises:
        ValueError: when the sequences are empty, differ in length or hold non-positive values.
    """
    if len(channels) == 0 or len(channels) != len(strides):
        raise ValueError(
            f"channels and strides must be non-empty and of equal length, got {len(channels)} and {len(strides)}."
        )
    if any(c < 1 for c in channels) or any(s < 1 for s in strides):
        raise ValueError(f"channels and strides must be positive, got channels={channels}, strides={strides}.")


def _bottom_shape(spatial_dims: int, shape: Sequence[int], strides: Sequence[int], name: str) -> list[int]:
    """
    Validate an image shape ``(C, *spatial)`` and return its spatial size after all strided layers.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        shape: image shape without the batch dimension, ``(C, *spatial)``.
        strides: stride of each layer.
        name: argument name used in error messages.

    Returns:
        the spatial size divided by the product of ``strides``.

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3, ``shape`` does not have ``spatial_dims + 1`` entries, holds
            non-positive values, or a spatial size is not divisible by the product of ``strides``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if len(shape) != spatial_dims + 1:
        raise ValueError(
            f"{name} must be (channels, *spatial) with {spatial_dims} spatial sizes, got {tuple(shape)} "
            f"for spatial_dims={spatial_dims}."
        )
    if any(s < 1 for s in shape):
        raise ValueError(f"{name} must hold positive sizes, got {tuple(shape)}.")
    factor = math.prod(strides)
    spatial = list(shape[1:])
    if any(s % factor != 0 for s in spatial):
        raise ValueError(
            f"each spatial size of {name}={tuple(shape)} must be divisible by the product of strides "
            f"{tuple(strides)} = {factor}."
        )
    return [s // factor for s in spatial]


def _apply_spectral_norm(modules: Sequence[nn.Module]) -> None:
    """
    Wrap the ``weight`` of each module with :func:`torch.nn.utils.parametrizations.spectral_norm`, in place.

    Args:
        modules: convolution or linear layers.
    """
    for module in modules:
        _spectral_norm(module)


def _downsampling(
    spatial_dims: int,
    in_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    kernel_size: int,
    act: tuple | str | None,
    norm: tuple | str | None,
    dropout: tuple | str | float | None,
) -> nn.Sequential:
    """Strided convolutions ``down0, down1, ...``; no normalization on the first one, as in DCGAN and EGBAD."""
    layers = nn.Sequential()
    for i, (c, s) in enumerate(zip(channels, strides)):
        padding, _ = _scale_padding(kernel_size, s)
        layers.add_module(
            f"down{i}",
            Convolution(
                spatial_dims=spatial_dims,
                in_channels=in_channels,
                out_channels=c,
                strides=s,
                kernel_size=kernel_size,
                act=act,
                norm=norm if i > 0 else None,
                dropout=dropout,
                padding=padding,
            ),
        )
        in_channels = c
    return layers


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
        _check_layers(channels, strides)
        bottom = _bottom_shape(spatial_dims, in_shape, strides, "in_shape")
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}.")

        self.spatial_dims = spatial_dims
        self.in_shape = tuple(in_shape)
        self.latent_size = latent_size

        self.down = _downsampling(spatial_dims, in_shape[0], channels, strides, kernel_size, act, norm, dropout)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[-1] * math.prod(bottom), latent_size)

        # init first: once parametrized, ``weight`` is computed and cannot be set in place
        self.apply(normal_init)
        if spectral_norm:
            _apply_spectral_norm([block.conv for block in self.down] + [self.fc])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Encode images.

        Args:
            x: images, ``[B, C, *spatial]`` with ``(C, *spatial) == in_shape``.

        Returns:
            latent codes, ``[B, latent_size]``.
        """
        return self.fc(self.flatten(self.down(x)))
