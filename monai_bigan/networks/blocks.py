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
Building blocks shared by the BiGAN networks (:py:class:`~monai_bigan.networks.Encoder`,
:py:class:`~monai_bigan.networks.Generator` and the discriminators of :py:mod:`monai_bigan.networks.discriminator`):
the padding that makes a (transposed) strided convolution scale a size exactly, the checks of layer lists and image
shapes, the strided convolution stack of the encoder and of the discriminators' image branches, and spectral
normalization of a list of layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn as nn
from monai.networks.blocks import Convolution
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["apply_spectral_norm", "bottom_shape", "check_layers", "downsampling", "scale_padding"]


def scale_padding(kernel_size: int, stride: int) -> tuple[int, int]:
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


def check_layers(channels: Sequence[int], strides: Sequence[int]) -> None:
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


def bottom_shape(spatial_dims: int, shape: Sequence[int], strides: Sequence[int], name: str) -> list[int]:
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


def apply_spectral_norm(modules: Sequence[nn.Module]) -> None:
    """
    Wrap the ``weight`` of each module with :func:`torch.nn.utils.parametrizations.spectral_norm`, in place.

    Args:
        modules: convolution or linear layers.
    """
    for module in modules:
        spectral_norm(module)


def downsampling(
    spatial_dims: int,
    in_channels: int,
    channels: Sequence[int],
    strides: Sequence[int],
    kernel_size: int,
    act: tuple | str | None,
    norm: tuple | str | None,
    dropout: tuple | str | float | None,
) -> nn.Sequential:
    """
    Strided convolutions ``down0, down1, ...``: the image path of the encoder and of the discriminators.

    Layer ``i`` is a :class:`monai.networks.blocks.Convolution` with ``channels[i]`` output channels, stride
    ``strides[i]`` and the padding of :py:func:`scale_padding`, so that it divides each size by ``strides[i]``
    exactly; normalization is applied from the second layer on (none on the first one, as in DCGAN and EGBAD). The
    module names (``down{i}``) are part of the state dict keys of the networks that hold the stack.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: input channels of the first layer.
        channels: output channels of each layer.
        strides: stride of each layer.
        kernel_size: convolution kernel size.
        act: activation type and arguments.
        norm: feature normalization type and arguments, applied from the second layer on.
        dropout: dropout ratio or type and arguments, applied after each convolution.

    Returns:
        the layers, as an ``nn.Sequential``.
    """
    layers = nn.Sequential()
    for i, (c, s) in enumerate(zip(channels, strides)):
        padding, _ = scale_padding(kernel_size, s)
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
