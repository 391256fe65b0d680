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
"""Tests of the building blocks shared by the BiGAN networks, and of the state dict keys built from them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from monai_bigan.networks import Encoder, Generator, JointDiscriminator
from monai_bigan.networks.blocks import apply_spectral_norm, bottom_shape, check_layers, downsampling, scale_padding


@pytest.mark.parametrize("kernel_size,stride", [(4, 2), (3, 1), (3, 2), (5, 2), (4, 4), (2, 2), (1, 1), (6, 3)])
@pytest.mark.parametrize("size", [12, 24])
def test_scale_padding_scales_exactly(kernel_size: int, stride: int, size: int) -> None:
    padding, output_padding = scale_padding(kernel_size, stride)
    assert 0 <= output_padding < stride
    x = torch.zeros(1, 1, size)
    down = nn.Conv1d(1, 1, kernel_size, stride=stride, padding=padding)
    up = nn.ConvTranspose1d(1, 1, kernel_size, stride=stride, padding=padding, output_padding=output_padding)
    assert down(x).shape[-1] == size // stride
    assert up(x).shape[-1] == size * stride


@pytest.mark.parametrize("kernel_size,stride", [(4, 1), (2, 1), (0, 2), (3, 0)])
def test_scale_padding_rejects(kernel_size: int, stride: int) -> None:
    with pytest.raises(ValueError):
        scale_padding(kernel_size, stride)


def test_check_layers() -> None:
    check_layers((4, 8), (2, 2))
    for channels, strides in [((), ()), ((4, 8), (2,)), ((4, 0), (2, 2)), ((4, 8), (2, 0))]:
        with pytest.raises(ValueError):
            check_layers(channels, strides)


def test_bottom_shape() -> None:
    assert bottom_shape(2, (1, 32, 16), (2, 2), "in_shape") == [8, 4]
    assert bottom_shape(3, (2, 8, 12, 16), (2, 1), "in_shape") == [4, 6, 8]
    with pytest.raises(ValueError, match="spatial_dims"):
        bottom_shape(1, (1, 32), (2,), "in_shape")
    with pytest.raises(ValueError, match="out_shape"):
        bottom_shape(2, (1, 32, 32, 32), (2,), "out_shape")
    with pytest.raises(ValueError, match="positive"):
        bottom_shape(2, (0, 32, 32), (2,), "in_shape")
    with pytest.raises(ValueError, match="divisible by the product of strides"):
        bottom_shape(2, (1, 30, 32), (2, 2), "in_shape")


def test_downsampling_layout() -> None:
    layers = downsampling(2, 1, (4, 8), (2, 2), 4, "relu", "batch", None)
    assert [name for name, _ in layers.named_children()] == ["down0", "down1"]
    # no normalization on the first layer
    assert not any(isinstance(m, nn.BatchNorm2d) for m in layers.down0.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in layers.down1.modules())
    assert layers(torch.zeros(2, 1, 16, 16)).shape == (2, 8, 4, 4)


def test_apply_spectral_norm() -> None:
    layers = [nn.Linear(3, 4), nn.Conv2d(1, 2, 3)]
    apply_spectral_norm(layers)
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)


def test_state_dict_keys_are_stable() -> None:
    """Checkpoints written before the blocks moved out of the encoder module must still load."""
    encoder = Encoder(2, (1, 16, 16), 8, channels=(4, 8), strides=(2, 2))
    generator = Generator(2, 8, (1, 16, 16), channels=(8, 4), strides=(2, 2))
    discriminator = JointDiscriminator(
        2, (1, 16, 16), 8, channels=(4, 8), strides=(2, 2), latent_features=16, joint_features=16, spectral_norm=True
    )
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert list(encoder.state_dict()) == (
        ["down.down0.conv.weight", "down.down0.conv.bias", "down.down1.conv.weight", "down.down1.conv.bias"]
        + [f"down.down1.adn.N.{k}" for k in bn]
        + ["fc.weight", "fc.bias"]
    )
    assert list(generator.state_dict()) == (
        ["fc.weight", "fc.bias"]
        + [f"start_adn.N.{k}" for k in bn]
        + ["up.up0.conv.weight", "up.up0.conv.bias"]
        + [f"up.up0.adn.N.{k}" for k in bn]
        + ["up.up1.conv.weight", "up.up1.conv.bias"]
    )
    sn = ["parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v"]
    expected = []
    for layer in ["x_net.down0.conv", "x_net.down1.conv", "z_net.linear", "joint_net.linear", "logit"]:
        expected += [f"{layer}.bias"] + [f"{layer}.{k}" for k in sn]
    assert list(discriminator.state_dict()) == expected
