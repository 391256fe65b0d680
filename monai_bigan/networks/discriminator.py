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
Joint discriminator ``D(x, z)`` of a BiGAN and ALAD's cycle-consistency discriminators, for 2D and 3D images.

The joint discriminator scores image-code pairs: real pairs ``(x, E(x))`` against generated pairs ``(G(z), z)``. Its
penultimate features also give the feature-matching anomaly score of EGBAD. See BiGAN (Donahue et al., "Adversarial
Feature Learning", arXiv:1605.09782) and EGBAD (Zenati et al., "Efficient GAN-Based Anomaly Detection",
arXiv:1802.06222).

ALAD (Zenati et al., "Adversarially Learned Anomaly Detection", arXiv:1812.02288) adds ``D_xx(x, x')``
(:class:`ImagePairDiscriminator`), real ``(x, x)`` against fake ``(x, G(E(x)))``, and ``D_zz(z, z')``
(:class:`LatentPairDiscriminator`), real ``(z, z)`` against fake ``(z, E(G(z)))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks import normal_init
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer, get_dropout_layer

from monai_bigan.networks.blocks import apply_spectral_norm, bottom_shape, check_layers, downsampling

__all__ = ["ImagePairDiscriminator", "JointDiscriminator", "LatentPairDiscriminator"]


def _dense(
    in_features: int, out_features: int, act: tuple | str | None, dropout: tuple | str | float | None
) -> nn.Sequential:
    """Linear layer ``linear``, then activation ``act`` and dropout ``dropout`` when given."""
    layers = nn.Sequential()
    layers.add_module("linear", nn.Linear(in_features, out_features))
    if act is not None:
        layers.add_module("act", get_act_layer(act))
    if dropout is not None:
        layers.add_module("dropout", get_dropout_layer(dropout, dropout_dim=1))
    return layers


class JointDiscriminator(nn.Module):
    """
    BiGAN/EGBAD joint discriminator ``D(x, z)``, returning a raw logit and the penultimate features.

    - image branch: strided :class:`monai.networks.blocks.Convolution` layers (no normalization on the first one, as
      in DCGAN), then flatten;
    - code branch: ``Linear(latent_size, latent_features)``, activation, dropout;
    - joint branch: concatenation, ``Linear(joint_features)``, activation, dropout: these are the ``features``;
      then ``Linear(1)``: the ``logits``.

    The logits are raw (no sigmoid), to be used with a with-logits loss such as
    :class:`monai_bigan.losses.BiGANLoss`. Weights are initialized from ``N(0, 0.02)``
    (:func:`monai.networks.normal_init`). See BiGAN (arXiv:1605.09782) and EGBAD (arXiv:1802.06222).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_shape: input image shape without the batch dimension, ``(C, *spatial)``; each spatial size must be
            divisible by the product of ``strides``.
        latent_size: size of the latent code.
        channels: output channels of each convolution layer of the image branch.
        strides: stride of each convolution layer of the image branch.
        kernel_size: convolution kernel size. Defaults to 4, as in DCGAN: with stride 2 it halves sizes exactly.
            An even kernel cannot be used with stride 1; use an odd one there.
        latent_features: output size of the code branch.
        joint_features: size of the penultimate features.
        act: activation type and arguments. Defaults to leaky ReLU with slope 0.2.
        norm: feature normalization type and arguments of the image branch, applied from the second layer on.
            Defaults to none.
        dropout: dropout ratio or type and arguments, applied after every hidden layer. Defaults to 0.2.
        spectral_norm: whether to wrap every convolution and linear weight, the logit layer included, with
            spectral normalization.

    Raises:
        ValueError: when ``in_shape`` does not fit ``spatial_dims`` and ``strides``, when ``channels`` and
            ``strides`` differ in length, when ``latent_size``, ``latent_features`` or ``joint_features`` is not
            positive, or when ``kernel_size`` cannot scale sizes exactly.

    Note:
        With ``spectral_norm=True`` the model cannot be scripted with ``torch.jit.script``, as PyTorch's
        parametrizations are not TorchScript-compatible. To export it, first freeze the normalized weights with
        ``torch.nn.utils.parametrize.remove_parametrizations(module, "weight")`` on each parametrized module.

    Example::

        # 2D: x [B, 1, 64, 64], z [B, 128] -> logits [B, 1], features [B, 512]
        net = JointDiscriminator(spatial_dims=2, in_shape=(1, 64, 64), latent_size=128)
        logits, features = net(torch.randn(4, 1, 64, 64), torch.randn(4, 128))

        # 3D: x [B, 1, 32, 32, 32], z [B, 64] -> logits [B, 1], features [B, 128]
        net = JointDiscriminator(
            spatial_dims=3, in_shape=(1, 32, 32, 32), latent_size=64, channels=(8, 16), strides=(2, 2),
            latent_features=64, joint_features=128,
        )
        logits, features = net(torch.randn(2, 1, 32, 32, 32), torch.randn(2, 64))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_shape: Sequence[int],
        latent_size: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 4,
        latent_features: int = 256,
        joint_features: int = 512,
        act: tuple | str | None = ("leakyrelu", {"negative_slope": 0.2}),
        norm: tuple | str | None = None,
        dropout: tuple | str | float | None = 0.2,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_layers(channels, strides)
        bottom = bottom_shape(spatial_dims, in_shape, strides, "in_shape")
        for name, value in (
            ("latent_size", latent_size),
            ("latent_features", latent_features),
            ("joint_features", joint_features),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}.")

        self.spatial_dims = spatial_dims
        self.in_shape = tuple(in_shape)
        self.latent_size = latent_size

        self.x_net = downsampling(spatial_dims, in_shape[0], channels, strides, kernel_size, act, norm, dropout)
        self.x_net.add_module("flatten", nn.Flatten())

        self.z_net = self._dense(latent_size, latent_features, act, dropout)
        self.joint_net = self._dense(channels[-1] * math.prod(bottom) + latent_features, joint_features, act, dropout)
        self.logit = nn.Linear(joint_features, 1)

        # init first: once parametrized, ``weight`` is computed and cannot be set in place
        self.apply(normal_init)
        if spectral_norm:
            convs = [block.conv for block in self.x_net if isinstance(block, Convolution)]
            apply_spectral_norm(convs + [self.z_net.linear, self.joint_net.linear, self.logit])

    @staticmethod
    def _dense(
        in_features: int, out_features: int, act: tuple | str | None, dropout: tuple | str | float | None
    ) -> nn.Sequential:
        """Linear layer, then activation and dropout when given."""
        return _dense(in_features, out_features, act, dropout)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Score image-code pairs.

        Args:
            x: images, ``[B, C, *spatial]`` with ``(C, *spatial) == in_shape``.
            z: latent codes, ``[B, latent_size]``.

        Returns:
            ``(logits, features)``: raw logits ``[B, 1]`` (real pair when high) and penultimate features
            ``[B, joint_features]``.
        """
        features = self.joint_net(torch.cat([self.x_net(x), self.z_net(z)], dim=1))
        return self.logit(features), features


class ImagePairDiscriminator(nn.Module):
    """
    ALAD image-pair discriminator ``D_xx(x, x')``, returning a raw logit and the features of its penultimate layer.

    ALAD (Zenati et al., "Adversarially Learned Anomaly Detection", arXiv:1812.02288) adds it to the BiGAN to enforce
    cycle consistency in the image space adversarially: real pairs are ``(x, x)``, fake pairs ``(x, G(E(x)))``. Its
    features give ALAD's feature-matching anomaly score ``||f(x, x) - f(x, G(E(x)))||_1``.

    - the two images are concatenated along the **channel** dimension, giving ``2 * C`` input channels. The reference
      TensorFlow code concatenates NHWC tensors along the height (axis 1); with convolutions, stacking the pair as
      channels is the natural choice: every filter sees both images at the same location, and any spatial size works;
    - strided :class:`monai.networks.blocks.Convolution` layers (no normalization on the first one), then flatten;
    - ``feature_size=None`` (default, as ALAD): the flattened convolution output is the ``features``; otherwise
      ``Linear(feature_size)``, activation and dropout give them;
    - ``Linear(1)``: the ``logits``.

    The logits are raw (no sigmoid), to be used with a with-logits loss such as
    :class:`monai_bigan.losses.BiGANLoss`. Weights are initialized from ``N(0, 0.02)``
    (:func:`monai.networks.normal_init`). ALAD's CIFAR-10 ``D_xx`` is ``channels=(64, 128)``, ``strides=(2, 2)``,
    ``kernel_size=5``, dropout 0.2, no normalization.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_shape: shape of **one** image of the pair without the batch dimension, ``(C, *spatial)``; each spatial
            size must be divisible by the product of ``strides``.
        channels: output channels of each convolution layer.
        strides: stride of each convolution layer.
        kernel_size: convolution kernel size. Defaults to 4, as in DCGAN: with stride 2 it halves sizes exactly.
            An even kernel cannot be used with stride 1; use an odd one there.
        feature_size: size of a dense feature layer after the convolutions; ``None`` uses the flattened convolution
            output, of size ``channels[-1] * prod(spatial) / prod(strides) ** spatial_dims``, as ALAD does.
        act: activation type and arguments. Defaults to leaky ReLU with slope 0.2.
        norm: feature normalization type and arguments, applied from the second layer on. Defaults to none.
        dropout: dropout ratio or type and arguments, applied after every hidden layer. Defaults to 0.2.
        spectral_norm: whether to wrap every convolution and linear weight, the logit layer included (as in
            :class:`JointDiscriminator`), with spectral normalization.

    Raises:
        ValueError: when ``in_shape`` does not fit ``spatial_dims`` and ``strides``, when ``channels`` and
            ``strides`` differ in length, when ``feature_size`` is not positive, or when ``kernel_size`` cannot
            scale sizes exactly.

    Note:
        With ``spectral_norm=True`` the model cannot be scripted with ``torch.jit.script``; first freeze the
        normalized weights with ``torch.nn.utils.parametrize.remove_parametrizations(module, "weight")``.

    Example::

        # 2D: x, x' [B, 1, 64, 64] -> logits [B, 1], features [B, 128 * 4 * 4] (flattened convolution output)
        net = ImagePairDiscriminator(spatial_dims=2, in_shape=(1, 64, 64))
        x = torch.randn(4, 1, 64, 64)
        logits, features = net(x, x)  # logits.shape == (4, 1), features.shape == (4, 2048)

        # 3D: x, x' [B, 1, 32, 32, 32] -> logits [B, 1], features [B, 64] (dense feature layer)
        net = ImagePairDiscriminator(
            spatial_dims=3, in_shape=(1, 32, 32, 32), channels=(8, 16), strides=(2, 2), feature_size=64
        )
        logits, features = net(torch.randn(2, 1, 32, 32, 32), torch.randn(2, 1, 32, 32, 32))  # [2, 1], [2, 64]
    """

    def __init__(
        self,
        spatial_dims: int,
        in_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 4,
        feature_size: int | None = None,
        act: tuple | str | None = ("leakyrelu", {"negative_slope": 0.2}),
        norm: tuple | str | None = None,
        dropout: tuple | str | float | None = 0.2,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_layers(channels, strides)
        bottom = bottom_shape(spatial_dims, in_shape, strides, "in_shape")
        if feature_size is not None and feature_size < 1:
            raise ValueError(f"feature_size must be positive or None, got {feature_size}.")

        self.spatial_dims = spatial_dims
        self.in_shape = tuple(in_shape)

        self.x_net = downsampling(spatial_dims, 2 * in_shape[0], channels, strides, kernel_size, act, norm, dropout)
        self.x_net.add_module("flatten", nn.Flatten())
        flat_size = channels[-1] * math.prod(bottom)
        # without a dense feature layer, the flattened convolution output are the features
        self.feature_net: nn.Module = (
            nn.Identity() if feature_size is None else _dense(flat_size, feature_size, act, dropout)
        )
        self.feature_size = flat_size if feature_size is None else feature_size
        self.logit = nn.Linear(self.feature_size, 1)

        # init first: once parametrized, ``weight`` is computed and cannot be set in place
        self.apply(normal_init)
        if spectral_norm:
            layers = [block.conv for block in self.x_net if isinstance(block, Convolution)]
            if feature_size is not None:
                layers.append(self.feature_net.linear)
            apply_spectral_norm(layers + [self.logit])

    def forward(self, x: torch.Tensor, x_prime: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Score image pairs.

        Args:
            x: images, ``[B, C, *spatial]`` with ``(C, *spatial) == in_shape``.
            x_prime: the paired images, same shape: ``x`` itself for a real pair, a reconstruction for a fake one.

        Returns:
            ``(logits, features)``: raw logits ``[B, 1]`` (real pair when high) and features
            ``[B, feature_size]``.
        """
        features = self.feature_net(self.x_net(torch.cat([x, x_prime], dim=1)))
        return self.logit(features), features


class LatentPairDiscriminator(nn.Module):
    """
    ALAD latent-pair discriminator ``D_zz(z, z')``, returning a raw logit and the features of its penultimate layer.

    ALAD (arXiv:1812.02288) adds it to the BiGAN to enforce cycle consistency in the latent space adversarially: real
    pairs are ``(z, z)``, fake pairs ``(z, E(G(z)))``. It is a multilayer perceptron on the concatenated codes: each
    hidden layer is ``Linear``, activation and dropout; the last hidden layer gives the ``features``, then
    ``Linear(1)`` the ``logits``. The defaults are ALAD's ``D_zz``: hidden sizes 64 and 32, leaky ReLU with slope
    0.2, dropout 0.2. The input has no spatial dimensions, so the same network serves 2D and 3D BiGANs. Weights are
    initialized from ``N(0, 0.02)`` (:func:`monai.networks.normal_init`).

    Args:
        latent_size: size of each latent code of the pair.
        hidden_features: output size of each hidden layer; the last one is the size of the ``features``.
        act: activation type and arguments. Defaults to leaky ReLU with slope 0.2.
        dropout: dropout ratio or type and arguments, applied after every hidden layer. Defaults to 0.2.
        spectral_norm: whether to wrap every linear weight, the logit layer included (as in
            :class:`JointDiscriminator`), with spectral normalization.

    Raises:
        ValueError: when ``latent_size`` is not positive, or ``hidden_features`` is empty or holds a non-positive
            size.

    Example::

        # with a 2D or a 3D BiGAN alike: z, z' [B, 64] -> logits [B, 1], features [B, 32]
        net = LatentPairDiscriminator(latent_size=64)
        z = torch.randn(4, 64)
        logits, features = net(z, z)  # logits.shape == (4, 1), features.shape == (4, 32)

        # a larger one: features [B, 128]
        net = LatentPairDiscriminator(latent_size=128, hidden_features=(256, 128), spectral_norm=True)
        logits, features = net(torch.randn(2, 128), torch.randn(2, 128))  # [2, 1], [2, 128]
    """

    def __init__(
        self,
        latent_size: int,
        hidden_features: Sequence[int] = (64, 32),
        act: tuple | str | None = ("leakyrelu", {"negative_slope": 0.2}),
        dropout: tuple | str | float | None = 0.2,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}.")
        if len(hidden_features) == 0 or any(f < 1 for f in hidden_features):
            raise ValueError(f"hidden_features must be non-empty and positive, got {tuple(hidden_features)}.")

        self.latent_size = latent_size
        self.feature_size = int(hidden_features[-1])

        self.hidden = nn.Sequential()
        in_features = 2 * latent_size
        for i, out_features in enumerate(hidden_features):
            self.hidden.add_module(f"dense{i}", _dense(in_features, out_features, act, dropout))
            in_features = out_features
        self.logit = nn.Linear(in_features, 1)

        # init first: once parametrized, ``weight`` is computed and cannot be set in place
        self.apply(normal_init)
        if spectral_norm:
            apply_spectral_norm([block.linear for block in self.hidden] + [self.logit])

    def forward(self, z: torch.Tensor, z_prime: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Score latent-code pairs.

        Args:
            z: codes, ``[B, latent_size]``.
            z_prime: the paired codes, same shape: ``z`` itself for a real pair, ``E(G(z))`` for a fake one.

        Returns:
            ``(logits, features)``: raw logits ``[B, 1]`` (real pair when high) and features
            ``[B, hidden_features[-1]]``.
        """
        features = self.hidden(torch.cat([z, z_prime], dim=1))
        return self.logit(features), features
