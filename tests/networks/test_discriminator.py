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
"""Tests of the BiGAN joint discriminator in 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from monai_bigan.networks import JointDiscriminator

SMALL = {"channels": (4, 8), "strides": (2, 2), "latent_features": 16, "joint_features": 32}

SHAPE_CASES = [
    (2, (1, 32, 32), SMALL),
    (3, (1, 16, 16, 16), SMALL),
    (2, (3, 16, 24), {"channels": (4, 8, 8), "strides": (2, 2, 2), "norm": "batch", "dropout": None}),
    (3, (2, 8, 12, 16), {**SMALL, "strides": (2, 1), "kernel_size": 3, "act": "prelu"}),
]

INVALID_CASES = [
    (2, (1, 32, 32, 32), SMALL),  # 3 spatial sizes for 2D
    (3, (1, 16, 16), SMALL),  # 2 spatial sizes for 3D
    (2, (1, 30, 32), SMALL),  # 30 not divisible by 4
    (3, (1, 16, 16, 18), SMALL),  # 18 not divisible by 4
    (2, (1, 32, 32), {**SMALL, "strides": (2,)}),  # one stride per layer
    (2, (1, 32, 32), {**SMALL, "joint_features": 0}),
    (2, (1, 32, 32), {**SMALL, "latent_features": 0}),
]


def _weighted_layers(net: JointDiscriminator) -> list[torch.nn.Module]:
    convs = [block.conv for block in net.x_net if hasattr(block, "conv")]
    return convs + [net.z_net.linear, net.joint_net.linear, net.logit]


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs", SHAPE_CASES)
def test_shape(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict) -> None:
    net = JointDiscriminator(spatial_dims, in_shape, latent_size=8, **kwargs)
    logits, features = net(torch.randn(3, *in_shape), torch.randn(3, 8))
    assert logits.shape == (3, 1)
    assert features.shape == (3, kwargs.get("joint_features", 512))


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_depends_on_both_inputs(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = JointDiscriminator(spatial_dims, in_shape, 8, **SMALL).eval()
    x, z = torch.randn(2, *in_shape), torch.randn(2, 8)
    with torch.no_grad():
        logits, _ = net(x, z)
        # eval mode disables dropout: deterministic
        torch.testing.assert_close(net(x, z)[0], logits)
        assert not torch.allclose(net(x, torch.randn(2, 8))[0], logits)
        assert not torch.allclose(net(torch.randn(2, *in_shape), z)[0], logits)


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_torchscript(spatial_dims: int, in_shape: tuple[int, ...], tmp_path) -> None:
    net = JointDiscriminator(spatial_dims, in_shape, 8, **SMALL).eval()
    x, z = torch.randn(2, *in_shape), torch.randn(2, 8)
    path = tmp_path / "discriminator.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        for actual, expected in zip(loaded(x, z), net(x, z)):
            torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("spatial_dims,in_shape,kwargs", INVALID_CASES)
def test_invalid_shape(spatial_dims: int, in_shape: tuple[int, ...], kwargs: dict) -> None:
    with pytest.raises(ValueError):
        JointDiscriminator(spatial_dims, in_shape, latent_size=8, **kwargs)


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_normal_init(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = JointDiscriminator(spatial_dims, in_shape, 8, channels=(16, 32), strides=(2, 2))
    weight = net.x_net[1].conv.weight  # 16 * 32 * 4**d values
    assert abs(weight.std().item() - 0.02) < 0.002
    assert abs(weight.mean().item()) < 0.002
    assert abs(net.joint_net.linear.weight.std().item() - 0.02) < 0.002
    assert torch.all(net.logit.bias == 0)


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_spectral_norm(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = JointDiscriminator(spatial_dims, in_shape, 8, spectral_norm=True, **SMALL).train()
    layers = _weighted_layers(net)
    assert len(layers) == 5
    assert all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    # each training forward runs one more power iteration
    for _ in range(20):
        net(torch.randn(2, *in_shape), torch.randn(2, 8))
    for layer in layers:
        weight = layer.weight.detach()
        sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert abs(sigma.item() - 1.0) < 0.05


@pytest.mark.parametrize("spatial_dims,in_shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16))])
def test_spectral_norm_export(spatial_dims: int, in_shape: tuple[int, ...]) -> None:
    # parametrized modules cannot be scripted: freeze the normalized weights first, as documented
    net = JointDiscriminator(spatial_dims, in_shape, 8, spectral_norm=True, **SMALL).eval()
    x, z = torch.randn(2, *in_shape), torch.randn(2, 8)
    with torch.no_grad():
        expected = net(x, z)
        for layer in _weighted_layers(net):
            parametrize.remove_parametrizations(layer, "weight")
        scripted = torch.jit.script(net)
        for actual, reference in zip(scripted(x, z), expected):
            torch.testing.assert_close(actual, reference)
    assert not any(parametrize.is_parametrized(layer) for layer in _weighted_layers(net))
